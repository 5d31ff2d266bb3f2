"""The reproducibility contract: a member's numbers depend only on its own seeds and hyperparameters."""

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import ontogeny as og
from ontogeny.members import expand
from ontogeny.train.loop import EnsembleTrainer

TINY_MODULAR = ["task.p=13", "task.train_fraction=0.5", "model.width=24", "steps=200",
                "record.every=50", "record.weights_every=100"]
TINY_PARITY = ["task.n=12", "task.k=3", "task.n_test=64", "task.batch_size=16", "model.width=16", "steps=200",
               "record.every=50"]


def final_weights(run, member: int) -> dict[str, torch.Tensor]:
    rows = run.checkpoints()
    row = rows[(rows.member == member)].sort_values("step").iloc[-1]
    return load_file(str(run.path / row.path))


def assert_same_weights(a: dict, b: dict, exact: bool = False) -> None:
    assert a.keys() == b.keys()
    for name in a:
        if exact:
            assert torch.equal(a[name], b[name]), name
        else:
            torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)


def member_of(run, **where) -> int:
    members = run.members()
    for key, value in where.items():
        members = members[members[key] == value]
    assert len(members) == 1
    return int(members.member.iloc[0])


def test_member_alone_equals_member_inside_an_ensemble_of_8(tmp_path):
    big = og.run("grokking", overrides=[*TINY_MODULAR, "seeds=8"], out=tmp_path / "big")
    alone = og.run("grokking", overrides=[*TINY_MODULAR, "seeds=[5]"], out=tmp_path / "alone")
    assert big.members().ensemble.nunique() == 1
    assert_same_weights(final_weights(big, member_of(big, init_seed=5)), final_weights(alone, 0), exact=True)


def test_member_alone_equals_member_inside_an_ensemble_sharing_its_batch(tmp_path):
    """Members of one data order share each batch (one [B, n] input for all, shared_input_matmul)."""
    big = og.run("sparse-parity", overrides=[*TINY_PARITY, "seeds=8"], out=tmp_path / "big")
    alone = og.run("sparse-parity", overrides=[*TINY_PARITY, "seeds=[5]"], out=tmp_path / "alone")
    assert_same_weights(final_weights(big, member_of(big, init_seed=5)), final_weights(alone, 0), exact=True)


def test_data_order_is_its_own_seed(tmp_path):
    big = og.run("sparse-parity", overrides=[*TINY_PARITY, "seeds=2", "data_orders=4"], out=tmp_path / "big")
    alone = og.run("sparse-parity", overrides=[*TINY_PARITY, "seeds=[1]", "data_orders=[2]"], out=tmp_path / "one")
    inside = member_of(big, init_seed=1, data_seed=2)
    assert_same_weights(final_weights(big, inside), final_weights(alone, 0), exact=True)
    other = member_of(big, init_seed=1, data_seed=3)
    assert not torch.equal(final_weights(big, inside)["w_in"], final_weights(big, other)["w_in"])


def test_same_spec_twice_is_bitwise_identical(tmp_path):
    first = og.run("grokking", overrides=[*TINY_MODULAR, "seeds=3"], out=tmp_path / "a")
    second = og.run("grokking", overrides=[*TINY_MODULAR, "seeds=3"], out=tmp_path / "b")
    pd.testing.assert_frame_equal(first.scalars(), second.scalars())
    pd.testing.assert_frame_equal(first.examples(), second.examples())
    assert list(first.checkpoints().sha256) == list(second.checkpoints().sha256)


def test_train_fractions_differ_inside_one_ensemble(tmp_path):
    sweep = og.run("grokking", overrides=[*TINY_MODULAR, "seeds=2", "sweep.task.train_fraction=[0.3, 0.6]"],
                   out=tmp_path / "sweep")
    members = sweep.members()
    assert members.ensemble.nunique() == 1 and len(members) == 4
    alone = og.run("grokking", overrides=[*TINY_MODULAR, "seeds=[1]", "task.train_fraction=0.6"],
                   out=tmp_path / "alone")
    inside = member_of(sweep, init_seed=1, **{"task.train_fraction": 0.6})
    assert_same_weights(final_weights(sweep, inside), final_weights(alone, 0))
    examples = sweep.examples(step=0, split="train")
    counts = examples.groupby("member").size()
    assert counts[member_of(sweep, init_seed=0, **{"task.train_fraction": 0.3})] == round(0.3 * 169)
    assert counts[inside] == round(0.6 * 169)


