"""End to end through the `ontogeny` command: run a tiny recipe, read it back, refuse bad input cleanly."""

import os
import subprocess
import sys

import ontogeny as og


def ontogeny(*args: str, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ontogeny.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=None if env is None else {**os.environ, **env})


def test_run_a_tiny_recipe_and_read_it_back(tmp_path):
    out = tmp_path / "grok"
    done = ontogeny("run", "grokking", "--set", "task.p=13", "--set", "task.train_fraction=0.6", "--set", "seeds=2",
                    "--set", "model.width=48", "--set", "steps=300", "--set", "record.every=50", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "memorization" in done.stdout and "generalization" in done.stdout
    # stdout is a pipe here, as in a log file or a CI job: plain progress lines, with the total, not a silent bar
    lines = [line for line in done.stdout.splitlines() if " steps (" in line]
    assert "] 0/300 steps (0%) of 2 members" in lines[0]
    assert "] 300/300 steps (100%) of 2 members" in lines[-1] and "ensemble 0: ok 2 diverged 0" in lines[-1]
    run = og.open(out)
    assert run.spec.task.p == 13 and run.spec.seeds == (0, 1)
    assert list(run.members().status) == ["ok", "ok"]
    assert set(run.examples(step=300).split) == {"train", "test"}
    assert len(run.examples(member=1, step=300)) == 169
    assert run.meta["torch"] and run.meta["finished"]
    again = ontogeny("run", "grokking", "--set", "task.p=13", "--out", str(out))
    assert again.returncode == 2 and "--resume" in again.stderr


def test_recipes_lists_every_recipe():
    done = ontogeny("recipes")
    assert done.returncode == 0
    for name in og.recipe_names():
        assert name in done.stdout


def test_help_and_recipes_do_not_load_torch():
    """They answer at once: torch (1.5 s to import here) and the analysis stack load only for commands that use them."""
    code = ("import sys; from ontogeny.cli import main; sys.argv = ['ontogeny', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "assert not {'torch', 'pandas', 'duckdb'} & set(sys.modules), sorted(sys.modules)")
    for args in (["--help"], ["recipes"]):
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "ontogeny" in done.stdout or "grokking" in done.stdout


def test_bad_input_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "never"
    done = ontogeny("run", "grokking", "--set", "task.train_fraction=1.5", "--out", str(out))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "grokking.toml: task.train_fraction: must be strictly between 0 and 1 (got 1.5)" in done.stderr
    assert not out.exists()


def test_usage_errors_are_one_line_too(tmp_path):
    for args, words in ((["run", "grokking", "--commit-seconds", "abc"], "Invalid value for '--commit-seconds'"),
                        (["nosuch"], "No such command 'nosuch'"),
                        (["run", "grokking", "--resume", str(tmp_path), "--out", str(tmp_path)], "drop --out")):
        done = ontogeny(*args)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith("error: ") and words in done.stderr


def test_ctrl_c_outside_a_commands_own_handling_says_so(monkeypatch, capsys):
    """Click turns a Ctrl-C during a command's start (its imports, say) into Abort; it used to end silently."""
    import pytest

    from ontogeny import cli, spec

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(spec, "recipe_names", interrupted)
    monkeypatch.setattr(sys, "argv", ["ontogeny", "recipes"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 130 and capsys.readouterr().err.strip() == "interrupted"


def test_plan_counts_the_training_flops_and_says_what_they_take_on_a_gpu():
    done = ontogeny("run", "sparse-parity", "--plan", "--set", "seeds=4", "--set", "model.width=16", "--set",
                    "task.n=12", "--set", "task.batch_size=16", "--set", "steps=100")
    assert done.returncode == 0, done.stderr
    # per member-step, by hand: x [16, 12] @ W1 [12, 16] forward and W1's gradient (2 x 2 x 16 x 12 x 16) and the
    # one-output head's weight gradient (2 x 16 x 16): 12,800; x 4 members x 100 steps
    assert "5.1 MFLOP of training" in done.stdout
    assert "on one H100 at 25% of its dense float32 peak: ~0.0 s" in done.stdout
    assert "1 ensembles in 1 tasks" in done.stdout


def test_plan_for_a_gpu_this_machine_lacks_keeps_the_members_together_and_counts_flops_untimed(monkeypatch):
    import torch

    from ontogeny.train.run import plan_run

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without a GPU, whatever runs this
    # a member of ~6 GiB by the estimate (width 3M): this machine's RAM takes a few of the 8 at a time
    big = ["seeds=8", "model.width=3000000"]
    assert len(plan_run("sparse-parity", overrides=big, time_it=False)[0].groups) > 1
    assert len(plan_run("sparse-parity", overrides=big, time_it=False, device="cuda")[0].groups) == 1
    # nothing timed, the FLOPs counted on one member's shapes: the figure the CPU's timed step counts (5.1 MFLOP)
    tiny = ["--set", "seeds=4", "--set", "model.width=16", "--set", "task.n=12", "--set", "task.batch_size=16",
            "--set", "steps=100"]
    done = ontogeny("run", "sparse-parity", "--plan", "--device", "cuda", *tiny, env={"CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stderr
    assert "1 ensembles in 1 tasks; not timed" in done.stdout and "5.1 MFLOP of training" in done.stdout
