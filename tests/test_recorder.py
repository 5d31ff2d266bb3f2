"""og.Recorder: a user's own training loop recorded into a run, several processes into one run, restarts."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import ontogeny as og
from ontogeny.analysis import analyze
from ontogeny.exceptions import StoreError

LOOP = Path(__file__).parent / "recorder_loop.py"
STEPS = 120


def loop(run_dir, seed: int, *, pause: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(LOOP), str(run_dir), str(seed), str(STEPS)],
                            env={**__import__("os").environ, "LOOP_PAUSE": str(pause)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> None:
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr


def rows(run) -> dict[str, pd.DataFrame]:
    members = run.members().drop(columns=["status"])
    return {"scalars": run.scalars(), "examples": run.examples(), "members": members, "subsets": run.subsets()}


def commits(run_dir, member: int) -> int:
    log = run_dir / "writers" / f"member-{member:05d}" / "commits.jsonl"
    return log.read_text().count("\n") if log.exists() else 0


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    for seed in range(4):
        finish(loop(run_dir, seed))
    return og.open(run_dir)


def test_four_processes_two_killed_and_restarted_end_with_the_uninterrupted_rows(tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    procs = {seed: loop(run_dir, seed, pause=0.01) for seed in range(4)}
    try:
        deadline = time.monotonic() + 120
        for seed in (0, 1):  # kill two of them mid-way, after a few commits and a checkpoint of their own
            while commits(run_dir, seed) < 6 or not (tmp_path / f"loop-run-{seed}.pt").exists():
                assert procs[seed].poll() is None, procs[seed].communicate()[1]
                assert time.monotonic() < deadline
                time.sleep(0.01)
            procs[seed].send_signal(signal.SIGKILL)
            procs[seed].communicate()
        partial = og.open(run_dir).scalars()
        assert partial[partial.member.isin([0, 1])].step.max() < STEPS
        for seed in (0, 1):
            procs[seed] = loop(run_dir, seed)  # the loop resumes from its own checkpoint, the recorder from resume_step
        for proc in procs.values():
            finish(proc)
    finally:
        for proc in procs.values():  # never leave a process (or its pipe) behind
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
    got, want = rows(og.open(run_dir)), rows(uninterrupted)
    for name in want:
        pd.testing.assert_frame_equal(got[name], want[name], obj=name)
    assert og.open(run_dir).members().status.tolist() == ["ok"] * 4
    assert len(got["examples"]) == 4 * 64 * len(og.log_spaced(2, 16, 16).steps(STEPS))


def test_a_run_of_a_users_loop_is_analyzed_and_reported(uninterrupted, tmp_path):
    from ontogeny.report import write_report

    run = uninterrupted
    assert run.producer["kind"] == "recorder" and not run.has_spec
    assert {"seed", "lr", "init_seed"} <= set(run.members().columns)
    result = analyze(run)
    assert "example_dynamics" in result.tables and "hidden_transitions" in result.tables
    page = write_report(run.path, tmp_path / "report.html").read_text()
    assert "recorder" in page and 'id="hidden"' in page


def test_members_with_the_same_settings_get_their_own_id_back(tmp_path):
    x, y = torch.randn(10, 3), torch.randint(0, 2, (10,))
    model = nn.Linear(3, 2)
    first = og.Recorder(tmp_path / "run", member={"seed": 1}, probes={"test": (x, y)})
    second = og.Recorder(tmp_path / "run", member={"seed": 2}, probes={"test": (x, y)})
    assert (first.member, second.member) == (0, 1)
    first.step(0, model)
    first.close()
    with pytest.raises(StoreError, match="member 0 .* already has rows; to continue it .* pass resume_step"):
        og.Recorder(tmp_path / "run", member={"seed": 1}, probes={"test": (x, y)})  # the same script run again
    again = og.Recorder(tmp_path / "run", member={"seed": 1}, probes={"test": (x, y)}, resume_step=0)  # a restart
    assert again.member == 0
    again.close()
    second.close()
    assert len(og.open(tmp_path / "run").examples()) == 10


@pytest.mark.parametrize("make, message", [
    (lambda run, x, y: og.Recorder(run, member={"member": 0, "seed": 9}, probes={"test": (x, y)}),
     "member 0 is already recorded with"),
    (lambda run, x, y: og.Recorder(run, member={"seed": 5}, probes={"other": (x, y)}),
     "probed on {'test': 10}"),
    (lambda run, x, y: og.Recorder(run, member={"seed": 5}, probes={"test": torch.utils.data.TensorDataset(x, y)}),
     "a dataset needs stable example ids"),
    (lambda run, x, y: og.Recorder(run, member={"seed": 5}, probes={"test": og.ProbeSet((x, y), ids=[1] * 10)}),
     "needs 10 distinct ids"),
    (lambda run, x, y: og.Recorder(run, member={"lr": float("nan")}, probes={"test": (x, y)}),
     "finite numbers"),
    (lambda run, x, y: og.Recorder(run, member={"seed": 5}, probes={"test": (x, y[:4])}),
     "x has 10 rows, y has 4"),
    (lambda run, x, y: og.Recorder(run, member={"seed": 5, "status": "ok"}, probes={"test": (x, y)}),
     "member\\['status'\\]: a column the recorder sets itself"),
    (lambda run, x, y: og.Recorder(run, member={"seed": 5},
                                   probes={"test": og.ProbeSet((x, y), ids=list("abcdefghij"))}),
     "ids must be integers"),
    (lambda run, x, y: og.Recorder(run, member={"seed": 5},
                                   probes={"test": og.ProbeSet((x, y), ids=np.arange(10) + 0.5)}),
     "ids must be integers"),
    (lambda run, x, y: og.Recorder(run, member={"seed": 5}, probes={"test": (x[:0], y[:0])}), "has no examples"),
    (lambda run, x, y: og.Recorder(run, member={"seed": 5},
                                   probes={"test": (x.index_fill(0, torch.tensor([3]), float("nan")), y)}),
     "x holds NaN or infinite values \\(at row 3\\)"),
])
def test_bad_input_is_one_clear_line(tmp_path, make, message):
    x, y = torch.randn(10, 3), torch.randint(0, 2, (10,))
    og.Recorder(tmp_path / "run", member={"member": 0, "seed": 1}, probes={"test": (x, y)}).close()
    before = sorted(p.name for p in (tmp_path / "run" / "writers").iterdir())
    with pytest.raises(StoreError, match=message) as error:
        make(tmp_path / "run", x, y)
    assert "\n" not in str(error.value)
    assert sorted(p.name for p in (tmp_path / "run" / "writers").iterdir()) == before  # nothing written


def test_a_dataset_probe_with_ids_and_a_loss_function_of_the_users(tmp_path):
    x, y = torch.randn(12, 3), torch.randint(0, 2, (12,))
    dataset = torch.utils.data.TensorDataset(x, y)
    model = nn.Linear(3, 2)

    def hinge(model, batch):
        x, y = batch
        margin = model(x)[:, 1] - model(x)[:, 0]
        sign = 2 * y.float() - 1
        return torch.relu(1 - sign * margin), sign * margin > 0

    with og.Recorder(tmp_path / "run", member={"seed": 0}, loss=hinge, every=[0, 5],
                     probes={"test": og.ProbeSet(dataset, ids=range(100, 112), batch_size=5)}) as rec:
        assert rec.step(0, model) and not rec.step(1, model) and rec.step(5, model)
    examples = og.open(tmp_path / "run").examples(step=0)
    assert examples.example.tolist() == list(range(100, 112))
    margin = (model(x)[:, 1] - model(x)[:, 0]).detach()
    np.testing.assert_allclose(examples.loss, torch.relu(1 - (2 * y.float() - 1) * margin).numpy(), rtol=1e-6)


def test_a_new_member_waits_for_another_being_given_its_id(tmp_path):
    import threading

    from ontogeny.store.lock import FileLock

    x, y = torch.randn(10, 3), torch.randint(0, 2, (10,))
    og.Recorder(tmp_path / "run", member={"seed": 0}, probes={"test": (x, y)}).close()
    held = FileLock(tmp_path / "run" / ".members.lock", "another process").acquire()
    made = {}
    thread = threading.Thread(target=lambda: made.setdefault(
        "recorder", og.Recorder(tmp_path / "run", member={"seed": 1}, probes={"test": (x, y)})))
    thread.start()
    time.sleep(0.5)
    assert thread.is_alive()  # waiting (processes started together all get ids), not refused
    held.release()
    thread.join(timeout=30)
    assert made["recorder"].member == 1
    made["recorder"].close()


def test_a_hugging_face_dataset_probe_uses_its_id_column(tmp_path):
    datasets = pytest.importorskip("datasets", reason="the hf extra: pip install 'ontogeny[hf]'")
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 1, 0, 1, 0])
    data = datasets.Dataset.from_dict({"id": [50, 51, 52, 53, 54, 55], "x": x.tolist(), "y": y.tolist()})
    model = nn.Linear(3, 2)

    def loss(model, batch):  # rows of a datasets.Dataset arrive as a dict of columns
        logits = model(batch["x"])
        return nn.functional.cross_entropy(logits, batch["y"], reduction="none"), logits.argmax(-1) == batch["y"]

    with og.Recorder(tmp_path / "run", member={"seed": 0}, probes={"test": og.ProbeSet(data, batch_size=4)},
                     loss=loss, every=[0]) as rec:
        rec.step(0, model)
    examples = og.open(tmp_path / "run").examples()
    assert examples.example.tolist() == [50, 51, 52, 53, 54, 55]
    want = nn.functional.cross_entropy(model(x), y, reduction="none").detach().numpy()
    np.testing.assert_allclose(examples.loss, want, rtol=1e-5)
    with pytest.raises(StoreError, match="a dataset needs stable example ids"):
        og.ProbeSet(data.remove_columns("id"))


def _join(root) -> str:
    from ontogeny.store.create import join_run

    try:
        join_run(root, {"kind": "recorder"})
        return "ok"
    except StoreError as err:
        return str(err)


def test_processes_starting_together_all_join_the_run(tmp_path):
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(4) as pool:
        for trial in range(20):  # the marker appears while the others look: none may take it for a stranger's files
            root = tmp_path / f"run{trial}"
            assert pool.map(_join, [root] * 4) == ["ok"] * 4


def test_resuming_past_the_last_commit_is_refused_unless_the_gap_is_accepted(tmp_path):
    x, y = torch.randn(10, 3), torch.randint(0, 2, (10,))
    model = torch.nn.Linear(3, 2)

    def loop(run, commit_before_checkpoint):
        rec = og.Recorder(run, member={"seed": 0}, probes={"test": (x, y)}, every=[0, 100], commit_seconds=3600)
        rec.step(0, model)  # evaluated and committed
        for step in range(1, 11):
            rec.step(step, model)
            rec.log(step, {"train/loss": 1.0 / step})
        if commit_before_checkpoint:
            rec.commit(step=10)  # ... then the loop saves its checkpoint of step 10
        rec.writer.close()  # killed: nothing more is committed

    loop(tmp_path / "lost", commit_before_checkpoint=False)
    with pytest.raises(StoreError, match="committed through step 0, but resumes at step 10: what it recorded in "
                                         "between is lost") as error:
        og.Recorder(tmp_path / "lost", member={"seed": 0}, probes={"test": (x, y)}, resume_step=10)
    assert "\n" not in str(error.value)
    og.Recorder(tmp_path / "lost", member={"seed": 0}, probes={"test": (x, y)}, resume_step=10,
                accept_gap=True).close()
    loop(tmp_path / "kept", commit_before_checkpoint=True)
    og.Recorder(tmp_path / "kept", member={"seed": 0}, probes={"test": (x, y)}, resume_step=10).close()
    assert og.open(tmp_path / "kept").scalars(name="train/loss").step.tolist() == list(range(1, 11))


@pytest.mark.parametrize("x, y, message", [
    (torch.randn(10, 3), torch.randint(0, 2, (10, 2)), "needs y as one integer class per example"),
    (torch.randn(10, 3), torch.rand(10), "needs y as one integer class per example"),
    (torch.randn(10, 3), torch.tensor([0, -1] + [0] * 8), r"y holds a negative class \(-1\) at row 1"),
    (["a", "b"], [0, 1], "x and y must be numeric"),
])
def test_a_probe_the_default_loss_cannot_score_is_refused_before_the_run_exists(tmp_path, x, y, message):
    with pytest.raises(StoreError, match=message):
        og.Recorder(tmp_path / "run", member={"seed": 1}, probes={"test": (x, y)})
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("x, y", [(torch.randn(10, 4), torch.randint(0, 2, (10,))),  # x one column too wide
                                  (torch.randn(10, 3), torch.tensor([5] + [0] * 9))])  # a class past 2 outputs
def test_a_probe_the_model_cannot_score_fails_in_one_line(tmp_path, x, y):
    recorder = og.Recorder(tmp_path / "run", member={"seed": 1}, probes={"test": (x, y)})
    with pytest.raises(StoreError, match="step 0: the model could not score the probe sets"):
        recorder.step(0, nn.Linear(3, 2), force=True)
