"""Fourier progress measures for modular addition (Nanda et al. 2023, "Progress measures for grokking via
mechanistic interpretability", section 5).

A model that has learned `a + b mod p` the Fourier way embeds each number as cos / sin of a few key frequencies w
and reads out logits of the form sum_w cos(w (a + b - c)). Three measures follow, per member and checkpoint:

- key frequencies: the embedding's power per frequency of the Fourier basis over Z_p (constant, then cos / sin of
  2 pi k x / p, each normalized); the key ones are the fewest, strongest first, that carry `share` of its
  non-constant power (the rule is ours). Beside them, `neuron_key_frequencies` by the paper's rule (its released
  code: transformers.py `calculate_key_freqs`, and its analysis notebook): each readout neuron's activation at the
  read position over all p^2 inputs, centred, in the 2D Fourier basis; a neuron's frequency is the k whose terms
  (cos / sin of w_k a, of w_k b, and their products) explain most of its variance; the key frequencies are the
  distinct neuron frequencies, with no threshold (k = 1..p // 2, as the notebook; dead neurons left out).
  `neurons_clustered` is the share of live neurons whose frequency explains more than 0.85 (the paper's cutoff for
  its neuron clusters).
- restricted loss: keep, in the logits over all p^2 inputs, only their components along cos(w (a + b)) and
  sin(w (a + b)) for the key w (per output c) plus their mean over inputs, and take the cross entropy; as the
  paper's released code (progress-measures-paper, transformers.py: the trig loss, with its bias correction, on all
  p^2 pairs). The same on the member's training pairs is kept too.
- excluded loss: remove those components and take the cross entropy on the training pairs: it rises towards (or
  past) log p once the model leans on the key frequencies, while the train loss stays low.

Written by hand: the projections are a few lines of linear algebra that no library offers for ensembles.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from ..rebuild import run_ensembles
from ..store import Run
from ..tasks.modular import modular_table

KEY_SHARE = 0.9  # key frequencies carry at least this share of the embedding's non-constant Fourier power
CLUSTERED = 0.85  # Nanda et al.: a neuron belongs to its frequency's cluster when that frequency explains > 85%

COLUMNS = ["member", "step", "key_frequencies", "n_key_frequencies", "key_share", "neuron_key_frequencies",
           "neurons_clustered", "neuron_frequency_share",
           "ablated_frequencies", "train_loss", "test_loss", "restricted_loss", "restricted_train_loss",
           "excluded_loss", "uniform_loss"]


def fourier_basis(p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The orthonormal Fourier basis over Z_p, in float64: rows [p, p] (constant, cos 1, sin 1, cos 2, ...; for even
    p the last row is cos(pi x), whose sine is zero) and each row's frequency [p] int64 (0 for the constant)."""
    waves, frequency = _waves(p, torch.arange(p, dtype=torch.float64))
    constant = torch.full((1, p), 1 / math.sqrt(p), dtype=torch.float64)
    return torch.cat([constant, waves]), torch.cat([torch.zeros(1, dtype=torch.int64), frequency])


