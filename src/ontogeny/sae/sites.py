"""Activation sites of the ensemble models, for sparse autoencoders and transcoders (`ontogeny sae`).

A site names activations that every member computes: an MLP's `hidden.<i>` (hidden layer i after its activation
function), a transformer's `resid.<l>` (the residual stream after block l) and `mlp.<l>` (block l's MLP hidden
activations); `hidden`, `resid` and `mlp` name the last layer's. `collect` reads a site as rows [M, R, d]: one per
example for an MLP, one per (example, position) not holding padding for a transformer. `downstream_loss` gives each
member's task loss with the site's rows replaced, e.g. by an SAE's reconstructions (the "spliced-in" loss).
A transcoder maps a layer's input to its output: an MLP layer's input (for the first layer the one-hot tokens laid
end to end, or the float features) to its activations; a transformer MLP's normalized input to its output
(hidden @ W_out + b_out).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch import Tensor, nn

from ..models.layers import shared_input_matmul
from ..models.mlp import EnsembleMLP
from ..models.transformer import EnsembleTransformer
from ..record.probes import example_losses
from ..tasks.base import IGNORE

CHUNK_FLOATS = 1 << 23  # activations one forward chunk may hold (32 MiB): examples run in chunks of this size

Replace = Callable[[Tensor], Tensor]  # rows [M, R, d] -> their replacement [M, R, d]


def site_names(model: nn.Module) -> list[str]:
    """Every site of `model`, layer by layer, with the aliases of the last layer's (`hidden`, `resid`, `mlp`)."""
    layers = range(_n_layers(model))
    if isinstance(model, EnsembleMLP):
        return [f"hidden.{i}" for i in layers] + ["hidden"]
    return [f"resid.{i}" for i in layers] + ["resid"] + [f"mlp.{i}" for i in layers] + ["mlp"]


def default_site(model: nn.Module) -> str:
    """The site an SAE reads unless told otherwise: an MLP's last hidden layer, a transformer's last residual stream."""
    _n_layers(model)
    return "hidden" if isinstance(model, EnsembleMLP) else "resid"


def row_index(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor | None]:
    """Where each of collect's rows comes from: (example [R], position [R]) into x [N, ...]; position is None for an
    MLP (one row per example)."""
    x = _shared_inputs(model, x)
    if isinstance(model, EnsembleMLP):
        return torch.arange(x.shape[0], device=x.device), None
    keep = _keep(model, x)
    return torch.nonzero(torch.ones_like(x, dtype=torch.bool) if keep is None else keep, as_tuple=True)


@torch.no_grad()
def collect(model: nn.Module, x: Tensor, site: str, *, transcoder: bool = False) -> tuple[Tensor, Tensor]:
    """(inputs [M, R, d_in], targets [M, R, d_out]) float32 at `site` for the inputs x [N, ...] shared by every member.

    For an SAE both are the site's activations (the same tensor); for a transcoder the layer's input and output.
    Rows: the N examples (MLP), or every (example, position) in row-major order except padding (transformer).
    """
    kind, layer = _resolve(model, site, transcoder)
    x = _shared_inputs(model, x)
    inputs, targets = [], []
    for chunk in _chunks(model, x):
        got = _run(model, x[chunk], kind, layer, transcoder=transcoder)
        targets.append(got["output"])
        if transcoder:
            inputs.append(got["input"])
    targets = _concat(targets)  # [M, R, d_out]
    return (_concat(inputs) if transcoder else targets), targets


@torch.no_grad()
def downstream_loss(model: nn.Module, loss: str, x: Tensor, y: Tensor, site: str, replace: Replace | None = None, *,
                    transcoder: bool = False) -> Tensor:
    """Each member's mean task loss [M] on (x, y) with the site's rows (a transcoder's: the layer's output) replaced
    by replace(rows [M, R, d]) -> [M, R, d]; replace=None gives the clean loss.

    `loss` is the task's ("cross_entropy" or "hinge"); y holds class ids [N], +-1 [N] or a language task's targets
    [N, T], averaged over the scored ones (not IGNORE; NaN if none is). `replace` must act row by row: it is called on
    consecutive chunks of collect's rows, in collect's order.
    """
    kind, layer = _resolve(model, site, transcoder)
    x, y = _shared_inputs(model, x), y.to(_device(model))
    total = count = 0
    for chunk in _chunks(model, x):
        logits = _run(model, x[chunk], kind, layer, transcoder=transcoder, replace=replace, logits=True)["logits"]
        values, _ = example_losses(loss, logits, y[chunk], with_correct=False)  # [M, n], 0 where IGNORE
        total = total + values.sum(dim=1)
        count += int((y[chunk] != IGNORE).sum()) if logits.dim() == 4 else values.shape[1]
    return total / count if count else torch.full_like(total, float("nan"))


