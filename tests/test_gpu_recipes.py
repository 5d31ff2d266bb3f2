"""The GPU recipes shrunk to a CPU test: the same files, in their precision (bf16), end to end through the analysis
the GPU session brings back (`benchmarks/gpu_session.sh`), so that the minutes a GPU is lent are not spent on a
setting that fails."""

import pytest

import ontogeny as og
from ontogeny.analysis import analyze

SHRINK = ["steps=30", "seeds=2", "record.every=10", "model.n_layers=1", "model.d_model=32", "model.n_heads=2",
          "model.d_mlp=64", "task.batch_size=16", "optim.warmup_steps=5"]
SMALL_DATA = {
    "hierarchy-gpu": ["task.n_train=300", "task.n_test=20", "task.n_gen=20", "record.max_probe_examples=20"],
    "syntax-gpu": ["task.n_train=300", "task.n_test=20", "task.n_probe=10", "task.n_pairs=10"],
}
WHAT = {"hierarchy-gpu": "rules", "syntax-gpu": "language"}


@pytest.mark.parametrize("recipe", sorted(SMALL_DATA))
def test_a_gpu_recipe_shrunk_runs_in_its_precision_and_its_analysis_reads_every_member(recipe, tmp_path):
    spec = og.load_spec(recipe)
    assert spec.precision == "bfloat16" and spec.seeds == tuple(range(16))
    run = og.run(recipe, overrides=[*SHRINK, *SMALL_DATA[recipe]], out=tmp_path / "run")
    members = run.members()
    assert (members.status == "ok").all() and len(members) == 2 * len(spec.grid())
    assert og.load_spec(tmp_path / "run" / "spec.toml").precision == "bfloat16"
    found = analyze(run, what=[WHAT[recipe]])
    table = found.tables["rule_members" if recipe == "hierarchy-gpu" else "language_structure"]
    assert set(table.member) == set(members.member)
    assert found.summary
