"""`ontogeny analyze` on real tiny runs: the tables it writes, its summary, idempotence, partial runs."""

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import ontogeny as og
from ontogeny.analysis import analyze

SWEEP = ["task.p=13", "model.width=48", "steps=300", "seeds=3", "record.every=25",
         "sweep.task.train_fraction=[0.2, 0.7]"]
CONTRACT = {
    "grokking": ["member", "memorization_step", "generalization_step", "delay"],
    "transitions": ["member", "curve", "onset_step", "end_step", "before", "after", "size", "direction"],
    "example_dynamics": ["member", "split", "example", "aoa_step", "abruptness", "forgetting_events", "learned",
                         "confidence", "variability", "correctness"],
    "hidden_transitions": ["member", "split", "level", "n_curves", "n_learned", "onset_median", "onset_q25",
                           "onset_q75", "n_groups", "median_width", "aggregate_width"],
    "seed_stats": ["config", "quantity", "estimate", "ci_low", "ci_high", "n_members"],
    "solutions": ["member", "cluster", "outlier"],
}


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    # commit at every checkpoint, so the run has many shards
    return og.run("grokking", overrides=SWEEP, out=tmp_path_factory.mktemp("sweep") / "run", commit_seconds=0)


def test_analyze_writes_the_contract_tables(sweep_run):
    result = analyze(sweep_run)
    for name, columns in CONTRACT.items():
        table = sweep_run.table(name)
        assert set(columns) <= set(table.columns), name
    grok = sweep_run.table("grokking").set_index("member")
    summary = og.analysis.summary.member_summary(sweep_run.scalars(), sweep_run.members()).set_index("member")
    pd.testing.assert_series_equal(grok.generalization_step, summary.generalization.astype(float),
                                   check_names=False)
    stats = sweep_run.table("seed_stats")
    assert set(stats.config) >= {"train_fraction=0.2", "train_fraction=0.7"}
    assert (stats.ci_low <= stats.estimate).all() and (stats.estimate <= stats.ci_high).all()
    dynamics = sweep_run.table("example_dynamics")
    assert len(dynamics) == 6 * 169  # every member x example, split by each member's own train set
    assert dynamics.aoa_step.between(1, 300).all()  # clipped to the checkpoints after step 0
    assert (dynamics[~dynamics.acquired].aoa_step == 300).all()
    assert dynamics[dynamics.split == "train"].acquired.mean() > 0.9  # every member memorizes its train set
    assert any(line.startswith("test/acc [train_fraction=0.7]") for line in result.summary)


def test_analyze_is_idempotent(sweep_run):
    analyze(sweep_run)
    first = {name: sweep_run.table(name) for name in CONTRACT}
    analyze(sweep_run)
    for name, table in first.items():
        pd.testing.assert_frame_equal(sweep_run.table(name), table, obj=name)


