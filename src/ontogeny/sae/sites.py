"""Activation sites for sparse autoencoders and transcoders (`ontogeny sae`), read through the models' named sites.

An SAE reads any site whose tensor is rows of features (`models/sites.py`): an MLP's `hidden.<i>` (and
`hidden_in.<i>`), a transformer's `resid.<l>`, `mlp.<l>`, `mlp_in.<l>` and `mlp_out.<l>`; `hidden`, `resid` and
`mlp` name the last layer's. `collect` reads a site as rows [M, R, d]: one per example for a site without a position
axis, one per (example, position) not holding padding for a site with one. `downstream_loss` gives each member's
task loss with the site's rows replaced, e.g. by an SAE's reconstructions (the "spliced-in" loss). A transcoder maps
a layer's input site to its output site, as the model pairs them (`transcoders`): an MLP layer's input (for the first
layer the one-hot tokens laid end to end, or the float features) to its activations; a transformer MLP's normalized
input to its output (hidden @ W_out + b_out).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from ..models.sites import HookedEnsemble, Site
from ..evaluation.probes import example_losses
from ..tasks.base import IGNORE

CHUNK_FLOATS = 1 << 23  # activations one forward chunk may hold (32 MiB): examples run in chunks of this size

Replace = Callable[[Tensor], Tensor]  # rows [M, R, d] -> their replacement [M, R, d]


def site_names(model: nn.Module) -> list[str]:
    """Every site of `model` an SAE can read (rows of features), in forward order, then the aliases of those."""
    sites = [site.name for site in _hooked(model).sites() if _is_rows(site)]
    return sites + [alias for alias, name in model.aliases.items() if name in sites]


def default_site(model: nn.Module) -> str:
    """The site an SAE reads unless told otherwise (the model's `default_site`)."""
    return _hooked(model).default_site


def row_index(model: nn.Module, x: Tensor, site: str | None = None) -> tuple[Tensor, Tensor | None]:
    """Where each of collect's rows at `site` (default: the default site) comes from: (example [R], position [R])
    into x [N, ...]; position is None for a site without positions (one row per example)."""
    x = _shared_inputs(model, x)
    if not model.site(site or model.default_site).has_positions:
        return torch.arange(x.shape[0], device=x.device), None
    keep = _keep(model, x)
    return torch.nonzero(torch.ones_like(x, dtype=torch.bool) if keep is None else keep, as_tuple=True)


@torch.no_grad()
def collect(model: nn.Module, x: Tensor, site: str, *, transcoder: bool = False) -> tuple[Tensor, Tensor]:
    """(inputs [M, R, d_in], targets [M, R, d_out]) float32 at `site` for the inputs x [N, ...] shared by every member.

    For an SAE both are the site's activations (the same tensor); for a transcoder the layer's input and output.
    Rows: the N examples, or every (example, position) in row-major order except padding.
    """
    source, target = _resolve(model, site, transcoder)
    x = _shared_inputs(model, x)
    inputs, targets = [], []
    for chunk in _chunks(model, x):
        part = x[chunk]
        got = model.read(part, [target.name] if source is None else [source.name, target.name])
        keep = _keep(model, part)
        targets.append(_rows(got[target.name], target, keep))
        if source is not None:
            inputs.append(_rows(got[source.name], source, keep))
    targets = _concat(targets)  # [M, R, d_out]
    return (_concat(inputs) if transcoder else targets), targets


@torch.no_grad()
def downstream_loss(model: nn.Module, loss: str, x: Tensor, y: Tensor, site: str, replace: Replace | None = None, *,
                    transcoder: bool = False) -> Tensor:
    """Each member's mean task loss [M] on (x, y) with the site's rows replaced by replace(rows [M, R, d]) ->
    [M, R, d]; for a transcoder, replace gets the layer's input rows and returns its output rows. replace=None gives
    the clean loss.

    `loss` is the task's ("cross_entropy" or "hinge"); y holds class ids [N], +-1 [N] or a language task's targets
    [N, T], averaged over the scored ones (not IGNORE; NaN if none is). `replace` must act row by row: it is called on
    consecutive chunks of collect's rows, in collect's order.
    """
    source, target = _resolve(model, site, transcoder)
    x, y = _shared_inputs(model, x), y.to(_device(model))
    total = count = 0
    for chunk in _chunks(model, x):
        part, keep, inputs = x[chunk], _keep(model, x[chunk]), {}

        def record(acts, keep=keep, inputs=inputs):  # the transcoder's input comes before its output
            inputs["rows"] = _rows(acts, source, keep)

        def edit(acts, keep=keep, inputs=inputs):
            if replace is None:
                return None
            rows = _rows(acts, target, keep)
            new = replace(inputs.get("rows", rows))
            if new.shape != rows.shape:
                raise ValueError(f"replace returned shape {tuple(new.shape)} for rows of shape {tuple(rows.shape)}")
            return _unrows(new.to(rows.dtype), acts, target, keep)

        hooks = {target.name: edit} if source is None or replace is None else {source.name: record, target.name: edit}
        logits = model.run_with_hooks(part, hooks)
        values, _ = example_losses(loss, logits, y[chunk], with_correct=False)  # [M, n], 0 where IGNORE
        total = total + values.sum(dim=1)
        count += int((y[chunk] != IGNORE).sum()) if logits.dim() == 4 else values.shape[1]
    return total / count if count else torch.full_like(total, float("nan"))


def _concat(chunks: list[Tensor]) -> Tensor:
    """Rows of the chunks [M, r, d] -> [M, R, d] float32, contiguous (a single chunk is not copied again)."""
    return (chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=1)).float().contiguous()


