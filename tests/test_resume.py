"""A run killed at any moment resumes with exactly the rows of an uninterrupted run (real processes)."""

import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

import ontogeny as og

SPEC = ["task.p=13", "task.train_fraction=0.5", "model.width=24", "steps=400", "seeds=3", "record.every=20",
        "record.weights_every=100"]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "ontogeny.cli", *args]


def start_and_kill(out, sig: int) -> tuple[int, str]:
    """Start a run, wait until it has committed a few times (each commit saves its state), then signal it."""
    args = [a for s in SPEC for a in ("--set", s)]
    # Ctrl-C's default action in the child even where this test runs with SIGINT ignored (a shell's `cmd &`): a
    # Python started with SIGINT ignored never turns it into KeyboardInterrupt.
    proc = subprocess.Popen(cli("run", "grokking", *args, "--out", str(out), "--commit-seconds", "0"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while commits(out) < 5:
        assert proc.poll() is None and time.monotonic() < deadline, "run ended before it could be killed"
        time.sleep(0.02)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    return proc.returncode, stderr


def commits(out) -> int:
    """The number of commits of the first ensemble's writer so far."""
    log = out / "writers" / "ensemble-0000" / "commits.jsonl"
    return log.read_text().count("\n") if log.exists() else 0


def all_rows(run) -> dict[str, pd.DataFrame]:
    return {
        "scalars": run.scalars().sort_values(["member", "step", "name"]).reset_index(drop=True),
        "examples": run.examples().sort_values(["member", "step", "split", "example"]).reset_index(drop=True),
        "checkpoints": run.checkpoints().sort_values(["member", "step"]).reset_index(drop=True),
        "members": run.members(),
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return all_rows(og.run("grokking", overrides=SPEC, out=tmp_path_factory.mktemp("ref") / "run"))


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_run_resumes_to_exactly_the_uninterrupted_rows(tmp_path, reference, sig):
    out = tmp_path / "run"
    returncode, stderr = start_and_kill(out, sig)
    if sig == signal.SIGINT:
        assert returncode == 130
        assert f"ontogeny run --resume {out}" in stderr
    partial = og.open(out).scalars()
    assert 0 < partial.step.max() < 400  # it really was interrupted mid-run
    done = subprocess.run(cli("run", "--resume", str(out)), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    resumed = all_rows(og.open(out))
    for name, frame in reference.items():
        pd.testing.assert_frame_equal(resumed[name], frame, obj=name)
    assert not list(out.rglob("*.tmp"))


def test_resume_refuses_a_directory_without_a_run(tmp_path):
    done = subprocess.run(cli("run", "--resume", str(tmp_path)), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {tmp_path}: not a run directory (no meta.json)"
