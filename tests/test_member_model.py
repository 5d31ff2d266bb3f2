"""One member out of an ensemble as a plain PyTorch model (`run.model`, `member_module`), and as a TransformerLens
HookedTransformer: the same outputs as the member inside the ensemble."""

import warnings

import pytest
import torch
from torch import nn

import ontogeny as og
from ontogeny.members import expand
from ontogeny.models import EnsembleMLP, EnsembleTransformer, MLPSpec, TransformerSpec
from ontogeny.tasks import make_task


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    return og.run("grokking", overrides=["task.p=23", "steps=60", "seeds=2", "record.weights_every=60",
                                          "sweep.model.width=[16,24]"], out=tmp_path_factory.mktemp("plain") / "run")


def _jiggle(model: nn.Module) -> None:
    """Non-trivial LayerNorm gains and biases (they start at 1 and 0, which would hide a mix-up)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.3 * torch.randn(param.shape, generator=generator))


def _close(ours: torch.Tensor, theirs: torch.Tensor) -> bool:
    """Equal up to float32 rounding, relative to the largest logit (the weights here give logits up to ~100)."""
    return torch.allclose(ours, theirs, rtol=1e-5, atol=1e-6 * max(1.0, theirs.abs().max().item()))


def _transformer(objective, layer_norm, activation="relu", members=3, vocab=11, outputs=11):
    spec = TransformerSpec(n_layers=2, d_model=16, n_heads=4, d_mlp=24, layer_norm=layer_norm, activation=activation)
    model = EnsembleTransformer(spec, vocab_size=vocab, n_positions=7, n_outputs=outputs, init_seeds=list(range(members)),
                                objective=objective, pad_token=0 if objective == "masked" else None)
    _jiggle(model)
    return model.eval()


def test_a_run_member_is_a_plain_model_with_the_recorded_loss(mlp_run):
    recorded = mlp_run.scalars(name="test/loss", step=60).set_index("member").value
    for member in range(4):  # both grid points of the width sweep, two seeds each
        model = mlp_run.model(member, 60)
        assert isinstance(model, nn.Sequential)
        assert all(type(layer).__module__.startswith(("torch.", "ontogeny.models.plain")) for layer in model)
        assert model[1].out_features == (16 if member < 2 else 24)
        spec = mlp_run.spec
        member_spec = expand(spec)[member]  # its own test split
        task = make_task([member_spec.spec.task], [member_spec.data_seed], spec.record.max_probe_examples)
        split = next(s for s in task.eval_splits() if s.name == "test")
        x, y = split.x[split.member_mask[0]], split.y[split.member_mask[0]]
        with torch.no_grad():
            loss = nn.functional.cross_entropy(model(x), y).item()
        assert loss == pytest.approx(recorded[member], rel=1e-5)


def test_a_member_equals_its_slice_of_the_ensemble_for_every_model_kind():
    tokens = torch.randint(1, 11, (5, 7), generator=torch.Generator().manual_seed(1))
    for objective in (None, "causal", "masked"):
        for layer_norm in (False, True):
            ensemble = _transformer(objective, layer_norm, "gelu" if layer_norm else "relu")
            with torch.no_grad():
                expected = ensemble(tokens)
                for index in range(3):
                    assert _close(ensemble.member_module(index)(tokens), expected[index])
    for spec, kwargs, x in ((MLPSpec(width=12, depth=3), {"vocab_size": 11, "n_positions": 7}, tokens),
                            (MLPSpec(width=12, depth=2, bias=False, activation="square"), {"n_inputs": 9},
                             torch.randn(5, 9))):
        ensemble = EnsembleMLP(spec, n_outputs=4, init_seeds=[0, 1, 2], **kwargs).eval()
        with torch.no_grad():
            expected = ensemble(x)
            for index in range(3):
                assert _close(ensemble.member_module(index)(x), expected[index])
    with pytest.raises(IndexError, match="member index 3 is outside the ensemble's 3 members"):
        ensemble.member_module(3)


def test_a_member_transformer_is_a_hooked_transformer_with_equal_logits():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TransformerLens and its dependencies warn on import
        from transformer_lens import HookedTransformer
    tokens = torch.randint(1, 11, (5, 7), generator=torch.Generator().manual_seed(2))
    for objective, layer_norm in ((None, False), ("causal", True), ("masked", True)):
        ensemble = _transformer(objective, layer_norm, outputs=5 if objective is None else 11)
        member = ensemble.member_module(1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hooked = member.as_hooked_transformer()
        assert isinstance(hooked, HookedTransformer)
        with torch.no_grad():
            logits, cache = hooked.run_with_cache(tokens)
            ours = member(tokens)
        assert _close(logits[:, -1] if objective is None else logits, ours)
        # TransformerLens's own hook points see the member's activations: the first MLP's hidden units
        with torch.no_grad():
            read = {}
            with ensemble.hooks({"mlp.0": lambda h: read.setdefault("mlp", h)}):
                ensemble(tokens)
        assert _close(cache["blocks.0.mlp.hook_post"], read["mlp"][1])


def test_bad_members_and_steps_are_refused_in_one_line(mlp_run):
    with pytest.raises(ValueError, match=r"no member 9 \(members 0..3\)"):
        mlp_run.model(9, 60)
    with pytest.raises(ValueError, match=r"members \[1\] have no weights saved at step 30"):
        mlp_run.model(1, 30)
