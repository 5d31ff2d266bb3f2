"""`precision = "bfloat16"`: matmuls in bf16 under autocast, float32 weights, gradients, losses and optimizer."""

import pytest
import torch

import ontogeny as og
from ontogeny.exceptions import SpecError
from ontogeny.members import expand
from ontogeny.spec import load_spec
from ontogeny.train.loop import EnsembleTrainer

from test_train import TINY_PARITY, final_weights, member_of

SMALL_TRANSFORMER = ["model.d_model=32", "model.n_heads=2", "model.d_mlp=64"]
CASES = {  # one per model path: shared-input MLP with a product-sum head, token MLP, transformer read at the
    # last position, causal LM, masked LM (which unembeds its scored tokens alone on a CPU)
    "sparse-parity": TINY_PARITY,
    "grokking": ["task.p=13", "model.width=24"],
    "grokking-nanda": ["task.p=13", *SMALL_TRANSFORMER],
    "icl-markov": SMALL_TRANSFORMER,
    "syntax-drops": [*SMALL_TRANSFORMER, "model.n_layers=2"],
}


def first_gradients(recipe: str, precision: str) -> dict[str, torch.Tensor]:
    spec = load_spec(recipe, [*CASES[recipe], "seeds=2", f"precision={precision}"])
    trainer = EnsembleTrainer(expand(spec))
    trainer._forward_backward(0, trainer.task.batch(0))
    return {name: p.grad for name, p in trainer.model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("recipe", list(CASES))
def test_bfloat16_gradients_are_float32_and_close_to_float32s(recipe):
    exact, mixed = first_gradients(recipe, "float32"), first_gradients(recipe, "bfloat16")
    assert exact.keys() == mixed.keys()
    errors = {name: float((mixed[name] - exact[name]).norm() / exact[name].norm()) for name in exact
              if exact[name].norm() > 0}
    assert all(g.dtype == torch.float32 for g in mixed.values())
    assert max(errors.values()) < 0.1, errors  # bf16 keeps 8 bits of mantissa: a few % here
    assert max(errors.values()) > 1e-4  # and it did run in bf16


def test_bfloat16_member_alone_equals_member_inside_an_ensemble_on_cpu(tmp_path):
    settings = [*TINY_PARITY, "precision=bfloat16"]
    big = og.run("sparse-parity", overrides=[*settings, "seeds=8"], out=tmp_path / "big")
    alone = og.run("sparse-parity", overrides=[*settings, "seeds=[5]"], out=tmp_path / "alone")
    inside, single = final_weights(big, member_of(big, init_seed=5)), final_weights(alone, 0)
    assert all(torch.equal(inside[name], single[name]) for name in single)
    assert all(w.dtype == torch.float32 for w in single.values())


def test_bfloat16_run_learns_as_float32_does(tmp_path):
    settings = ["task.p=13", "task.train_fraction=0.5", "model.width=24", "steps=300", "record.every=100", "seeds=2"]
    exact = og.run("grokking", overrides=settings, out=tmp_path / "fp32").scalars(name=["train/loss"])
    mixed = og.run("grokking", overrides=[*settings, "precision=bfloat16"], out=tmp_path / "bf16")
    mixed_loss = mixed.scalars(name=["train/loss"])
    assert mixed.spec.precision == "bfloat16"
    first, last = exact.step.min(), exact.step.max()
    for frame in (exact, mixed_loss):
        assert frame[frame.step == last].value.max() < 0.5 * frame[frame.step == first].value.min()
    end = [frame[frame.step == last].sort_values("member").value.to_numpy() for frame in (exact, mixed_loss)]
    assert abs(end[0] - end[1]).max() < 0.1 * end[0].max() + 0.02


def test_unknown_precision_is_refused():
    with pytest.raises(SpecError, match="precision.*float32, bfloat16.*'float16'"):
        load_spec("grokking", ["precision=float16"])