def _concat(chunks: list[Tensor]) -> Tensor:
    """Rows of the chunks [M, r, d] -> [M, R, d] float32, contiguous (a single chunk is not copied again)."""
    return (chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=1)).float().contiguous()


def _n_layers(model: nn.Module) -> int:
    if isinstance(model, EnsembleMLP):
        return model.spec.depth
    if isinstance(model, EnsembleTransformer):
        return len(model.blocks)
    raise ValueError(f"activation sites exist for EnsembleMLP and EnsembleTransformer models, "
                     f"not {type(model).__name__}")


def _resolve(model: nn.Module, site: str, transcoder: bool) -> tuple[str, int]:
    """site -> (kind, layer): ("hidden" | "resid" | "mlp", index of the layer)."""
    names = site_names(model)
    if site not in names:
        raise ValueError(f"unknown site {site!r} for this {type(model).__name__}; its sites: {', '.join(names)}")
    kind, _, index = site.partition(".")
    if transcoder and kind == "resid":
        raise ValueError(f"a transcoder maps an MLP's input to its output: site {site!r} is no MLP "
                         f"(use one of {', '.join(name for name in names if name.startswith('mlp'))})")
    return kind, int(index) if index else _n_layers(model) - 1


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _shared_inputs(model: nn.Module, x: Tensor) -> Tensor:
    _n_layers(model)
    if x.dim() != 2 or not len(x):
        raise ValueError(f"x must be the inputs [N, ...] that every member shares (2 axes, N >= 1), got shape "
                         f"{tuple(x.shape)}")
    return x.to(_device(model))


def _keep(model: EnsembleTransformer, x: Tensor) -> Tensor | None:
    """[B, T] the positions of tokens x [B, T] that are rows: all but padding (None: every position)."""
    return None if model.pad_token is None else x != model.pad_token


