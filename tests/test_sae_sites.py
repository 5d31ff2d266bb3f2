"""Activation sites for SAEs and transcoders: collected rows against each member computed by hand from its weights,
spliced-in losses against the loss of model(x) (identity) and of hand-edited models (zero), member independence."""

import copy
import math
import zlib
from functools import cache

import pytest
import torch
from torch import nn

from ontogeny import TransformerSpec
from ontogeny.models import make_model
from ontogeny.models.transformer import EnsembleTransformer
from ontogeny.sae import sites
from ontogeny.sae.sites import collect, default_site, downstream_loss, row_index, site_names
from ontogeny.spec import load_spec
from ontogeny.tasks import IGNORE, make_task

RECIPES = {  # tiny versions of the recipes: name -> (recipe, overrides)
    "mlp-tokens": ("grokking", ["task.p=7", "model.width=8", "model.depth=2", "model.bias=true",
                                "model.activation=relu"]),
    "mlp-square": ("grokking", ["task.p=7", "model.width=8"]),  # the recipe's own: square, no bias, one layer
    "mlp-hinge": ("sparse-parity", ["task.n=10", "task.n_test=60", "model.width=8", "model.depth=2"]),
    "classifier": ("grokking-nanda", ["task.p=11", "model.d_model=16", "model.d_mlp=24", "model.n_layers=2",
                                      "model.layer_norm=true"]),
    "classifier-nanda": ("grokking-nanda", ["task.p=11", "model.d_model=16", "model.d_mlp=24"]),
    "masked": ("syntax-drops", ["task.n_train=200", "task.n_test=24", "task.n_probe=10", "task.n_pairs=10",
                                "model.d_model=16", "model.d_mlp=24", "model.n_heads=2"]),
    "causal": ("icl-markov", ["task.length=8", "model.d_model=16", "model.d_mlp=24"]),
}
PAD = 0


def close(actual, expected):  # float32 sums in another order than the hand computation's
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)


@cache
def _task(case: str, n_members: int):
    recipe, overrides = RECIPES[case]
    spec = load_spec(recipe, overrides)
    task = make_task([spec.task] * n_members, [0] * n_members, spec.record.max_probe_examples)
    split = task.eval_splits()[0]
    return spec, task, split.x, split.y


def build(case: str, seeds=(0, 1, 2)):
    """(model, loss kind, x, y) with every weight, bias and LayerNorm gain perturbed (so none is trivially 0 or 1)."""
    if case == "causal-padded":
        return _causal_padded(seeds)
    spec, task, x, y = _task(case, len(seeds))
    model = make_model(spec.model, task, list(seeds))
    _perturb(model, seeds)
    return model, task.loss, x, y


def _perturb(model, seeds):
    with torch.no_grad():
        for name, param in model.named_parameters():
            for index, seed in enumerate(seeds):  # each member's noise depends on its own seed alone
                gen = torch.Generator().manual_seed(1000 * seed + zlib.crc32(name.encode()))
                param[index] += 0.3 * torch.randn(param.shape[1:], generator=gen)


