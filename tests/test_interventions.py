"""Data interventions as a member field: drop, weight or stage a training subset, and the verdict per arm."""

import subprocess
import sys

import numpy as np
import pytest
import torch

import ontogeny as og
from ontogeny.analysis import analyze
from ontogeny.report import write_report
from ontogeny.spec import load_spec
from ontogeny.tasks import make_task
from ontogeny.tasks.interventions import Intervention, parse_intervention
from ontogeny.members import ensembles, expand

NAMES = ["task0", "task1", "task2", "task3"]
TINY = ["task.n_tasks=4", "task.n=12", "task.batch_size=200", "task.n_test_per_task=100", "model.width=64",
        "record.every=100"]


def test_parse_reads_each_action_and_refuses_bad_text_in_one_line():
    assert parse_intervention("", NAMES) == Intervention()
    assert parse_intervention("drop task1,task3", NAMES) == Intervention("drop", ("task1", "task3"))
    assert parse_intervention("weight task2 0.25", NAMES) == Intervention("weight", ("task2",), factor=0.25)
    assert parse_intervention("curriculum task3,task0 50", NAMES) == Intervention("curriculum", ("task3", "task0"),
                                                                                 stage_steps=50)
    bad = {"shuffle task1": "unknown action 'shuffle'", "drop": "expected 'drop SUBSET[,SUBSET]'",
           "drop task9": "unknown subset 'task9'", "drop task0,task1,task2,task3": "nothing is left",
           "weight task1 x": "'x' is not a number", "weight task1 0": "positive", "curriculum task1 0": "at least 1",
           "curriculum task1 1.5": "not a whole number"}
    for text, message in bad.items():
        with pytest.raises(ValueError, match=message.replace("[", r"\[")):
            parse_intervention(text, NAMES)


def test_weights_per_step():
    assert Intervention().weights(0, NAMES) is None
    assert Intervention("drop", ("task1",)).weights(7, NAMES).tolist() == [1, 0, 1, 1]
    assert Intervention("weight", ("task2",), factor=3.0).weights(7, NAMES).tolist() == [1, 1, 3, 1]
    stages = Intervention("curriculum", ("task3", "task0"), stage_steps=10)
    assert stages.weights(9, NAMES).tolist() == [0, 0, 0, 1] and stages.weights(10, NAMES).tolist() == [1, 0, 0, 0]
    assert stages.weights(20, NAMES) is None


def _task(arms, seeds=1):
    spec = load_spec("multitask-parity", [*TINY, f"seeds={seeds}", f"sweep.task.intervention={arms!r}".replace(
        "'", '"')])
    (group,) = ensembles(expand(spec))
    return make_task([m.spec.task for m in group], [m.data_seed for m in group], 1000), group


def _subtasks(batch):
    return batch.x[..., :4].argmax(-1)  # the one-hot control bits name the subtask


def test_each_arm_draws_what_it_says_and_the_baseline_draws_as_without_the_field():
    task, group = _task(["", "drop task1", "weight task3 4", "curriculum task2,task0 150"])
    alone = make_task([load_spec("multitask-parity", TINY).task], [0], 1000)  # no intervention field set
    counts = np.zeros((4, 4))
    for step in range(0, 600, 7):
        batch = task.batch(step)
        reference = alone.batch(step)
        assert torch.equal(batch.x[0], reference.x) and torch.equal(batch.y[0], reference.y)
        drawn = _subtasks(batch)
        if step < 150:
            assert (drawn[3] == 2).all()
        elif step < 300:
            assert (drawn[3] == 0).all()
        else:  # the curriculum is over: the same mixture, the same draws as the baseline
            assert torch.equal(batch.x[3], reference.x)
        for arm in range(3):
            counts[arm] += np.bincount(drawn[arm].numpy(), minlength=4)
    zipf = np.arange(1, 5) ** -1.4 / (np.arange(1, 5) ** -1.4).sum()
    assert counts[1, 1] == 0
    dropped = np.delete(zipf, 1) / np.delete(zipf, 1).sum()
    np.testing.assert_allclose(np.delete(counts[1], 1) / counts[1].sum(), dropped, atol=0.01)
    weighted = zipf * [1, 1, 1, 4] / (zipf * [1, 1, 1, 4]).sum()
    np.testing.assert_allclose(counts[2] / counts[2].sum(), weighted, atol=0.01)


def test_a_drop_arm_gets_a_verdict_and_a_no_op_arm_gets_none(tmp_path):
    run = og.run("multitask-parity", overrides=[*TINY, "steps=1000", "seeds=6",
                                               'sweep.task.intervention=["", "drop task1", "weight task1 1"]'],
                 out=tmp_path / "arms")
    assert run.members().ensemble.nunique() == 1  # every arm trains inside one ensemble
    result = analyze(run, what=["interventions"])
    table = run.table("interventions")
    dropped = table[(table.arm == "drop task1") & (table.metric == "test/task1/acc") & (table["at"] == "final")].iloc[0]
    assert dropped.paired and dropped.high < 0
    assert dropped.verdict.startswith("'drop task1' lowers test/task1/acc at final by") and "in 6/6 seeds" in \
        dropped.verdict
    same = table[table.arm == "weight task1 1"]
    assert (same.difference == 0).all() and not same.verdict.str.startswith("'weight task1 1'").any()  # no claim
    assert same.verdict.str.startswith(("no difference shown", "too few seeds")).all()
    assert any("'drop task1' vs the baseline" in line for line in result.summary)
    page = write_report(run.path).read_text()
    assert "Controlled experiments" in page and "fig-interventions-final" in page


def test_a_bad_intervention_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "bad"
    done = subprocess.run([sys.executable, "-m", "ontogeny.cli", "run", "multitask-parity", "--out", str(out), "--set",
                           "task.intervention=drop task99"], capture_output=True, text=True)
    assert done.returncode != 0 and not out.exists()
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "task.intervention" in lines[0] and "unknown subset 'task99'" in lines[0], lines