def _waves(p: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of 2 pi k x / p over the points x [N] for k = 1..p // 2 (no all-zero sine at k = p / 2), each
    normalized over x: rows [R, N] float64 and each row's frequency k [R] int64."""
    rows, frequency = [], []
    for k in range(1, p // 2 + 1):
        for wave in (torch.cos, torch.sin) if 2 * k != p else (torch.cos,):
            row = wave(2 * math.pi * k * x / p)
            rows.append(row / row.norm())
            frequency.append(k)
    return torch.stack(rows), torch.tensor(frequency, dtype=torch.int64)


def _feature_power(tables: torch.Tensor) -> torch.Tensor:
    """Power of each feature of the embedding tables [M, T, p, d] (T tables of p number tokens) per frequency,
    summed over the tables and over each frequency's cos / sin pair: [M, p // 2 + 1, d] float64 (0: the constant)."""
    p = tables.shape[-2]
    basis, frequency = fourier_basis(p)
    per_row = torch.einsum("fx,mtxd->mtfd", basis, tables.double()).pow(2).sum(1)  # [M, p, d]
    power = torch.zeros(tables.shape[0], p // 2 + 1, tables.shape[-1], dtype=torch.float64)
    return power.index_add_(1, frequency, per_row)  # [M, K + 1, d]


def frequency_power(tables: torch.Tensor) -> torch.Tensor:
    """Squared norm of the embedding tables [M, T, p, d] along each frequency's cos / sin pair, summed over tables
    and features: [M, p // 2 + 1] float64, column 0 the constant, column k frequency k."""
    return _feature_power(tables).sum(-1)


def neuron_frequency_share(tables: torch.Tensor) -> torch.Tensor:
    """Share of the embedding's power [M] that sits in each feature's own strongest non-constant frequency, features
    weighted by their power: near 1 when every hidden neuron reads a single frequency (Gromov 2023's solution;
    meaningful only where features are neurons, as in the MLP); a random table gives about 0.1 at p = 59."""
    power = _feature_power(tables)  # [M, K + 1, d]
    return power[:, 1:].max(dim=1).values.sum(1) / power.sum(dim=(1, 2)).clamp_min(1e-300)


def key_frequencies(power: torch.Tensor, share: float = KEY_SHARE) -> list[int]:
    """The fewest frequencies, strongest first, whose power reaches `share` of the non-constant total, sorted
    (power [K + 1] as `frequency_power` gives one member; empty for an all-zero spectrum)."""
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    spectrum = power[1:].double()  # [K]
    total = float(spectrum.sum())
    if total <= 0:
        return []
    order = torch.argsort(spectrum, descending=True, stable=True)
    covered = torch.cumsum(spectrum[order], 0) / total  # [K]
    count = int((covered < share * (1 - 1e-12)).sum()) + 1  # the first prefix that reaches the share
    return sorted(int(k) + 1 for k in order[:count])


def neuron_frequencies(activations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each neuron's frequency by Nanda et al.'s rule: activations [M, p, p, N] over the inputs (a, b) -> (frequency
    [M, N] int64 in 1..p // 2, -1 for a neuron that never varies; the share of its variance that frequency's terms
    explain [M, N] float64)."""
    p = activations.shape[1]
    centred = activations.double() - activations.double().mean(dim=(1, 2), keepdim=True)
    basis, frequency = fourier_basis(p)  # [p, p]
    power = torch.einsum("fa,mabn,gb->mfgn", basis, centred, basis).pow(2)  # [M, p, p, N]
    rows = (frequency[None] == torch.arange(1, p // 2 + 1)[:, None]) | (frequency[None] == 0)  # [K, p]: {const, k}
    rows = rows.double()
    block = torch.einsum("mfgn,kf,kg->mkn", power, rows, rows) - power[:, None, 0, 0]  # const x const is ~0
    total = power.sum(dim=(1, 2))  # [M, N]
    explained = block / total[:, None].clamp_min(1e-300)  # [M, K, N]
    best = explained.max(dim=1)
    live = total > 1e-20 * total.amax(dim=1, keepdim=True).clamp_min(1e-300)
    return torch.where(live, best.indices + 1, -1), torch.where(live, best.values, torch.nan)


def readout_activations(model: torch.nn.Module, p: int) -> torch.Tensor:
    """The readout neurons' activations (`model.readout_units()`: the last MLP layer) at the read position over all
    p^2 inputs (a slowest): [M, p, p, N]."""
    _, x, _ = modular_table(p, "+")
    site = model.readout_units()[0]
    with torch.no_grad():
        acts = model.read(x, [site])[site]  # [M, p*p, (T,) N]
    if acts.dim() == 4:
        acts = acts[:, :, -1]  # the '=' position, where the answer is read
    return acts.reshape(acts.shape[0], p, p, acts.shape[-1])


def sum_directions(p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal directions over the p^2 inputs (a slowest, as `modular_table`): cos(2 pi k (a + b) / p) and
    sin(...) for k = 1..p // 2 (no zero sine for even p): rows [R, p * p] float64 and each row's frequency [R]."""
    a, b = torch.cartesian_prod(torch.arange(p), torch.arange(p)).double().unbind(1)  # [p*p] each
    return _waves(p, a + b)


def split_logits(logits: torch.Tensor, frequencies: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Split logits [M, p * p, C] over all inputs (a slowest) by each member's key frequencies.

    Returns (restricted, excluded), both [M, p * p, C] float64: restricted holds, per output, the components along
    cos / sin(w (a + b)) for the member's key w plus the mean over inputs (the constant the paper's bias correction
    restores); excluded is the logits less those components.
    """
    n_members, n_inputs, _ = logits.shape
    p = math.isqrt(n_inputs)
    if p * p != n_inputs or len(frequencies) != n_members:
        raise ValueError(f"logits must be [M, p*p, C] with one frequency list per member, got {tuple(logits.shape)} "
                         f"and {len(frequencies)} lists")
    directions, frequency = sum_directions(p)  # [R, p*p], [R]
    keep = torch.stack([torch.isin(frequency, torch.tensor(f, dtype=torch.int64)) for f in frequencies])  # [M, R]
    logits = logits.double()
    coefficients = torch.einsum("rn,mnc->mrc", directions, logits) * keep[..., None]  # [M, R, C]
    key_part = torch.einsum("rn,mrc->mnc", directions, coefficients)  # [M, p*p, C]
    return logits.mean(1, keepdim=True) + key_part, logits - key_part


def embedding_tables(model: torch.nn.Module, p: int) -> torch.Tensor:
    """The number tokens' embeddings [M, T, p, d]: of the positions a and b where the model has a table per position
    (an MLP's, T = 2; the '=' position and token are left out), else its one shared table (a transformer's W_E,
    T = 1)."""
    tables = model.token_tables() if hasattr(model, "token_tables") else None
    if tables is None:
        raise ValueError(f"no number-token embedding in a {type(model).__name__} (fourier reads a model's "
                         "token_tables())")
    return tables[:, :2, :p].detach()


def member_losses(logits: torch.Tensor, y: torch.Tensor, positions: list[torch.Tensor]) -> list[float]:
    """Cross entropy (float64) of each member's logits [M, N, C] on its own `positions` into the N examples."""
    return [F.cross_entropy(logits[m, pos].double(), y[pos]).item() for m, pos in enumerate(positions)]


def fourier_rows(model: torch.nn.Module, p: int, train_positions: list[torch.Tensor], ablated: list[list[int] | None],
                 share: float = KEY_SHARE) -> list[dict]:
    """The measures of every member of `model` (weights loaded) at one checkpoint: one dict per member without
    member and step; `ablated` names each member's frequencies for the restricted and excluded losses (None: the
    key frequencies found here)."""
    _, x, y = modular_table(p, "+")  # [p*p, 3], [p*p]
    tables = embedding_tables(model, p)
    power, sparsity = frequency_power(tables), neuron_frequency_share(tables)
    keys = [key_frequencies(row, share) for row in power]
    ablated = [keys[m] if a is None else a for m, a in enumerate(ablated)]
    with torch.no_grad():
        logits = model(x)  # [M, p*p, p]
    restricted, excluded = split_logits(logits, ablated)
    test_positions = [torch.from_numpy(np.setdiff1d(np.arange(p * p), pos.numpy())) for pos in train_positions]
    every = [torch.arange(p * p)] * len(train_positions)
    columns = {"train_loss": member_losses(logits, y, train_positions),
               "test_loss": member_losses(logits, y, test_positions),
               "restricted_loss": member_losses(restricted, y, every),
               "restricted_train_loss": member_losses(restricted, y, train_positions),
               "excluded_loss": member_losses(excluded, y, train_positions)}
    per_neuron = model.embedding_is_neurons  # an MLP's embedding columns are its hidden neurons
    neuron_frequency, explained = neuron_frequencies(readout_activations(model, p))  # [M, N] each
    rows = []
    for m, key in enumerate(keys):
        spectrum = power[m, 1:]
        live = neuron_frequency[m] > 0
        rows.append({"key_frequencies": ", ".join(map(str, key)), "n_key_frequencies": len(key),
                     "key_share": float(spectrum[[k - 1 for k in key]].sum() / spectrum.sum().clamp_min(1e-300)),
                     "neuron_key_frequencies": ", ".join(map(str, sorted(set(neuron_frequency[m, live].tolist())))),
                     "neurons_clustered": float((explained[m, live] > CLUSTERED).double().mean()),
                     "neuron_frequency_share": float(sparsity[m]) if per_neuron else float("nan"),
                     "ablated_frequencies": ", ".join(map(str, ablated[m])),
                     **{name: values[m] for name, values in columns.items()}, "uniform_loss": math.log(p)})
    return rows


def is_modular_addition(task) -> bool:
    """Whether a task spec is modular addition, the task these measures are defined for."""
    return getattr(task, "name", None) == "modular" and getattr(task, "op", None) == "+"


def run_fourier(run: Run, *, share: float = KEY_SHARE, ablate: str = "final") -> pd.DataFrame:
    """Fourier measures of every modular-addition member at every checkpoint where its ensemble saved weights.

    `ablate` = "final" (the default) keeps / removes, at every checkpoint, the key frequencies of the member's last
    saved checkpoint: the frequencies the trained model ends up using, followed back over training; "each" uses
    every checkpoint's own (as the paper's released training code, which recomputes them at each checkpoint from the
    MLP neurons). Columns: see COLUMNS (losses in nats, float64; `uniform_loss` = log p).
    """
    if ablate not in ("final", "each"):
        raise ValueError(f"ablate must be 'final' or 'each', got {ablate!r}")
    rows = []
    for ensemble in run_ensembles(run):
        task_spec, group, model = ensemble.members[0].spec.task, ensemble.members, ensemble.model
        steps = ensemble.saved_steps() if is_modular_addition(task_spec) else []
        if not steps:
            continue
        ablated = [None] * len(group)
        if ablate == "final":
            ensemble.load(steps[-1])
            power = frequency_power(embedding_tables(model, task_spec.p))
            ablated = [key_frequencies(row, share) for row in power]
        for step in steps:
            ensemble.load(step)
            found = fourier_rows(model, task_spec.p, ensemble.task.train_positions, ablated, share)
            rows.extend({"member": m.member, "step": step, **row} for m, row in zip(group, found, strict=True))
    return pd.DataFrame(rows, columns=COLUMNS)