def _hooked(model: nn.Module) -> HookedEnsemble:
    if not isinstance(model, HookedEnsemble):
        raise ValueError(f"activation sites exist for models that declare them (models/sites.py), not "
                         f"{type(model).__name__}")
    return model


def _is_rows(site: Site) -> bool:
    return site.axes[-1] == "feature" and "head" not in site.axes


def _resolve(model: nn.Module, site: str, transcoder: bool) -> tuple[Site | None, Site]:
    """site -> (the transcoder's input site or None, the site read or replaced)."""
    names = site_names(model)
    if site not in names:
        raise ValueError(f"unknown site {site!r} for this {type(model).__name__}; its sites: {', '.join(names)}")
    found = model.site(site)
    if not transcoder:
        return None, found
    pairs = model.transcoders
    if found.name not in pairs:
        raise ValueError(f"a transcoder maps an MLP's input to its output: site {site!r} is no MLP "
                         f"(use one of {', '.join(pairs)})")
    source, target = pairs[found.name]
    return model.site(source), model.site(target)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _shared_inputs(model: nn.Module, x: Tensor) -> Tensor:
    _hooked(model)
    if x.dim() != 2 or not len(x):
        raise ValueError(f"x must be the inputs [N, ...] that every member shares (2 axes, N >= 1), got shape "
                         f"{tuple(x.shape)}")
    return x.to(_device(model))


def _keep(model: nn.Module, x: Tensor) -> Tensor | None:
    """[B, T] the positions of tokens x [B, T] that are rows: all but padding (None: every position)."""
    pad = getattr(model, "pad_token", None)
    return None if pad is None else x != pad


def _chunks(model: HookedEnsemble, x: Tensor) -> Iterator[slice]:
    """Slices of examples whose activations fit in CHUNK_FLOATS (the widest site of every member at once)."""
    size = max(1, CHUNK_FLOATS // model.floats_per_example(x))
    return (slice(start, start + size) for start in range(0, x.shape[0], size))


def _rows(acts: Tensor, site: Site, keep: Tensor | None) -> Tensor:
    """A site's tensor -> rows [M, R, d]: [M, B, d] as it is; [M, B, T, d] every (example, position) in row-major
    order, or those where keep [B, T]."""
    if not site.has_positions:
        return acts
    return acts.flatten(1, 2) if keep is None else acts[:, keep]


def _unrows(rows: Tensor, like: Tensor, site: Site, keep: Tensor | None) -> Tensor:
    """Rows [M, R, d] back to `like`'s shape; positions outside `keep` keep `like`'s values."""
    if not site.has_positions or keep is None:
        return rows.reshape(like.shape)
    out = like.clone()
    out[:, keep] = rows
    return out
