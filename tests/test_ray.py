"""`ontogeny run --backend ray` on a local Ray cluster started by the test: the same rows as the sequential backend,
bitwise, through a worker SIGKILLed mid-ensemble (Ray retries it) and a driver SIGKILLed and resumed."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

import ontogeny as og
from ontogeny.exceptions import SpecError

pytest.importorskip("ray", reason="the ray extra: pip install 'ontogeny[ray]'")

SMALL = {"task.p": 13, "task.train_fraction": 0.5, "model.width": 24, "seeds": 4, "steps": 300, "record.every": 20}
ARGS = [arg for key, value in SMALL.items() for arg in ("--set", f"{key}={value}")]


def rows(run) -> dict[str, pd.DataFrame]:
    return {"scalars": run.scalars(), "examples": run.examples(), "checkpoints": run.checkpoints(),
            "members": run.members()}


def assert_same_rows(got, want) -> None:
    for name, frame in rows(want).items():
        pd.testing.assert_frame_equal(rows(got)[name], frame, obj=name)  # bitwise: no tolerance


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    return og.run("grokking", overrides=SMALL, out=tmp_path_factory.mktemp("sequential") / "run", max_members=2)


def driver(out, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ontogeny.cli", "run", *extra, "--backend", "ray",
                             "--commit-seconds", "0", *(["--out", str(out)] if "--resume" not in extra else [])],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def commits(out, ensemble: int) -> int:
    log = out / "writers" / f"ensemble-{ensemble:04d}" / "commits.jsonl"
    return log.read_text().count("\n") if log.exists() else 0


def wait_for(condition, proc, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_ray_backend_gives_the_rows_of_the_sequential_backend(sequential, tmp_path):
    run = og.run("grokking", overrides=SMALL, out=tmp_path / "run", backend="ray", max_members=2)
    assert run.members().ensemble.tolist() == [0, 0, 1, 1]
    assert_same_rows(run, sequential)
    assert run.meta["plan"] == {"max_members": 2} and run.meta["finished"]


def test_a_worker_killed_mid_ensemble_is_retried_and_loses_nothing(sequential, tmp_path):
    out = tmp_path / "run"
    proc = driver(out, "grokking", *ARGS, "--max-members", "2")
    try:
        wait_for(lambda: commits(out, 0) >= 4, proc)  # the first ensemble is mid-way
        holder = json.loads((out / "writers" / "ensemble-0000" / "lock").read_text())["pid"]
        assert holder != proc.pid  # a Ray worker, not the driver
        os.kill(holder, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert_same_rows(og.open(out), sequential)


def test_a_killed_driver_is_resumed_and_submits_only_what_is_left(sequential, tmp_path):
    out = tmp_path / "run"
    proc = driver(out, "grokking", *ARGS, "--max-members", "2", "--max-parallel", "1")
    try:
        wait_for(lambda: commits(out, 1) >= 3, proc)  # ensemble 0 is done, ensemble 1 mid-way
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    finished_before = json.loads((out / "writers" / "ensemble-0000" / "commits.jsonl").read_text().splitlines()[-1])
    assert finished_before["info"]["finished"]
    resumed = driver(out, "--resume", str(out))
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    assert_same_rows(og.open(out), sequential)
    # ensemble 0 was not trained again: its log gained no commit
    after = (out / "writers" / "ensemble-0000" / "commits.jsonl").read_text().splitlines()[-1]
    assert json.loads(after)["seq"] == finished_before["seq"]


def test_bad_cluster_input_is_one_line_before_anything_trains(tmp_path):
    with pytest.raises(SpecError, match="cannot start or reach a Ray cluster at 127.0.0.1:9"):
        og.run("grokking", overrides=SMALL, out=tmp_path / "a", backend="ray", address="127.0.0.1:9")
    with pytest.raises(SpecError, match="absolute path"):
        og.run("grokking", overrides=SMALL, out="relative/run", backend="ray", address="127.0.0.1:9")
    with pytest.raises(SpecError, match="go with --backend ray"):
        og.run("grokking", overrides=SMALL, out=tmp_path / "b", max_parallel=2)
    import torch

    if not torch.cuda.is_available():  # the local cluster is this machine: no GPU
        with pytest.raises(SpecError, match="the Ray cluster has no GPU"):
            og.run("grokking", overrides=SMALL, out=tmp_path / "c", backend="ray", device="cuda", max_members=2)
        assert og.open(tmp_path / "c").scalars().empty  # nothing trained


def test_a_swept_member_field_reaches_the_members_table_of_a_ray_run(tmp_path):
    # reported: a Ray run of a train_fraction sweep had no train_fraction column (rows that could not be told apart)
    sweep = {**SMALL, "seeds": 1, "steps": 20, "sweep.task.train_fraction": [0.4, 0.6]}
    run = og.run("grokking", overrides=sweep, out=tmp_path / "run", backend="ray")
    members = run.members()
    assert members["task.train_fraction"].tolist() == [0.4, 0.6]  # the two members told apart