def test_a_diverging_member_is_frozen_and_the_others_go_on_bit_for_bit(tmp_path):
    mixed = og.run("grokking", overrides=[*TINY_MODULAR, "seeds=[0]", "sweep.optim.lr=[0.01, 1e30]"],
                   out=tmp_path / "mixed")
    alone = og.run("grokking", overrides=[*TINY_MODULAR, "seeds=[0]", "optim.lr=0.01"], out=tmp_path / "alone")
    members = mixed.members().set_index("member")
    bad = member_of(mixed, **{"optim.lr": 1e30})
    good = member_of(mixed, **{"optim.lr": 0.01})
    assert members.loc[bad, "status"] == "diverged" and members.loc[bad, "diverged_step"] >= 1
    assert members.loc[good, "status"] == "ok"
    assert_same_weights(final_weights(mixed, good), final_weights(alone, 0), exact=True)
    frozen = mixed.checkpoints()
    frozen = frozen[frozen.member == bad].sort_values("step")
    first, last = (load_file(str(mixed.path / p)) for p in frozen.path.iloc[[-2, -1]])
    weights = [k for k in first if not k.startswith("preconditioner.")]  # the optimizer's state is not frozen
    assert all(torch.equal(first[k], last[k]) or torch.isnan(first[k]).any() for k in weights)


def test_records_every_checkpoint_member_and_example(tmp_path):
    run = og.run("grokking", overrides=[*TINY_MODULAR, "seeds=2"], out=tmp_path / "r")
    steps = sorted(run.scalars(name="test/acc").step.unique())
    assert steps[0] == 0 and steps[-1] == 200 and 100 in steps
    examples = run.examples(step=200)
    assert len(examples) == 2 * 169  # every example of the 13 x 13 table, for both members
    per_member = examples.groupby(["member", "split"]).size().unstack()
    assert (per_member["train"] == round(0.5 * 169)).all()
    acc = run.scalars(name="train/acc", step=200).set_index("member").value
    from_examples = examples[examples.split == "train"].groupby("member").correct.mean()
    np.testing.assert_allclose(acc.sort_index().values, from_examples.sort_index().values)
    names = set(run.scalars().name)
    assert {"grad_norm", "weight_norm", "weight_norm/embed", "lr", "train/loss", "test/loss"} <= names


def test_the_gpu_step_freezes_a_diverging_member_as_the_cpu_step_does(tmp_path, monkeypatch):
    """The step a GPU takes (never asking the device whether a member diverged) gives the same run."""
    settings = [*TINY_MODULAR, "seeds=[0]", "sweep.optim.lr=[0.01, 1e30]"]
    asked = og.run("grokking", overrides=settings, out=tmp_path / "asked")
    monkeypatch.setattr(EnsembleTrainer, "sync_free", True)
    masked = og.run("grokking", overrides=settings, out=tmp_path / "masked")
    pd.testing.assert_frame_equal(asked.members(), masked.members())
    assert asked.members().status.tolist().count("diverged") == 1
    for member in (0, 1):
        assert_same_weights(final_weights(asked, member), final_weights(masked, member), exact=True)


@pytest.mark.parametrize("recipe", ["sparse-parity", "grokking", "grokking-nanda", "icl-markov", "syntax-drops"])
def test_a_training_step_never_waits_for_the_device(recipe):
    """On the meta device every read of a value (.item(), bool(), .tolist()) raises: a step with clipping and a
    frozen member runs there without one (autocast has no meta device)."""
    spec = og.load_spec(recipe, ["seeds=2", "optim.grad_clip=1.0"])
    trainer = EnsembleTrainer(expand(spec), device="meta")
    trainer.active[0] = False
    trainer.time_steps(2)
    with pytest.raises(RuntimeError, match="meta"):
        bool(trainer.active.all())  # what the CPU step asks
