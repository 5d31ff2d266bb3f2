"""EnsembleTransformer against a plain single-model transformer written the obvious way, plus the ensemble contract."""

import math

import pytest
import torch
from torch import nn

from ontogeny.models.transformer import EnsembleTransformer
from ontogeny import TransformerSpec

VOCAB, POSITIONS, OUTPUTS = 11, 3, 7


def small_spec(**changes) -> TransformerSpec:
    return TransformerSpec(**{"d_model": 24, "n_heads": 3, "d_mlp": 32, **changes})


def build(spec: TransformerSpec, seeds: list[int], scales: list[float] | None = None) -> EnsembleTransformer:
    return EnsembleTransformer(spec, vocab_size=VOCAB, n_positions=POSITIONS, n_outputs=OUTPUTS,
                               init_seeds=seeds, init_scales=scales)


def tokens(batch: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randint(VOCAB, (batch, POSITIONS), generator=torch.Generator().manual_seed(seed))  # [B, T]


def member_weights(model: EnsembleTransformer, member: int) -> dict[str, torch.Tensor]:
    return {name: param[member] for name, param in model.named_parameters()}


def reference(spec: TransformerSpec, w: dict[str, torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, list]:
    """One member, the obvious way: full causal attention at every position, then the last position's logits."""
    n_heads, (batch, positions) = spec.n_heads, x.shape

    def norm(h, params, prefix):
        if not spec.layer_norm:
            return h
        return nn.functional.layer_norm(h, h.shape[-1:], params[prefix + "gain"], params[prefix + "bias"])

    def heads(h):  # [B, T, d] -> [B, H, T, dh]
        return h.view(batch, positions, n_heads, -1).transpose(1, 2)

    resid = w["W_E"][x] + w["W_pos"][:positions]  # [B, T, d]
    patterns = []
    for layer in range(spec.n_layers):
        p = {name.removeprefix(f"blocks.{layer}."): v for name, v in w.items() if name.startswith(f"blocks.{layer}.")}
        h = norm(resid, p, "ln_attn_")
        q, k, v = heads(h @ p["W_Q"]), heads(h @ p["W_K"]), heads(h @ p["W_V"])
        mixed = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)  # [B, H, T, dh]
        scores = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).masked_fill(
            torch.ones(positions, positions, dtype=torch.bool).triu(1), float("-inf"))
        patterns.append(scores.softmax(-1))  # [B, H, T, T]
        resid = resid + mixed.transpose(1, 2).reshape(batch, positions, -1) @ p["W_O"]
        hidden = torch.relu(norm(resid, p, "ln_mlp_") @ p["W_in"] + p["b_in"])
        resid = resid + hidden @ p["W_out"] + p["b_out"]
    return (norm(resid, w, "ln_final_") @ w["W_U"])[:, -1], patterns  # [B, n_outputs]