def _causal_padded(seeds):
    """A causal LM on right-padded sequences, its targets the next token (IGNORE past each sequence's end)."""
    spec = TransformerSpec(d_model=16, n_heads=2, d_mlp=24, n_layers=2, layer_norm=True, activation="gelu")
    model = EnsembleTransformer(spec, vocab_size=9, n_positions=6, n_outputs=9, init_seeds=list(seeds),
                                objective="causal", pad_token=PAD)
    _perturb(model, seeds)
    x = torch.randint(1, 9, (5, 6), generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([6, 4, 2, 6, 3])
    x[torch.arange(6) >= lengths[:, None]] = PAD
    y = torch.cat([x[:, 1:], torch.full((5, 1), PAD)], 1)
    y[(torch.arange(6) >= lengths[:, None] - 1)] = IGNORE
    return model, "cross_entropy", x, y


def keep_of(model, x):
    """[B, T] the positions that are rows (not padding)."""
    return torch.ones_like(x, dtype=torch.bool) if model.pad_token is None else x != model.pad_token


def mlp_by_hand(model, member, x):
    """One MLP member layer by layer with plain ops: [(layer input, activations)] and logits."""
    w = {name: p[member] for name, p in model.named_parameters()}
    act = {"relu": torch.relu, "square": torch.square}[model.spec.activation]
    h = nn.functional.one_hot(x, model.vocab_size).flatten(1).float() if model.vocab_size else x
    weights = [w["embed"].flatten(0, 1) if model.vocab_size else w["w_in"]]
    weights += [w[f"hidden.{i}"] for i in range(model.spec.depth - 1)]
    biases = [w.get("b_in")] + [w.get(f"hidden_bias.{i}") for i in range(model.spec.depth - 1)]
    layers = []
    for weight, bias in zip(weights, biases):
        out = act(h @ weight + (0 if bias is None else bias))
        layers.append((h, out))
        h = out
    return layers, h @ w["w_out"] + w.get("b_out", 0)


def transformer_by_hand(model, member, x):
    """One transformer member head by head with an explicit softmax, at every position: per layer a dict of the
    MLP's normalized input, hidden activations and output, and the residual stream after the block [B, T, .]."""
    w = {name: p[member] for name, p in model.named_parameters()}
    spec, (batch, positions) = model.spec, x.shape
    head_width = spec.d_model // spec.n_heads
    act = torch.relu if spec.activation == "relu" else nn.functional.gelu
    if model.objective == "masked":
        allowed = keep_of(model, x)[:, None, :].expand(batch, positions, positions)  # no query reads padding
    else:
        allowed = torch.ones(positions, positions, dtype=torch.bool).tril()

    def norm(h, prefix):
        gain = w.get(prefix + "gain")
        return h if gain is None else nn.functional.layer_norm(h, h.shape[-1:], gain, w[prefix + "bias"])

    resid, layers = w["W_E"][x] + w["W_pos"][:positions], []
    for layer in range(spec.n_layers):
        p = {name.removeprefix(f"blocks.{layer}."): value for name, value in w.items()}.__getitem__
        h, heads = norm(resid, f"blocks.{layer}.ln_attn_"), []
        for head in range(spec.n_heads):
            cols = slice(head * head_width, (head + 1) * head_width)
            q, k, v = h @ p("W_Q")[:, cols], h @ p("W_K")[:, cols], h @ p("W_V")[:, cols]
            scores = (q @ k.transpose(1, 2) / math.sqrt(head_width)).masked_fill(~allowed, float("-inf"))
            heads.append(scores.softmax(-1) @ v)
        resid = resid + torch.cat(heads, -1) @ p("W_O")
        mlp_in = norm(resid, f"blocks.{layer}.ln_mlp_")
        hidden = act(mlp_in @ p("W_in") + p("b_in"))
        mlp_out = hidden @ p("W_out") + p("b_out")
        resid = resid + mlp_out
        layers.append({"mlp_in": mlp_in, "hidden": hidden, "mlp_out": mlp_out, "resid": resid})
    return layers


def loss_of_logits(kind, logits, y):
    """Each member's mean loss [M] from logits [M, B, C] or [M, B, T, C], the obvious way."""
    if kind == "hinge":
        return torch.relu(1 - y * logits[..., 0]).mean(-1)
    return torch.stack([nn.functional.cross_entropy(out.flatten(0, -2), y.flatten(), ignore_index=IGNORE)
                        for out in logits])


@pytest.mark.parametrize("case", ["mlp-tokens", "mlp-square", "mlp-hinge"])
def test_mlp_sites_match_hand_computation(case):
    model, _, x, _ = build(case)
    depth = model.spec.depth
    assert site_names(model) == [name for i in range(depth) for name in (f"hidden_in.{i}", f"hidden.{i}")] + ["hidden"]
    assert default_site(model) == "hidden"
    inputs, targets = collect(model, x, "hidden")
    assert inputs is targets and torch.equal(targets, collect(model, x, f"hidden.{depth - 1}")[1])
    example, position = row_index(model, x)
    assert torch.equal(example, torch.arange(len(x))) and position is None
    for member in range(3):
        layers, logits = mlp_by_hand(model, member, x)
        torch.testing.assert_close(logits, model(x)[member])
        for i, (layer_input, activations) in enumerate(layers):
            torch.testing.assert_close(collect(model, x, f"hidden.{i}")[1][member], activations)
            inputs, targets = collect(model, x, f"hidden.{i}", transcoder=True)
            torch.testing.assert_close(inputs[member], layer_input)  # one-hot tokens / features / previous layer
            torch.testing.assert_close(collect(model, x, f"hidden_in.{i}")[1][member], layer_input)
            torch.testing.assert_close(targets[member], activations)
            assert inputs.dtype == targets.dtype == torch.float32 and inputs.is_contiguous()


@pytest.mark.parametrize("case", ["classifier", "classifier-nanda", "masked", "causal-padded"])
def test_transformer_sites_match_hand_computation(case):
    model, _, x, _ = build(case)
    n_layers, keep = model.spec.n_layers, keep_of(model, x)
    kinds = ("mlp_in", "mlp", "mlp_out", "resid")
    assert site_names(model) == [f"{k}.{i}" for i in range(n_layers) for k in kinds] + ["resid_final", "resid", "mlp"]
    assert default_site(model) == "resid"
    if model.pad_token is not None:
        assert not keep.all()  # the padding is really left out
    example, position = row_index(model, x)
    assert torch.equal(keep[example, position], torch.ones(len(example), dtype=torch.bool))
    assert len(example) == keep.sum() and (example * x.shape[1] + position).diff().gt(0).all()  # row-major order
    collected = {site: collect(model, x, site) for site in site_names(model)}
    transcoded = {layer: collect(model, x, f"mlp.{layer}", transcoder=True) for layer in range(n_layers)}
    for member in range(3):
        for layer, by_hand in enumerate(transformer_by_hand(model, member, x)):
            close(collected[f"resid.{layer}"][0][member], by_hand["resid"][example, position])
            close(collected[f"mlp.{layer}"][0][member], by_hand["hidden"][example, position])
            close(transcoded[layer][0][member], by_hand["mlp_in"][example, position])
            close(transcoded[layer][1][member], by_hand["mlp_out"][example, position])
            close(collected[f"mlp_in.{layer}"][0][member], by_hand["mlp_in"][example, position])
            close(collected[f"mlp_out.{layer}"][0][member], by_hand["mlp_out"][example, position])
    close(collected["resid"][0], collected[f"resid.{n_layers - 1}"][0])
    final = collected["resid_final"][0]  # after the final LayerNorm: W_U maps it to the logits at every position
    if model.objective is not None:
        close(torch.bmm(final, model.W_U), model(x)[:, example, position])
    close(collected["mlp"][0], collected[f"mlp.{n_layers - 1}"][0])
    for layer, block in enumerate(model.blocks):  # a transcoder's target is the MLP's output of the collected hidden
        hidden = collected[f"mlp.{layer}"][0]
        close(transcoded[layer][1], torch.bmm(hidden, block.W_out) + block.b_out[:, None])
    assert not model.hooked and not any(site.active for site in model.sites())  # no hook stays behind


@pytest.mark.parametrize("case", ["classifier", "masked", "causal", "causal-padded"])
def test_last_residual_stream_unembeds_to_the_logits(case):
    model, _, x, _ = build(case)
    rows, keep = collect(model, x, "resid")[0], keep_of(model, x)
    resid = torch.zeros(3, *x.shape, model.spec.d_model)
    resid[:, keep] = rows
    logits = model._unembed(resid)
    expected = model(x)
    if model.objective is not None:  # compare where there are rows
        logits, expected = logits[:, keep], expected[:, keep]
    torch.testing.assert_close(logits, expected)


def _cases():
    for case in ["mlp-tokens", "mlp-square", "mlp-hinge", "classifier", "masked", "causal", "causal-padded"]:
        yield case, "hidden.0" if case.startswith("mlp") else "resid.0", False
        yield case, "hidden" if case.startswith("mlp") else "mlp.0", True
        if not case.startswith("mlp"):
            yield case, "mlp", False


def perfect(model, x, site, transcoder, shift=0.0):
    """A replacement that gives back the site's own rows (a transcoder's: the layer's true output for the input rows
    it is given, looked up in collect's pairs), plus `shift` along a non-constant direction."""
    inputs, targets = collect(model, x, site, transcoder=transcoder)
    direction = torch.linspace(0, 1, targets.shape[-1]) * shift

    def replace(rows):  # rows [M, r, d_in]: a chunk of collect's inputs, in order
        match = (rows[:, :, None, :] == inputs[:, None, :, :]).all(-1).all(0)  # [r, R]
        assert match.any(1).all(), "replace was not given the site's (or the layer's input) rows"
        return targets[:, match.float().argmax(1)] + direction
    return replace


@pytest.mark.parametrize("case, site, transcoder", list(_cases()))
def test_identity_replacement_gives_the_clean_loss(case, site, transcoder):
    model, kind, x, y = build(case)
    with torch.no_grad():
        clean = loss_of_logits(kind, model(x), y)  # [M]
    assert torch.isfinite(clean).all()
    torch.testing.assert_close(downstream_loss(model, kind, x, y, site, transcoder=transcoder), clean)
    replaced = downstream_loss(model, kind, x, y, site, perfect(model, x, site, transcoder), transcoder=transcoder)
    torch.testing.assert_close(replaced, clean)
    # the replacement really reaches the loss (a shift along a non-constant direction: LayerNorm removes a constant)
    shifted = downstream_loss(model, kind, x, y, site, perfect(model, x, site, transcoder, shift=1.0),
                              transcoder=transcoder)
    assert (shifted - clean).abs().min() > 1e-4


def mapping(model, x, site, transcoder):
    """A fixed row-wise map from the rows replace is given to rows of the site's (a transcoder's output's) width."""
    inputs, targets = collect(model, x, site, transcoder=transcoder)
    project = torch.randn(inputs.shape[-1], targets.shape[-1], generator=torch.Generator().manual_seed(0))
    return lambda rows: torch.tanh(rows @ project) * 0.5


@pytest.mark.parametrize("case", ["mlp-tokens", "mlp-hinge"])
def test_zero_mlp_activations_give_the_loss_of_the_biases(case):
    model, kind, x, y = build(case)
    w_out, b_out = model.w_out, model.b_out  # [M, W, C], [M, C]
    zero = downstream_loss(model, kind, x, y, "hidden", torch.zeros_like)
    torch.testing.assert_close(zero, loss_of_logits(kind, b_out[:, None].expand(3, len(x), -1), y))
    # hidden.0 zeroed: the second layer sees act(0 @ W + b) = relu(b) for every example
    after = torch.relu(model.hidden_bias[0])  # [M, W]
    logits = (torch.bmm(after[:, None], w_out) + b_out[:, None]).expand(3, len(x), -1)
    torch.testing.assert_close(downstream_loss(model, kind, x, y, "hidden.0", torch.zeros_like),
                               loss_of_logits(kind, logits, y))


@pytest.mark.parametrize("case", ["classifier", "masked", "causal-padded"])
def test_zero_transformer_activations_match_hand_edited_models(case):
    model, kind, x, y = build(case)
    # the last residual stream zeroed: LayerNorm(0) is its bias, so every scored position has logits bias @ W_U
    constant = torch.bmm(model.ln_final_bias[:, None], model.W_U)  # [M, 1, C]
    logits = constant.expand(3, y.numel() if model.objective else len(x), -1)
    scored = y.flatten() if model.objective else y
    torch.testing.assert_close(downstream_loss(model, kind, x, y, "resid", torch.zeros_like),
                               loss_of_logits(kind, logits, scored))
    for layer in range(model.spec.n_layers):
        no_mlp = copy.deepcopy(model)
        with torch.no_grad():
            no_mlp.blocks[layer].W_out.zero_()  # zero hidden activations: the MLP adds b_out alone
            expected = loss_of_logits(kind, no_mlp(x), y)
            torch.testing.assert_close(downstream_loss(model, kind, x, y, f"mlp.{layer}", torch.zeros_like), expected)
            no_mlp.blocks[layer].b_out.zero_()  # a transcoder's zero output: the MLP adds nothing
            expected = loss_of_logits(kind, no_mlp(x), y)
        torch.testing.assert_close(downstream_loss(model, kind, x, y, f"mlp.{layer}", torch.zeros_like,
                                                   transcoder=True), expected)


@pytest.mark.parametrize("case, site, transcoder", [("mlp-tokens", "hidden.0", True), ("mlp-hinge", "hidden", False),
                                                    ("classifier", "resid.0", False), ("masked", "mlp.1", True),
                                                    ("causal-padded", "mlp.0", False)])
def test_a_member_does_not_depend_on_the_others(case, site, transcoder):
    together, kind, x, y = build(case, seeds=(0, 1, 2))
    alone = build(case, seeds=(1,))[0]

    replace = mapping(together, x, site, transcoder)
    for first, second in zip(collect(together, x, site, transcoder=transcoder),
                             collect(alone, x, site, transcoder=transcoder)):
        torch.testing.assert_close(first[1], second[0])
    torch.testing.assert_close(downstream_loss(together, kind, x, y, site, replace, transcoder=transcoder)[1:2],
                               downstream_loss(alone, kind, x, y, site, replace, transcoder=transcoder))


@pytest.mark.parametrize("case, site, transcoder", [("mlp-tokens", "hidden.0", True), ("masked", "resid.0", False),
                                                    ("causal-padded", "mlp", True)])
def test_chunks_of_examples_give_the_whole_batch_result(case, site, transcoder, monkeypatch):
    model, kind, x, y = build(case)
    whole, replace = collect(model, x, site, transcoder=transcoder), mapping(model, x, site, transcoder)
    loss = downstream_loss(model, kind, x, y, site, replace, transcoder=transcoder)
    monkeypatch.setattr(sites, "CHUNK_FLOATS", 1)  # one example per chunk
    for first, second in zip(whole, collect(model, x, site, transcoder=transcoder)):
        torch.testing.assert_close(first, second)
    torch.testing.assert_close(downstream_loss(model, kind, x, y, site, replace, transcoder=transcoder), loss)


def test_bad_input_fails_with_one_line():
    mlp, kind, x, y = build("mlp-tokens")
    transformer, _, tokens, labels = build("classifier")
    failures = [
        (lambda: collect(transformer, tokens, "mlp.7"), "unknown site 'mlp.7' .*: mlp_in.0, mlp.0, mlp_out.0, resid.0"),
        (lambda: collect(mlp, x, "resid"), "unknown site 'resid' for this EnsembleMLP; its sites: hidden_in.0"),
        (lambda: collect(transformer, tokens, "resid.1", transcoder=True), "site 'resid.1' is no MLP"),
        (lambda: collect(mlp, x[None], "hidden"), "x must be the inputs"),
        (lambda: collect(mlp, x[:0], "hidden"), r"x must be the inputs .*N >= 1\), got shape \(0, 3\)"),
        (lambda: downstream_loss(mlp, kind, x, y, "hidden", lambda rows: rows[:, :-1]), "replace returned shape"),
        (lambda: downstream_loss(transformer, kind, tokens, labels, "mlp.0", lambda rows: rows[:, :-1],
                                 transcoder=True),
         r"replace returned shape \(3, 362, 16\) for rows of shape \(3, 363, 16\)"),
        (lambda: site_names(nn.Linear(2, 2)), "activation sites exist for models that declare them"),
    ]
    for call, message in failures:
        with pytest.raises(ValueError, match=message) as error:
            call()
        assert "\n" not in str(error.value)
    assert not transformer.hooked and not any(site.active for site in transformer.sites())