def test_cli_summary_and_json(sweep_run):
    command = [sys.executable, "-m", "ontogeny.cli", "analyze", str(sweep_run.path)]
    text = subprocess.run(command + ["--what", "grokking,seeds"], capture_output=True, text=True, timeout=300)
    assert text.returncode == 0, text.stderr
    assert "members generalize" in text.stdout
    # nothing but progress lines on stderr (a quick analysis prints none; one slowed by a busy machine may)
    assert all(re.search(r"analyze: \w+ \(\d+/\d+\)", line) for line in text.stderr.splitlines()), text.stderr
    data = json.loads(subprocess.run(command + ["--json"], capture_output=True, text=True, timeout=300).stdout)
    assert {"grokking", "seed_stats", "transitions"} <= set(data["tables"])
    assert data["summary"]
    bad = subprocess.run(command + ["--what", "astrology"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "astrology" in bad.stderr


def test_hidden_transitions_per_subtask(tmp_path):
    run = og.run("multitask-parity", overrides=["task.n_tasks=4", "task.n=8", "task.k=2", "task.batch_size=200",
                                                "task.n_test_per_task=25", "model.width=32", "steps=300",
                                                "seeds=2", "record.every=25"], out=tmp_path / "mt")
    analyze(run, what=["hidden"])
    onsets = run.table("subset_onsets")
    assert sorted(onsets.subset.unique()) == ["task0", "task1", "task2", "task3"]
    assert len(onsets) == 2 * 4
    hidden = run.table("hidden_transitions")
    assert set(hidden.level) == {"subset"} and (hidden.n_curves == 4).all()


def test_a_run_still_being_written_is_analyzed_as_far_as_it_got(tmp_path):
    import time

    out = tmp_path / "run"
    args = [a for s in [*SWEEP[:-2], "steps=20000", "seeds=3", SWEEP[-1]] for a in ("--set", s)]
    proc = subprocess.Popen([sys.executable, "-m", "ontogeny.cli", "run", "grokking", *args, "--out", str(out),
                             "--commit-seconds", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        log = out / "writers" / "ensemble-0000" / "commits.jsonl"
        deadline = time.monotonic() + 120
        while not log.exists() or log.read_text().count("\n") < 12:  # training, many checkpoints in
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
            time.sleep(0.05)
        run = og.open(out)
        result = analyze(run, what=["grokking", "examples"])  # while the trainer goes on committing
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.communicate()
    assert result.tables["grokking"].member.nunique() == 6
    assert np.isfinite(run.table("example_dynamics").confidence).all()
    assert run.scalars().step.max() < 20000

def test_curves_logged_at_different_steps_are_each_analysed_on_their_own(scalar_run):
    """A loop that logs train/loss every 25 steps and probes heldout/acc at log-spaced steps: the jump of heldout/acc
    between steps 64 and 91 is found (keeping only the steps both share, from 100 on, hid it)."""
    dense = np.arange(0, 601, 25)
    sparse = np.array([0, 1, 2, 4, 8, 16, 32, 45, 64, 91, 128, 181, 256, 362, 512, 600])
    rows = []
    for member in range(2):
        rows += [{"member": member, "step": s, "name": "train/loss", "value": 2.0 / (1 + s / 100)} for s in dense]
        rows += [{"member": member, "step": s, "name": "heldout/acc", "value": 0.52 if s >= 91 else 0.05}
                 for s in sparse]
    run = og.open(scalar_run("mixed", pd.DataFrame(rows)))
    found = analyze(run, what=["transitions"]).tables["transitions"]
    jumps = found[found.curve == "heldout/acc"]
    assert len(jumps) == 2 and jumps.onset_step.between(64, 91).all()


def test_a_run_still_being_written_is_analyzed_as_it_stood(tmp_path, monkeypatch):
    """The trainer commits a checkpoint between the analysis's read of scalars and its read of examples: the examples
    must not hold a step the scalars lack (the hidden step failed with "values holds NaN" in 3 of 4 such tries)."""
    import torch
    from torch import nn

    from ontogeny.store.run import Run

    x, y, model = torch.randn(40, 3), torch.randint(0, 2, (40,)), nn.Linear(3, 2)
    recorder = og.Recorder(tmp_path / "run", member={"seed": 1}, probes={"test": (x, y)})
    for step in (0, 1, 2, 4, 8, 16):
        recorder.step(step, model, force=True)
    examples = Run.examples

    def commit_meanwhile(self, *args, **kwargs):
        if recorder is not None and not getattr(commit_meanwhile, "done", False):
            commit_meanwhile.done = True
            recorder.step(32, model, force=True)
        return examples(self, *args, **kwargs)

    monkeypatch.setattr(Run, "examples", commit_meanwhile)
    run = og.open(tmp_path / "run")
    result = analyze(run, what=["hidden"])
    assert commit_meanwhile.done and "hidden_transitions" in result.tables
    assert run.examples().step.max() == 32  # outside the analysis the new commit is seen
    with run.pinned():
        recorder.step(64, model, force=True)
        assert run.scalars().step.max() == 32 and run.examples().step.max() == 32
        members = run.members()
        for status in ("diverged", "ok"):  # the pinned members version is replaced, then deleted by the next commit
            recorder.writer.put("members", members.assign(status=status))
            recorder.commit()
        assert run.members().status.tolist() == ["ok"]  # a whole table is read in its newer version
        assert run.scalars().step.max() == 32
    assert run.scalars().step.max() == 64


def test_steps_run_in_name_order_each_after_the_steps_it_reads_and_a_circle_is_refused():
    from ontogeny.analysis.analyze import Step, _ordered

    def step(name, after=()):
        return Step(name, lambda context: None, after=after)

    steps = [step("c"), step("a", after=("d",)), step("d", after=("b", "absent")), step("b")]
    assert [s.name for s in _ordered(steps)] == ["b", "c", "d", "a"]
    with pytest.raises(ValueError, match="analysis steps read each other in a circle: (a -> b -> a|b -> a -> b)"):
        _ordered([step("a", after=("b",)), step("b", after=("a",))])


def test_every_table_the_code_reads_by_name_is_declared_where_it_is_written():
    from pathlib import Path

    from ontogeny.analysis.analyze import ANALYSES
    from ontogeny.sae.run import TABLES as SAE_TABLES
    from ontogeny.store.schema import STREAMED, WRITER_TABLES

    declared = {*STREAMED, *WRITER_TABLES, *SAE_TABLES, *(t for n in ANALYSES.names() for t in ANALYSES.get(n).writes)}
    source = Path(og.__file__).parent
    read = {(path.relative_to(source).as_posix(), name) for path in source.rglob("*.py")
            for name in re.findall(r"""\.table\(["'](\w+)["']""", path.read_text())}
    assert len(read) > 20  # the report and the analyses read tables by name
    assert sorted(r for r in read if r[1] not in declared) == []


def test_a_step_that_writes_a_table_it_does_not_declare_is_refused(sweep_run):
    from ontogeny.analysis.analyze import ANALYSES, StepResult, analysis_step

    run = sweep_run
    try:
        @analysis_step("undeclared_table_step", writes=("declared",))
        def undeclared(context):
            return StepResult(tables={"declared": pd.DataFrame({"a": [1]}), "other": pd.DataFrame({"a": [1]})})

        with pytest.raises(ValueError, match=r"'undeclared_table_step' wrote \['other'\], which its writes= does not"):
            analyze(run, what=["undeclared_table_step"])
    finally:
        ANALYSES._kinds.pop("undeclared_table_step")
    assert "declared" not in run.tables()  # nothing written