@pytest.mark.parametrize("layer_norm", [False, True])
@pytest.mark.parametrize("n_layers", [1, 2])
def test_matches_reference_per_member(layer_norm, n_layers):
    spec = small_spec(layer_norm=layer_norm, n_layers=n_layers)
    model, x = build(spec, [0, 1, 2]), tokens()
    if layer_norm:  # gains 1 and biases 0 at init would hide a misplaced gain or bias
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "ln_" in name:
                    param.add_(0.3 * torch.randn_like(param))
    logits = model(x)
    assert logits.shape == (3, 5, OUTPUTS)
    for member in range(3):
        expected, _ = reference(spec, member_weights(model, member), x)
        torch.testing.assert_close(logits[member], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layer_norm", [False, True])
def test_member_does_not_depend_on_ensemble(layer_norm):
    spec = small_spec(layer_norm=layer_norm, n_layers=2)
    alone, together, x = build(spec, [7], [2.0]), build(spec, [3, 7, 11], [1.0, 2.0, 0.5]), tokens()
    for (name, a), (_, b) in zip(alone.named_parameters(), together.named_parameters()):
        assert torch.equal(a[0], b[1]), name
    torch.testing.assert_close(alone(x)[0], together(x)[1])


@pytest.mark.parametrize("layer_norm", [False, True])
def test_first_layer_from_tables_matches_reference_with_its_gradients(layer_norm):
    """A batch of more sequences than the vocabulary has tokens takes the first layer's queries, keys and values
    from per-(token, position) tables: the same logits and the same gradients for every weight."""
    spec = small_spec(layer_norm=layer_norm, n_layers=2)
    model, x = build(spec, [0, 1, 2]), tokens(batch=40)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "ln_" in name:
                param.add_(0.3 * torch.randn_like(param))
    target = torch.arange(40) % OUTPUTS
    for x_members in (x, x.expand(3, -1, -1)):  # shared tokens and each member's own
        model.zero_grad()
        logits = model(x_members)
        sum(nn.functional.cross_entropy(logits[m], target) for m in range(3)).backward()
        for member in range(3):
            weights = {name: w.detach().clone().requires_grad_() for name, w in member_weights(model, member).items()}
            expected, _ = reference(spec, weights, x)
            torch.testing.assert_close(logits[member], expected, atol=1e-5, rtol=1e-5)
            nn.functional.cross_entropy(expected, target).backward()
            for name, param in model.named_parameters():
                torch.testing.assert_close(param.grad[member], weights[name].grad, atol=1e-5, rtol=1e-4, msg=name)


def test_gradients_stay_in_their_member():
    model, x = build(small_spec(layer_norm=True, n_layers=2), [0, 1, 2]), tokens()
    loss = nn.functional.cross_entropy(model(x)[0], torch.arange(5) % OUTPUTS)
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad[0].abs().sum() > 0, name
        assert torch.count_nonzero(param.grad[1:]) == 0, name


def test_shared_and_per_member_tokens_agree():
    model, x = build(small_spec(n_layers=2), [0, 1, 2, 3]), tokens()
    torch.testing.assert_close(model(x), model(x.expand(4, -1, -1)))


def test_attention_patterns():
    spec = small_spec(n_layers=2)
    model, x = build(spec, [0, 1]), tokens()
    patterns = model.attention_patterns(x)
    assert len(patterns) == 2
    for pattern in patterns:
        assert pattern.shape == (2, 5, spec.n_heads, POSITIONS, POSITIONS)
        torch.testing.assert_close(pattern.sum(-1), torch.ones(2, 5, spec.n_heads, POSITIONS))
        assert torch.all(pattern.triu(1) == 0)
    for member in range(2):  # the same patterns a plain model computes
        _, expected = reference(spec, member_weights(model, member), x)
        for pattern, want in zip(patterns, expected):
            torch.testing.assert_close(pattern[member], want)
    # The training path (last layer queried at the last position only, fused attention) computes the same thing.
    resid, used = model._run(x, last_only=True, with_patterns=True)
    torch.testing.assert_close(model._unembed(resid), model(x))
    assert used[-1].shape == (2, 5, spec.n_heads, 1, POSITIONS)
    torch.testing.assert_close(used[-1], patterns[-1][..., -1:, :])
    torch.testing.assert_close(used[0], patterns[0])


def test_init_scale_scales_weights():
    spec = small_spec()
    model = build(spec, [5, 5], [1.0, 3.0])  # the same seed twice: identical draws, different scales
    for name, param in model.named_parameters():
        if name.startswith("W_") or ".W_" in name:
            torch.testing.assert_close(param[1], 3.0 * param[0])
        else:
            assert torch.count_nonzero(param) == 0, name  # biases start at 0
    wide = build(small_spec(d_model=64, n_heads=4, d_mlp=256), [0, 1], [1.0, 0.25])
    torch.testing.assert_close(wide.blocks[0].W_out.std(dim=(1, 2)), torch.tensor([1.0, 0.25]) / 16, rtol=0.05, atol=0)
    assert torch.equal(build(small_spec(init_scale=2.0), [0]).init_scales, torch.tensor([2.0]))
    with pytest.raises(ValueError, match="init_scales"):
        build(spec, [0, 1], [1.0])
