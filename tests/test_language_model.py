"""The transformer on language tasks (outputs at every position, causal or bidirectional attention with padding),
against one member computed the obvious way; and the language probes against direct computation."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from ontogeny import TransformerSpec
from ontogeny.models.transformer import EnsembleTransformer
from ontogeny.evaluation import probes
from ontogeny.tasks import IGNORE
from ontogeny.tasks.language import attention_uas, dependency_relations, kl_from_references
from ontogeny.tasks.markov import in_context_references, sample_chains

VOCAB, POSITIONS, PAD = 9, 6, 0


def build(objective, seeds, layer_norm=True, n_layers=2, d_model=16):
    spec = TransformerSpec(d_model=d_model, n_heads=2, d_mlp=24, n_layers=n_layers, layer_norm=layer_norm)
    return EnsembleTransformer(spec, vocab_size=VOCAB, n_positions=POSITIONS, n_outputs=VOCAB, init_seeds=seeds,
                               objective=objective, pad_token=PAD)


def padded_tokens(seed=0, repeat=1):
    """Five sequences of lengths 6, 4, 2, 6, 3 (`repeat` times), right-padded with PAD."""
    x = torch.randint(1, VOCAB, (5 * repeat, POSITIONS), generator=torch.Generator().manual_seed(seed))
    for row, length in enumerate([6, 4, 2, 6, 3] * repeat):
        x[row, length:] = PAD
    return x


def reference(model, member, x, causal):
    """One member, head by head with an explicit softmax: logits [B, T, V] and patterns per layer [B, H, T, T]."""
    w = {name: p[member] for name, p in model.named_parameters()}
    batch, positions = x.shape
    n_heads = model.spec.n_heads
    allowed = torch.ones(batch, positions, positions, dtype=torch.bool)
    if causal:
        allowed &= torch.ones(positions, positions, dtype=torch.bool).tril()
    else:
        allowed &= (x != PAD)[:, None, :]  # no query reads padding

    def norm(h, prefix):
        return nn.functional.layer_norm(h, h.shape[-1:], w[prefix + "gain"], w[prefix + "bias"])

    resid = w["W_E"][x] + w["W_pos"][:positions]
    patterns = []
    for layer in range(model.spec.n_layers):
        p = {name.removeprefix(f"blocks.{layer}."): v for name, v in w.items()}.__getitem__
        h = nn.functional.layer_norm(resid, resid.shape[-1:], p("ln_attn_gain"), p("ln_attn_bias"))
        heads_out, layer_patterns = [], []
        for head in range(n_heads):
            cols = slice(head * 8, head * 8 + 8)
            q, k, v = h @ p("W_Q")[:, cols], h @ p("W_K")[:, cols], h @ p("W_V")[:, cols]
            scores = (q @ k.transpose(1, 2) / math.sqrt(8)).masked_fill(~allowed, float("-inf"))
            pattern = scores.softmax(-1)
            layer_patterns.append(pattern)
            heads_out.append(pattern @ v)
        patterns.append(torch.stack(layer_patterns, 1))
        resid = resid + torch.cat(heads_out, -1) @ p("W_O")
        h = nn.functional.layer_norm(resid, resid.shape[-1:], p("ln_mlp_gain"), p("ln_mlp_bias"))
        resid = resid + torch.relu(h @ p("W_in") + p("b_in")) @ p("W_out") + p("b_out")
    return norm(resid, "ln_final_") @ w["W_U"], patterns


def perturb_norms(model):
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "ln_" in name:
                param.add_(0.3 * torch.randn_like(param))


@pytest.mark.parametrize("objective", ["causal", "masked"])
def test_every_position_matches_reference(objective):
    model, x = build(objective, [0, 1, 2]), padded_tokens()
    perturb_norms(model)
    logits, patterns = model.forward_with_patterns(x)
    assert logits.shape == (3, 5, POSITIONS, VOCAB)
    torch.testing.assert_close(model(x), logits)  # the fused training path computes the same
    for member in range(3):
        want_logits, want_patterns = reference(model, member, x, causal=objective == "causal")
        torch.testing.assert_close(logits[member], want_logits, atol=1e-5, rtol=1e-5)
        for got, want in zip(patterns, want_patterns):
            torch.testing.assert_close(got[member], want, atol=1e-6, rtol=1e-5)
    # padding changes nothing at the real tokens: sequence 2 (length 2) alone, unpadded, gives the same outputs
    with torch.no_grad():
        torch.testing.assert_close(model(x[2:3, :2])[:, 0], logits[:, 2, :2].detach(), atol=1e-5, rtol=1e-5)
    if objective == "masked":  # and receives no attention
        assert all(float(p[:, 2, ..., 2:].detach().sum()) == 0 for p in patterns)


@pytest.mark.parametrize("objective", ["causal", "masked"])
def test_member_alone_equals_member_in_ensemble_bitwise(objective):
    # At these sizes every product takes MKL's path; a batch of a few rows of width 16 takes a small-matrix loop
    # whose result depends on the number of members (by 1 ulp), as the plain transformer always did.
    alone, together = build(objective, [7], d_model=32), build(objective, [3, 7, 11], d_model=32)
    x = padded_tokens(repeat=8)
    assert torch.equal(alone(x)[0], together(x)[1])
    per_member = torch.stack([padded_tokens(1, 8), x, padded_tokens(2, 8)])  # [M, B, T]: each member its own batch
    assert torch.equal(alone(x)[0], together(per_member)[1])


def test_language_loss_ignores_unscored_positions():
    logits = torch.randn(2, 3, 4, 5)
    y = torch.tensor([[1, 2, IGNORE, IGNORE], [0, IGNORE, 4, 3], [IGNORE] * 4])
    loss, correct = probes.example_losses("cross_entropy", logits, y)
    assert loss.shape == (2, 12)
    flat = y.flatten()
    assert torch.all(loss[:, flat == IGNORE] == 0) and not correct[:, flat == IGNORE].any()
    want = nn.functional.cross_entropy(logits[1, 0, 1][None], torch.tensor([2]))
    torch.testing.assert_close(loss[1, 1], want)


# ---- probes ---------------------------------------------------------------------------------------------------


def test_kl_from_references_by_hand():
    model = torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]]).log()  # [M=1, N=2, C=3]
    refs = {"a": torch.tensor([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])}
    want = (math.log(1 / 0.5) + sum(1 / 3 * math.log((1 / 3) / q) for q in (0.1, 0.1, 0.8))) / 2
    assert kl_from_references(model, refs)["kl/a"].item() == pytest.approx(want, rel=1e-6)


def test_uas_is_one_on_the_gold_parse_and_the_offset_baseline_on_an_offset():
    # two sentences with gold heads (-1: root, or padding past the length)
    heads = torch.tensor([[1, 2, -1, 2, 3], [2, 2, -1, -1, -1]])
    lengths = torch.tensor([5, 3])
    related = dependency_relations(heads)
    queries = torch.arange(5)[None] < lengths[:, None]
    positions = 5
    gold = torch.zeros(2, positions, positions)
    for s in range(2):
        for i in range(int(lengths[s])):
            target = int(heads[s, i]) if heads[s, i] >= 0 else int((heads[s] == i).nonzero()[0])  # root: a dependent
            gold[s, i, target] = 1.0
    offset = torch.zeros(2, positions, positions)
    offset[:, 0, 0] = 1.0
    for i in range(1, positions):
        offset[:, i, i - 1] = 1.0  # every token attends to the one before it
    pattern = torch.stack([gold, offset], dim=1)[None]  # [M=1, S, H=2, T, T]
    uas = attention_uas(pattern, related, queries)
    assert uas[0, 0].item() == 1.0
    # the previous token is related for: s0 tokens 1 (dep 0), 2 (dep 1), 3 (head 2), 4 (head 3); s1 token 1? its
    # head is 2, its previous token 0 is not related; token 2 (root) has dependent 1: related. 0-th tokens look at
    # themselves: never related. So 4 + 1 of 8 tokens.
    assert uas[0, 1].item() == pytest.approx(5 / 8)


def test_in_context_references_by_direct_counting():
    x = np.array([[0, 1, 0, 0, 2, 0]])
    refs = in_context_references(x, k=3, alpha=0.5)
    t = 4  # context 0 1 0 0 2, current state 2: no transition out of 2 seen yet
    np.testing.assert_allclose(refs["unigram"][0, t], [3 / 5, 1 / 5, 1 / 5])
    np.testing.assert_allclose(refs["bigram"][0, t], [1 / 3] * 3)
    np.testing.assert_allclose(refs["bayes"][0, t], [1 / 3] * 3)
    t = 5  # current state 0; transitions out of 0 seen so far: 0->1, 0->0, 0->2
    np.testing.assert_allclose(refs["bigram"][0, t], [1 / 3, 1 / 3, 1 / 3])
    t = 3  # context 0 1 0 0, current 0; transitions out of 0 before t: 0->1 (t=0..1), 0->0 (t=2..3)
    np.testing.assert_allclose(refs["bigram"][0, t], [1 / 2, 1 / 2, 0])
    np.testing.assert_allclose(refs["bayes"][0, t], [(1 + 0.5) / (2 + 1.5), (1 + 0.5) / (2 + 1.5), 0.5 / 3.5])
    np.testing.assert_allclose(refs["uniform"][0, 0], [1 / 3] * 3)
    # Edelman et al.'s add-one (rule of succession) unigram and bigram, by hand at t = 3: counts of states 0 1 0 0
    # are (3, 1, 0), transitions out of 0 seen are (1, 1, 0)
    np.testing.assert_allclose(refs["edelman_unigram"][0, 3], [(3 + 1) / 7, (1 + 1) / 7, 1 / 7])
    np.testing.assert_allclose(refs["edelman_bigram"][0, 3], [2 / 5, 2 / 5, 1 / 5])


def test_a_reference_scored_at_some_tokens_only():
    model = torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]]).log()  # [M=1, N=2, C=3]
    refs = {"a": torch.tensor([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])}
    last = kl_from_references(model, refs, {"a": torch.tensor([False, True])})["kl/a"].item()
    assert last == pytest.approx(sum(1 / 3 * math.log((1 / 3) / q) for q in (0.1, 0.1, 0.8)), rel=1e-6)


def test_markov_chains_follow_their_transition_matrices():
    states, transitions = sample_chains(k=3, alpha=1.0, n=400, length=400, seed=5)
    counts = np.zeros((400, 3, 3))
    np.add.at(counts, (np.arange(400)[:, None], states[:, :-1], states[:, 1:]), 1)
    empirical = counts.sum(0) / counts.sum((0, 2))[:, None]  # pooled over chains: the mean transition row
    expected = (transitions * counts.sum(2, keepdims=True)).sum(0) / counts.sum((0, 2))[:, None]
    np.testing.assert_allclose(empirical, expected, atol=0.01)
    assert np.array_equal(sample_chains(3, 1.0, 4, 10, seed=1)[0], sample_chains(3, 1.0, 4, 10, seed=1)[0])
