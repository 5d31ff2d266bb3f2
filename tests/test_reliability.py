"""What a hostile user broke, reproduced: unsafe names and --overwrite, edited specs on resume,
training a finished run on (--extend-to), and two writers on one run."""

import json
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

import ontogeny as og
from ontogeny.exceptions import LockedError, ResumeError, SpecError, StoreError
from ontogeny.store.lock import is_locked

SMALL = {"task.p": 13, "task.train_fraction": 0.5, "model.width": 24, "seeds": 2, "steps": 60, "record.every": 20}


def ontogeny(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ontogeny.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def all_rows(run) -> dict[str, pd.DataFrame]:
    return {"scalars": run.scalars(), "examples": run.examples(), "checkpoints": run.checkpoints(),
            "members": run.members()}


def assert_same_rows(got, want) -> None:
    for name, frame in all_rows(want).items():
        pd.testing.assert_frame_equal(all_rows(got)[name], frame, obj=name)


# ---- names and --overwrite --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["/abs/dir", "../../victim", "", ".", "..", "a/b", "bad\x00name", ".hidden", "a b"])
def test_a_name_must_be_one_safe_path_component(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    other = og.run("grokking", overrides={**SMALL, "steps": 4, "name": "other"})  # runs/other must survive
    with pytest.raises(SpecError, match="name: must be one safe path component") as error:
        og.run("grokking", overrides={**SMALL, "name": name}, overwrite=True)
    assert "\n" not in str(error.value)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["other"]
    assert len(og.open(other.path).scalars()) > 0


def test_overwrite_removes_only_a_directory_ontogeny_marked_as_a_run(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    done = ontogeny("run", "grokking", "--set", "steps=4", "--out", str(precious), "--overwrite")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "not empty and not an ontogeny run" in done.stderr
    assert [p.name for p in precious.iterdir()] == ["thesis.tex"]  # untouched (no lock file left behind either)

    out = tmp_path / "run"
    first = og.run("grokking", overrides={**SMALL, "steps": 4}, out=out)
    assert first.spec.steps == 4
    second = og.run("grokking", overrides={**SMALL, "steps": 8}, out=out, overwrite=True)
    assert second.spec.steps == 8 and second.scalars().step.max() == 8
    assert not (out / "writers" / "ensemble-0000" / "state-00000001.state").exists()  # the old run's files are gone


def test_out_that_is_a_file_or_under_a_file_is_one_line(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for out, message in ((a_file, "exists and is not a directory"), (a_file / "run", "a parent of it is a file")):
        done = ontogeny("run", "grokking", "--set", "steps=4", "--out", str(out))
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


# ---- resume with an edited spec ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return og.run("grokking", overrides=SMALL, out=tmp_path_factory.mktemp("finished") / "run")


@pytest.mark.parametrize("edit, message", [
    (("steps = 60", "steps = 40"), "steps: 60 -> 40"),
    (("lr = 0.01", "lr = 0.03"), "optim.lr: 0.01 -> 0.03"),
    (("seeds = [\n    0,\n    1,\n]", "seeds = [\n    0,\n    2,\n]"), "seeds: [0, 1] -> [0, 2]"),
    (("steps = 60", "steps = 90"), "--extend-to"),
])
def test_resume_refuses_an_edited_spec_in_one_line(finished, tmp_path, edit, message):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(finished.path, out)
    spec = out / "spec.toml"
    assert edit[0] in spec.read_text()
    spec.write_text(spec.read_text().replace(*edit))
    done = ontogeny("run", "--resume", str(out), timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "spec.toml: edited since the run started" in done.stderr and message in done.stderr
    assert_same_rows(og.open(out), finished)  # nothing written


def test_an_edited_sweep_lists_only_what_was_edited(tmp_path):
    out = tmp_path / "sweep"
    og.run("grokking", overrides={**SMALL, "sweep.model.width": [16, 24]}, out=out)
    spec = out / "spec.toml"
    spec.write_text(spec.read_text().replace("lr = 0.01", "lr = 0.02"))
    done = ontogeny("run", "--resume", str(out), timeout=120)
    assert done.returncode == 2 and "(optim.lr: 0.01 -> 0.02)" in done.stderr, done.stderr


def test_resume_accepts_a_spec_reformatted_without_a_change(finished, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(finished.path, out)
    (out / "spec.toml").write_text("# my notes\n" + (out / "spec.toml").read_text())
    assert og.run(resume=True, out=out).meta["finished"]


def test_resume_refuses_a_spec_argument_and_overrides(finished):
    with pytest.raises(ResumeError, match="drop the spec argument"):
        og.run("grokking", resume=True, out=finished.path)
    with pytest.raises(ResumeError, match="keeps its spec"):
        og.run(resume=True, out=finished.path, overrides={"steps": 5})


# ---- --extend-to ------------------------------------------------------------------------------------------------


def test_extend_to_gives_the_rows_of_a_run_that_long_from_the_start(tmp_path):
    settings = {**SMALL, "record.weights_every": 50}
    short = og.run("grokking", overrides={**settings, "steps": 130}, out=tmp_path / "extended")
    assert 130 in set(short.scalars().step) and 130 in set(short.checkpoints().step)  # the last step is recorded
    done = ontogeny("run", "--resume", str(short.path), "--extend-to", "200")
    assert done.returncode == 0, done.stderr
    extended = og.open(short.path)
    reference = og.run("grokking", overrides={**settings, "steps": 200}, out=tmp_path / "reference")
    assert_same_rows(extended, reference)  # step 130 (off the longer schedule) is gone, weights and rows alike
    assert not list(short.path.glob("weights/*/step-000000130.safetensors"))
    assert extended.spec.steps == 200 and extended.meta["extended"][0]["from"] == 130


def test_extend_to_refuses_fewer_steps_and_a_decaying_schedule(finished, tmp_path):
    with pytest.raises(ResumeError, match="already has 60 steps"):
        og.run(resume=True, out=finished.path, extend_to=60)
    cosine = og.run("grokking", overrides={**SMALL, "steps": 10, "optim.schedule": "cosine"}, out=tmp_path / "c")
    with pytest.raises(ResumeError, match="only 'constant' extends"):
        og.run(resume=True, out=cosine.path, extend_to=20)
    assert og.open(cosine.path).spec.steps == 10
    with pytest.raises(ResumeError, match="use it with --resume"):
        og.run("grokking", out=tmp_path / "new", extend_to=20)


# ---- two writers ------------------------------------------------------------------------------------------------


def test_a_second_writer_of_a_run_is_refused_naming_the_first(tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "ontogeny.cli", "run", "grokking", "--set", "steps=5000",
                              "--set", "task.p=13", "--set", "model.width=24", "--out", str(out),
                              "--commit-seconds", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / "writers" / "ensemble-0000" / "commits.jsonl").exists():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        second = ontogeny("run", "--resume", str(out), timeout=120)
        assert second.returncode == 2 and second.stderr.count("\n") == 1
        assert f"run {out} is in use by process {first.pid} on " in second.stderr
        with pytest.raises(LockedError):
            og.run("grokking", out=out, overwrite=True)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The kernel dropped the dead process's locks, and the refused calls deleted nothing.
    assert not is_locked(out / ".lock") and not is_locked(out / "writers" / "ensemble-0000" / "lock")
    with pytest.raises(StoreError, match="already holds a run"):
        og.run("grokking", overrides={"task.p": 13}, out=out)
    assert og.open(out).members().status.tolist() == ["running"] * 8


# ---- corruption is never read silently --------------------------------------------------------------------------


def writer_files(run_path, pattern: str) -> list:
    return sorted((run_path / "writers" / "ensemble-0000").glob(pattern))


def truncate(path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def edit_meta(run_path, **producer) -> None:
    """Change producer fields of meta.json by hand (as a user with an editor would: no seal)."""
    meta = json.loads((run_path / "meta.json").read_text())
    meta["producer"].update(producer)
    (run_path / "meta.json").write_text(json.dumps(meta, indent=2))


def edit_spec_and_its_hash(run_path) -> None:
    from ontogeny.spec import load_spec, spec_hash

    spec = run_path / "spec.toml"
    spec.write_text(spec.read_text().replace("lr = 0.01", "lr = 0.02"))
    edit_meta(run_path, spec_sha256=spec_hash(load_spec(spec, check_machine=False)))


def flip_a_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


CORRUPTIONS = {  # what happens to the run -> (the file named, what `check` says)
    "scalars shard deleted": (lambda r: writer_files(r, "scalars/part-*")[0].unlink(), "scalars/part-", "missing"),
    "examples shard truncated": (lambda r: truncate(writer_files(r, "examples/part-*")[-1]), "examples/part-",
                                 "committed with"),
    "examples shard bytes flipped": (lambda r: flip_a_byte(writer_files(r, "examples/part-*")[0]), "examples/part-",
                                     "sha256 differs"),
    "weights deleted": (lambda r: next(r.glob("weights/member-00001/*")).unlink(), "weights/member-00001/",
                        "missing"),
    "weights bytes flipped": (lambda r: flip_a_byte(next(r.glob("weights/member-00000/*"))), "weights/member-00000/",
                              "sha256 differs"),
    "members truncated": (lambda r: truncate(writer_files(r, "members-*")[-1]), "members-", "committed with"),
    "state truncated": (lambda r: truncate(writer_files(r, "state-*")[-1]), "state-", "committed with"),
    "meta.json truncated": (lambda r: truncate(r / "meta.json"), "meta.json", "damaged"),
    "writer directory deleted": (lambda r: shutil.rmtree(r / "writers" / "ensemble-0000"), "ensemble-0000",
                                 "is gone"),
    "commits.jsonl deleted": (lambda r: (r / "writers" / "ensemble-0000" / "commits.jsonl").unlink(), "ensemble-0000",
                              "is gone"),
    "writer directory duplicated": (lambda r: shutil.copytree(r / "writers" / "ensemble-0000",
                                                              r / "writers" / "ensemble-0009"), "ensemble-0009",
                                    "not in writers.jsonl"),
    "spec.toml edited after training": (lambda r: (r / "spec.toml").write_text(
        (r / "spec.toml").read_text().replace("lr = 0.01", "lr = 0.02")), "spec.toml", "edited after training"),
    "meta.json's producer edited": (lambda r: edit_meta(r, kind="recorder"), "meta.json", "edited by hand"),
    "spec.toml and its hash in meta.json edited together": (edit_spec_and_its_hash, "meta.json", "edited by hand"),
    "a stray top-level scalars.parquet": (lambda r: pd.DataFrame({"member": [0], "step": [0], "name": ["x"],
                                                                  "value": [123.0]}).to_parquet(r / "scalars.parquet"),
                                          "scalars.parquet", "not a table of the run"),
}


@pytest.fixture(scope="module")
def with_weights(tmp_path_factory):
    return og.run("grokking", overrides={**SMALL, "record.weights_every": 20},
                  out=tmp_path_factory.mktemp("weights") / "run")


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_check_finds_every_corruption_and_readers_name_the_file(with_weights, tmp_path, case):
    import shutil

    from typer.testing import CliRunner

    from ontogeny.cli import app

    out = tmp_path / "run"
    shutil.copytree(with_weights.path, out)
    assert CliRunner().invoke(app, ["check", str(out)]).exit_code == 0
    damage, named, finding = CORRUPTIONS[case]
    damage(out)
    checked = CliRunner().invoke(app, ["check", str(out)])
    assert checked.exit_code == 1, checked.output
    problems = [line for line in checked.stdout.splitlines() if line.startswith("problem: ")]
    assert any(named in line and finding in line for line in problems), checked.stdout
    if case == "a stray top-level scalars.parquet":  # never read as the run's rows
        query = "select count(*), max(value) from scalars"
        assert og.open(out).sql(query).values.tolist() == og.open(with_weights.path).sql(query).values.tolist()
        assert "scalars" not in og.open(out).tables()
        return
    if case.startswith("weights") or case == "state truncated":
        return  # rows still read; only `check` (and resume, for the state) can tell
    for command in (["report", str(out)], ["analyze", str(out)]):
        done = CliRunner().invoke(app, command)
        assert done.exit_code == 2 and done.stderr.count("\n") == 1 and named in done.stderr, (command, done.output)


def test_a_run_killed_before_its_spec_was_written_says_how_to_start_again(tmp_path):
    from ontogeny.store.create import create_run

    out = tmp_path / "run"
    create_run(out, {"kind": "ontogeny", "spec_sha256": "0" * 64}).release()  # killed right after the marker
    done = ontogeny("run", "--resume", str(out), timeout=120)
    assert done.returncode == 2 and "stopped before its spec was written" in done.stderr, done.stderr
    assert "--overwrite" in done.stderr and done.stderr.count("\n") == 1
    done = ontogeny("run", "grokking", *[f"--set={k}={v}" for k, v in SMALL.items()], "--out", str(out),
                    "--overwrite", timeout=300)
    assert done.returncode == 0, done.stderr


def test_resume_removes_a_weights_file_a_killed_process_left_half_written(with_weights, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(with_weights.path, out)
    orphan = out / "weights" / "member-00000" / f".step-000000040.safetensors.{12345}.tmp"
    orphan.write_bytes(b"half")
    og.run(resume=True, out=out, extend_to=80)
    assert not orphan.exists() and og.open(out).scalars().step.max() == 80


def test_resume_refuses_a_damaged_writer_in_one_line(with_weights, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(with_weights.path, out)
    truncate(writer_files(out, "state-*")[-1])
    with pytest.raises(StoreError, match="state-.*committed with") as error:
        og.run(resume=True, out=out, extend_to=80)
    assert "\n" not in str(error.value)


# ---- disk full, analysis of real-world runs ---------------------------------------------------------------------


def test_disk_full_is_one_line_and_the_run_resumes_once_space_is_back(tmp_path, monkeypatch, fill_disk):
    analyzed = og.run("grokking", overrides=SMALL, out=tmp_path / "analyzed")  # trained while there is space
    fill_disk(after=6)
    out = tmp_path / "run"
    with pytest.raises(StoreError) as error:
        og.run("grokking", overrides=SMALL, out=out, commit_seconds=0)
    assert str(error.value) == (f"{out}: no space left on device; free some space, then continue with "
                                f"`ontogeny run --resume {out}` (nothing committed is lost)")
    with pytest.raises(StoreError, match="no space left on device") as error:  # resumed while the disk is still full
        og.run(resume=True, out=out)
    assert "\n" not in str(error.value)
    with pytest.raises(StoreError, match=f"{tmp_path / 'analyzed'}: no space left on device; free some space, then "
                                         "run the same command again"):
        og.analysis.analyze(analyzed)
    assert not list((tmp_path / "analyzed").glob("*.parquet"))  # no table half-written
    monkeypatch.undo()
    assert_same_rows(og.run(resume=True, out=out), og.run("grokking", overrides=SMALL, out=tmp_path / "ref"))


def test_a_report_that_cannot_be_written_leaves_no_empty_file(with_weights, tmp_path, monkeypatch):
    import errno
    import os

    from ontogeny.report import write_report

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    target = tmp_path / "report.html"
    monkeypatch.setattr(os, "write", full)
    monkeypatch.setattr("builtins.open", _open_failing_writes(full))
    with pytest.raises(StoreError, match="report.html: cannot write the report \\(no space left on device\\)"):
        write_report(with_weights.path, target)
    monkeypatch.undo()
    assert not target.exists() and not list(tmp_path.iterdir())


def _open_failing_writes(fail):
    real_open = open

    def fake_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        if "w" in mode and str(file).endswith(".tmp"):
            handle.write = lambda data: fail(None, data)
        return handle

    return fake_open


def test_analyze_skips_diverged_members_and_says_so(tmp_path):
    from ontogeny.analysis import analyze

    run = og.run("grokking", overrides={**SMALL, "sweep.optim.lr": [0.01, 1e9]}, out=tmp_path / "run")
    diverged = run.members().query("status == 'diverged'")
    assert len(diverged) == 2  # both seeds at lr 1e9
    result = analyze(run)
    assert any(line.startswith("skipped 2 diverged member(s)") for line in result.summary)
    assert set(result.tables["grokking"].member) == {0, 1}
    assert "seed_stats" in result.tables


def test_analyze_a_run_stopped_before_its_second_ensemble(tmp_path):
    from ontogeny.analysis import analyze

    class StopAtSecondEnsemble:
        def start(self, *args): pass
        def checkpoint(self, *args): pass

        def step(self, ensemble, step):
            if ensemble == 1:
                raise KeyboardInterrupt

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        og.run("grokking", overrides={**SMALL, "sweep.model.width": [16, 24]}, out=out,
               progress=StopAtSecondEnsemble())
    run = og.open(out)
    assert run.members().status.tolist() == ["ok", "ok", "running", "running"]
    result = analyze(run)
    assert "2 member(s) have no rows yet (still to train, or the run stopped): 2, 3" in result.summary
    assert set(result.tables["grokking"].member) == {0, 1}


def test_a_run_written_before_a_spec_field_existed_still_reads_checks_and_resumes(finished, tmp_path):
    """A field ontogeny gained later (with its default) is absent from an older run's spec.toml; that file is the one
    the run trained under, so it is not 'edited'."""
    import hashlib
    import shutil

    from ontogeny.store import update_meta

    out = tmp_path / "run"
    shutil.copytree(finished.path, out)
    spec = out / "spec.toml"
    older = spec.read_text().replace("max_probe_examples = 10000\n", "")  # as a version without the field wrote it
    assert older != spec.read_text()
    spec.write_text(older)
    meta = json.loads((out / "meta.json").read_text())
    update_meta(out, producer={**meta["producer"], "spec_sha256": hashlib.sha256(older.encode()).hexdigest()})
    assert og.open(out).spec.record.max_probe_examples == 10000
    assert ontogeny("check", str(out)).returncode == 0
    done = ontogeny("run", "--resume", str(out), "--extend-to", "70", timeout=120)
    assert done.returncode == 0, done.stderr
    assert og.open(out).scalars().step.max() == 70
