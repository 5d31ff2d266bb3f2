"""Component ontogeny: how much each hidden unit matters at each checkpoint, and which units are scaffolds.

A unit's importance is the rise of the probe loss when it is ablated: set to its mean over the probe inputs
(`"mean"`, the default) or to zero (`"zero"`). The units measured are the last hidden layer's, whose effect on the
logits is linear (logits = h @ w_out + b), so every unit of every member is ablated exactly without another forward
pass: logits - (h_j - c_j) w_out[j] for each unit j, a few units at a time. Class selectivity follows Morcos et al.
2018 ("On the importance of single directions for generalization"): (mu_max - mu_rest) / (mu_max + mu_rest) of a
unit's class-conditional mean activations. Leavitt & Morcos 2020 ("Selectivity considered harmful") relate early
selectivity to later performance, which `early_selectivity_vs_final_loss` tests across seeds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy import stats

from ..rebuild import member_models
from ..store import Run

SHARE = 0.25  # a scaffold ends below this share of its peak; a late specialist starts below this share of its end
MIN_IMPORTANCE = 1e-3  # nats: a unit whose importance never reaches this plays no role worth naming
CACHE_FLOATS = 1 << 18  # ablated logits computed at once (1 MiB: they stay in cache)


@torch.no_grad()
def unit_importance(model, x: torch.Tensor, y: torch.Tensor, loss_kind: str, groups: dict[str, torch.Tensor],
                    ablation: str = "mean") -> dict[str, torch.Tensor]:
    """Rise of each group's mean loss when each of the model's readout units (an MLP's last hidden layer, linear to
    the logits) is ablated: {group: [M, units]}.

    `groups` maps a name to a mask [N] or [M, N] of the probe examples it averages over (a split, a subset).
    """
    name, _, readout = model.readout_units()
    got = model.read(x, [name], logits=True, every_position=False)
    h = _at_read_position(got[name], model.site(name))  # [M, N, W]
    return readout_importance(h, readout, got["logits"], y, loss_kind, groups, ablation)


@torch.no_grad()
def readout_importance(h: torch.Tensor, readout: torch.Tensor, logits: torch.Tensor, y: torch.Tensor,
                       loss_kind: str, groups: dict[str, torch.Tensor], ablation: str) -> dict[str, torch.Tensor]:
    """Units h [M, N, W] that reach the logits [M, N, C] linearly through readout [M, W, C]: each unit's ablated
    logits are logits - (h_j - c_j) readout_j, with c_j its mean over the N inputs or 0 -> {group: [M, W]}."""
    keep = h.mean(1, keepdim=True) if ablation == "mean" else torch.zeros_like(h[:, :1])  # [M, 1, W]
    base = _group_means(_example_loss(loss_kind, logits, y), groups)  # {group: [M]}
    logits_y = None if loss_kind == "hinge" else logits.gather(-1, y.expand(logits.shape[:2])[..., None])[..., 0]
    weights = {name: mask.expand(logits.shape[:2]).to(h.dtype) for name, mask in groups.items()}  # [M, N]
    sums = {name: h.new_zeros(h.shape[0], h.shape[2]) for name in groups}  # [M, W]
    n_members, n_examples, width = h.shape
    # blocks of examples x units small enough for the cache: the [M, n, J, C] ablated logits are the whole cost
    units_per_block = max(1, min(width, CACHE_FLOATS // (n_members * logits.shape[-1] * 64)))
    rows = max(1, CACHE_FLOATS // (n_members * units_per_block * logits.shape[-1]))
    for start in range(0, n_examples, rows):
        examples = slice(start, start + rows)
        for first in range(0, width, units_per_block):
            units = slice(first, first + units_per_block)
            shift = h[:, examples, units] - keep[:, :, units]  # [M, n, J]
            if loss_kind == "hinge":
                loss = torch.relu(1 - y[examples, None] * (logits[:, examples] - shift * readout[:, None, units, 0]))
            else:  # logsumexp of the ablated logits minus the ablated target logit, written as one addcmul
                ablated = torch.addcmul(logits[:, examples, None], shift[..., None], readout[:, None, units], value=-1)
                target = logits_y[:, examples, None] - shift * readout[:, units][..., y[examples]].transpose(1, 2)
                loss = torch.logsumexp(ablated, -1) - target  # [M, n, J]
            for name, weight in weights.items():
                sums[name][:, units] += torch.einsum("mnj,mn->mj", loss, weight[:, examples])
    return {name: sums[name] / weights[name].sum(1, keepdim=True).clamp_min(1) - base[name][:, None]
            for name in groups}


@torch.no_grad()
def component_importance(model, x: torch.Tensor, y: torch.Tensor, loss_kind: str, groups: dict[str, torch.Tensor],
                         ablation: str = "mean", rows: int = 2048) -> tuple[list, tuple | None]:
    """A model's components, read through its sites: every head of every site with a head axis (its output at the
    read position set to its mean or to 0, one forward pass per head) and its readout units (`readout_units`,
    measured where they reach the logits linearly). Returns ([(kind, layer, {group: [M, units]})], (kind, layer, the
    units' activations at the read position [M, N, W]) or None)."""
    heads = [site for site in model.sites() if "head" in site.axes]
    units = model.readout_units()
    unit_site = model.site(units[0]) if units else None
    captured = {site.name: [] for site in [*heads, *([unit_site] if unit_site else [])]}

    def recording(site):
        def hook(values):
            captured[site.name].append(_at_read_position(values, site))
        return hook

    logits = _forward_rows(model, x, rows, {name: recording(model.site(name)) for name in captured})  # [M, N, C]
    base = _group_means(_example_loss(loss_kind, logits, y), groups)
    found = []
    for site in heads:
        outputs = torch.cat(captured[site.name], dim=1)  # [M, N, H, dh] at the read position
        fills = outputs.mean(1) if ablation == "mean" else torch.zeros_like(outputs[:, 0])  # [M, H, dh]
        rises = {name: [] for name in groups}
        for head in range(outputs.shape[2]):
            ablated = _forward_rows(model, x, rows, {site.name: _replace_head(head, fills[:, head])})
            for name, mean in _group_means(_example_loss(loss_kind, ablated, y), groups).items():
                rises[name].append((mean - base[name])[:, None])
        found.append(("head", site.layer, {name: torch.cat(parts, dim=1) for name, parts in rises.items()}))
    if units is None:
        return found, None
    _, kind, readout = units
    hidden = torch.cat(captured[unit_site.name], dim=1)  # [M, N, W]
    if readout is not None:
        found.append((kind, unit_site.layer, readout_importance(hidden, readout, logits, y, loss_kind, groups,
                                                                ablation)))
    return found, (kind, unit_site.layer, hidden)


def _at_read_position(values: torch.Tensor, site) -> torch.Tensor:
    """A site's tensor at the position the logits are read (the last), or as it is for a site without positions."""
    return values.select(site.axes.index("position"), -1) if site.has_positions else values


def _replace_head(head: int, fill: torch.Tensor):
    """A heads hook that sets one head's output at the read position to fill [M, dh]."""
    def hook(mixed):  # [M, B, H, Tq, dh]
        mixed = mixed.clone()
        mixed[:, :, head, -1] = fill[:, None]
        return mixed
    return hook


def _forward_rows(model, x: torch.Tensor, rows: int, hooks: dict) -> torch.Tensor:
    """The hooked model's logits on x [N, ...] in chunks of `rows` examples -> [M, N, C]."""
    return torch.cat([model.run_with_hooks(x[start:start + rows], hooks, every_position=False)
                      for start in range(0, len(x), rows)], dim=1)


def _group_means(loss: torch.Tensor, groups: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Mean of loss [M, N, ...] over each group's examples (mask [N] or [M, N]) -> {group: [M, ...]}."""
    means = {}
    for name, mask in groups.items():
        weights = mask.expand(loss.shape[:2]).to(loss.dtype)  # [M, N]
        weights = weights.view(*weights.shape, *([1] * (loss.dim() - 2)))
        means[name] = (loss * weights).sum(1) / weights.sum(1).clamp_min(1)
    return means


def _example_loss(kind: str, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example loss of logits [..., C] against y broadcastable to logits[..., 0]."""
    if kind == "hinge":
        return torch.relu(1 - y * logits[..., 0])
    target = logits.gather(-1, y.expand(logits.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    return torch.logsumexp(logits, -1) - target


@torch.no_grad()
def class_selectivity(h: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Morcos et al.'s class selectivity index of each unit: h [M, N, W] (non-negative activations), labels [N] ->
    [M, W]; NaN for a unit silent on every class."""
    classes, index = torch.unique(labels, return_inverse=True)
    onehot = torch.nn.functional.one_hot(index, len(classes)).to(h.dtype)  # [N, K]
    means = torch.einsum("nk,mnw->mkw", onehot, h) / onehot.sum(0)[None, :, None]  # [M, K, W]
    top = means.max(1).values  # [M, W]
    rest = (means.sum(1) - top) / max(len(classes) - 1, 1)  # mean of the other classes' means
    return (top - rest) / (top + rest)


def run_components(run: Run, *, ablation: str = "mean") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Importance (member, step, kind, layer, unit, group, importance) and selectivity (member, step, kind, layer,
    unit, selectivity) at every checkpoint with saved weights. Components (see `component_importance`): an MLP's
    last hidden layer's units; a transformer's heads and its last layer's MLP neurons. Groups are the task's splits
    and, within each split, its named subsets ("split/subset")."""
    importance, selectivity = [], []
    for ensemble, step in member_models(run):
        model, task, ids = ensemble.model, ensemble.task, np.array(ensemble.ids)
        splits = task.eval_splits()
        for index, (x, y, named) in enumerate(_probe_groups(splits)):
            found, units = component_importance(model, x, y, task.loss, named, ablation)
            for kind, layer, rises in found:
                for name, rise in rises.items():
                    importance.append(_long(ids, int(step), rise, kind=kind, layer=layer, group=name,
                                            value="importance"))
            if index == 0 and units is not None:  # selectivity on the first probe's inputs
                kind, layer, hidden = units
                selectivity.append(_long(ids, int(step), class_selectivity(hidden, y), kind=kind, layer=layer,
                                         value="selectivity"))
    if not importance or not selectivity:
        raise ValueError(f"{run.path}: no saved weights, or a model whose sites hold no heads or readout units")
    return pd.concat(importance, ignore_index=True), pd.concat(selectivity, ignore_index=True)


def _probe_groups(splits) -> list[tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]]:
    """(x, y, {group: mask}) per distinct probe input; splits over the same examples share one pass."""
    passes: dict[int, tuple] = {}
    for split in splits:
        x, y, named = passes.setdefault(id(split.x), (split.x, split.y, {}))
        base = split.member_mask if split.member_mask is not None else torch.ones(len(split.y), dtype=torch.bool)
        named[split.name] = base
        for subset, mask in split.subsets.items():
            named[f"{split.name}/{subset}"] = base & mask
    return list(passes.values())


def _long(ids: np.ndarray, step: int, values: torch.Tensor, value: str, kind: str, layer: int,
          **columns) -> pd.DataFrame:
    """[M, units] -> rows member, step, kind, layer, unit, (columns), value."""
    n_members, units = values.shape
    return pd.DataFrame({"member": np.repeat(ids, units), "step": step, "kind": kind, "layer": layer,
                         "unit": np.tile(np.arange(units), n_members), **columns,
                         value: values.float().cpu().numpy().ravel()})


def unit_roles(importance: pd.DataFrame, *, share: float = SHARE, floor: float = MIN_IMPORTANCE) -> pd.DataFrame:
    """Per member and unit, from its importance curve over checkpoints (one group): peak step and value, final
    value, and its role: "scaffold" (peaks before the end at >= `floor`, ends below `share` of the peak), "late
    specialist" (ends at >= `floor` and at its peak, below `share` of its end through the first half of training),
    else ""."""
    rows = []
    keys = [key for key in ("member", "kind", "layer", "unit") if key in importance]
    for names, curve in importance.sort_values("step").groupby(keys, sort=True):
        steps, values = curve.step.to_numpy(), curve.importance.to_numpy()
        peak = int(np.argmax(values))
        final = values[-1]
        first_half = steps <= steps[0] + (steps[-1] - steps[0]) / 2
        role = ""
        if values[peak] >= floor and peak < len(values) - 1 and final < share * values[peak]:
            role = "scaffold"
        elif final >= floor and final >= values.max() and (values[first_half] < share * final).all():
            role = "late specialist"
        rows.append({**dict(zip(keys, names)), "peak_step": int(steps[peak]), "peak": float(values[peak]),
                     "final": float(final), "role": role})
    return pd.DataFrame(rows, columns=[*keys, "peak_step", "peak", "final", "role"])


def early_selectivity_vs_final_loss(selectivity: pd.DataFrame, final_loss: pd.Series, *, random_state: int = 0,
                                    n_resamples: int = 2000) -> dict[str, float] | None:
    """Spearman correlation across members between their mean unit selectivity at the first checkpoint after step
    0 and their final loss, with a paired percentile bootstrap CI over members (None with fewer than 5 members).

    The bootstrap is by hand because resamples of few members often repeat one member throughout, where Spearman's
    rho is undefined (scipy.stats.bootstrap then returns NaN): those resamples are dropped.
    """
    steps = sorted(set(selectivity.step) - {0})
    if not steps:
        return None
    early = selectivity[selectivity.step == steps[0]].groupby("member").selectivity.mean()
    members = early.index.intersection(final_loss.dropna().index)
    if len(members) < 5:
        return None
    a, b = early.loc[members].to_numpy(), final_loss.loc[members].to_numpy()
    rng = np.random.default_rng(random_state)
    draws = []
    for _ in range(n_resamples):
        pick = rng.integers(0, len(a), len(a))
        if np.ptp(a[pick]) > 0 and np.ptp(b[pick]) > 0:
            draws.append(stats.spearmanr(a[pick], b[pick]).statistic)
    low, high = np.percentile(draws, [2.5, 97.5])
    return {"step": steps[0], "rho": float(stats.spearmanr(a, b).statistic), "low": float(low), "high": float(high),
            "n": len(members)}