def _chunks(model: nn.Module, x: Tensor) -> Iterator[slice]:
    """Slices of examples whose activations fit in CHUNK_FLOATS (the widest layer of every member at once)."""
    if isinstance(model, EnsembleMLP):
        positions, widest = 1, max(model.spec.width, model.w_out.shape[-1], _first_input_width(model))
    else:
        spec = model.spec
        positions, widest = x.shape[1], max(spec.d_model, spec.d_mlp, spec.n_heads * x.shape[1], model.n_outputs)
    size = max(1, CHUNK_FLOATS // (model.n_members * positions * widest))
    return (slice(start, start + size) for start in range(0, x.shape[0], size))


def _first_input_width(model: EnsembleMLP) -> int:
    return model.embed.shape[1] * model.embed.shape[2] if model.vocab_size else model.w_in.shape[1]


def _run(model: nn.Module, x: Tensor, kind: str, layer: int, *, transcoder: bool, replace: Replace | None = None,
         logits: bool = False) -> dict[str, Tensor]:
    """One forward pass on x [B, ...]: {"input" (with `transcoder`), "output"} at the site as rows [M, R, d], and with
    `logits` the "logits" (as model(x) gives them) computed after `replace`; without, the pass stops at the site."""
    if isinstance(model, EnsembleMLP):
        return _run_mlp(model, x, layer, transcoder, replace, logits)
    return _run_transformer(model, x, kind, layer, transcoder, replace, logits)


def _replaced(replace: Replace, rows: Tensor) -> Tensor:
    new = replace(rows)
    if new.shape != rows.shape:
        raise ValueError(f"replace returned shape {tuple(new.shape)} for rows of shape {tuple(rows.shape)}")
    return new.to(rows.dtype)


def _run_mlp(model: EnsembleMLP, x: Tensor, layer: int, transcoder: bool, replace: Replace | None,
             logits: bool) -> dict[str, Tensor]:
    """EnsembleMLP._hidden layer by layer, then its readout (see `_run`)."""
    n_members = model.n_members
    if model.vocab_size:
        h = model._embed(x, lambda param: param)  # [M, B, width]: the one-hot tokens @ the embeddings, as a lookup
        layer_input = nn.functional.one_hot(x, model.vocab_size).flatten(1) if transcoder and layer == 0 else None
    else:
        h = shared_input_matmul(x, model.w_in)  # [M, B, width]
        layer_input = x
    weights = [None, *model.hidden]
    biases = [model.b_in, *model.hidden_bias] if model.spec.bias else [None] * len(weights)
    got = {}
    for index, (weight, bias) in enumerate(zip(weights, biases)):
        if index:
            layer_input, h = h, torch.bmm(h, weight)  # [M, B, width]
        h = model._activate(h, bias)  # [M, B, width]
        if index == layer:
            got["output"] = h
            if transcoder:
                got["input"] = layer_input.float().expand(n_members, *layer_input.shape[-2:])  # [M, B, d_in]
            if not logits:
                return got
            if replace is not None:
                h = _replaced(replace, h)
    out = torch.bmm(h, model.w_out)  # [M, B, C]
    got["logits"] = out if model.b_out is None else out + model.b_out[:, None]
    return got


def _run_transformer(model: EnsembleTransformer, x: Tensor, kind: str, layer: int, transcoder: bool,
                     replace: Replace | None, logits: bool) -> dict[str, Tensor]:
    """EnsembleTransformer._run with queries at every position (also on classification tasks, whose logits are then
    read at the last one), then its unembedding (see `_run`)."""
    keep = _keep(model, x)  # [B, T] or None
    resid, causal, keys = model.embed(x)  # [M, B, T, d]
    got = {}
    for index, block in enumerate(model.blocks):
        at_site = index == layer
        with _mlp_site(block, keep, got, transcoder, replace) if at_site and kind == "mlp" else nullcontext():
            resid = block(resid, False, causal=causal, keys=keys)[0]  # [M, B, T, d]
        if not at_site:
            continue
        if kind == "resid":
            got["output"] = _rows(resid, keep)
        if not logits:
            return got
        if replace is not None and kind == "resid":
            resid = _unrows(_replaced(replace, got["output"]), resid, keep)
    got["logits"] = model._unembed(resid)
    return got


@contextmanager
def _mlp_site(block, keep: Tensor | None, got: dict[str, Tensor], transcoder: bool, replace: Replace | None):
    """Attach the block's MLP hooks for the time of one forward pass: record the site's rows in `got` (a transcoder's
    input and output, else the hidden activations) and replace them."""
    def record_input(h):  # [M, B, T, d]
        got["input"] = _rows(h, keep)
        return h

    def site(acts):  # the hidden activations [M, B, T, d_mlp], or a transcoder's output [M, B, T, d]
        got["output"] = _rows(acts, keep)
        return acts if replace is None else _unrows(_replaced(replace, got["output"]), acts, keep)

    hooks = ("edit_mlp_input", "edit_hidden", "edit_mlp_output")
    before = [getattr(block, name) for name in hooks]
    for name, hook in zip(hooks, (record_input, None, site) if transcoder else (None, site, None)):
        setattr(block, name, hook)
    try:
        yield
    finally:
        for name, hook in zip(hooks, before):
            setattr(block, name, hook)


def _rows(acts: Tensor, keep: Tensor | None) -> Tensor:
    """[M, B, T, d] -> rows [M, R, d]: every (example, position) in row-major order, or those where keep [B, T]."""
    return acts.flatten(1, 2) if keep is None else acts[:, keep]


def _unrows(rows: Tensor, like: Tensor, keep: Tensor | None) -> Tensor:
    """Rows [M, R, d] back to `like`'s shape [M, B, T, d]; positions outside `keep` keep `like`'s values."""
    if keep is None:
        return rows.reshape(like.shape)
    out = like.clone()
    out[:, keep] = rows
    return out
