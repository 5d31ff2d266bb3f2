"""Synthetic runs and curves with known answers, for checking the estimators (tests, benchmarks, examples).

Each generator plants what an analysis should find (variance components, transitions, rules, scaling laws, map
regimes) and returns it beside the data; the held-out transition corpus is `transition_corpus`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..tasks.letters_gen import SHARE_BINS
from ._common import log_step, step_from_log
from .rules import HIERARCHICAL, LINEAR
from .scaling import ACC, BATCH_KEY, DATA_KEY, LOSS, muennighoff_epochs

def synthetic_crossed(n_first: int, n_second: int, n_replicates: int = 1, *, first: float = 1.0,
                      second: float = 1.0, interaction: float = 0.5, residual: float = 0.5,
                      factors: tuple[str, str] = ("init_seed", "data_seed"), outcome: str = "outcome",
                      random_state=None) -> pd.DataFrame:
    """A crossed table with known variance components (the arguments are variances): one row per
    (level of factor 0, level of factor 1, replicate) with the outcome = sum of independent normal effects."""
    rng = np.random.default_rng(random_state)
    effects = (rng.normal(0, np.sqrt(first), (n_first, 1, 1)) + rng.normal(0, np.sqrt(second), (1, n_second, 1))
               + rng.normal(0, np.sqrt(interaction), (n_first, n_second, 1))
               + rng.normal(0, np.sqrt(residual), (n_first, n_second, n_replicates)))
    index = np.indices((n_first, n_second, n_replicates)).reshape(3, -1)
    return pd.DataFrame({factors[0]: index[0], factors[1]: index[1], "replicate": index[2],
                         outcome: effects.ravel()})


def synthetic_curves(n_curves: int, n_steps: int, *, n_transitions: int = 1, noise: float = 0.05,
                     kind: str = "sigmoid", power_law: float = 0.0, max_step: float = 1e5,
                     random_state=None) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Curves with known transitions, like ruptures' `pw_constant`.

    Returns (steps [S] integer log-spaced checkpoints from 1 to max_step, values [C, S], true_steps: one array
    per curve of its transition midpoints). `kind` "sigmoid" gives logistic changes of width 0.02-0.1 decades,
    "step" gives jumps (their true step is the first checkpoint after the change). Transitions are at least 0.5
    decades apart and from the ends; jumps are 0.3-1.0 in size with random sign; Gaussian noise of scale
    `noise` is added, and `power_law` > 0 adds the smooth background power_law * (1 + step)^-0.5.
    """
    rng = np.random.default_rng(random_state)
    raw = np.round(np.geomspace(1, max_step, n_steps))
    steps = np.maximum.accumulate(raw - np.arange(n_steps)) + np.arange(n_steps)  # strictly increasing integers
    x = log_step(steps)
    values = np.empty((n_curves, n_steps))
    true_steps = []
    for curve in range(n_curves):
        centers = _spaced_centers(rng, x[0] + 0.5, x[-1] - 0.5, n_transitions, gap=0.5)
        sizes = rng.uniform(0.3, 1.0, n_transitions) * rng.choice([-1.0, 1.0], n_transitions)
        level = np.full(n_steps, rng.uniform(0.0, 1.0))
        for center, size in zip(centers, sizes):
            if kind == "sigmoid":
                level += size / (1 + np.exp(-(x - center) / rng.uniform(0.02, 0.1)))
            elif kind == "step":
                level += size * (x >= center)
            else:
                raise ValueError(f"kind must be 'sigmoid' or 'step', got {kind!r}")
        if kind == "step":
            true_steps.append(steps[np.searchsorted(x, centers)].astype(float))
        else:
            true_steps.append(step_from_log(centers))
        values[curve] = level + power_law * (1 + steps) ** -0.5 + rng.normal(0.0, noise, n_steps)
    return steps.astype(np.int64), values, true_steps


def synthetic_hidden(n_curves: int = 20, n_steps: int = 200, *, spread_decades: float = 2.0,
                     n_groups: int | None = None, width: float = 0.03, noise: float = 0.02, max_step: float = 1e5,
                     random_state=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sub-curves that each drop sharply from 1 to 0 (a sigmoid of `width` decades in log10(1 + step)) at known
    times, with Gaussian noise. Onsets are uniform over `spread_decades` centred in the log-step range, or, with
    `n_groups`, tight clusters (0.03 decades) at n_groups evenly spaced times over that span (one: its middle).

    Returns (steps [S] log-spaced integers, curves [N, S], true_onsets [N] steps of the midpoints).
    """
    rng = np.random.default_rng(random_state)
    raw = np.round(np.geomspace(1, max_step, n_steps))
    steps = np.maximum.accumulate(raw - np.arange(n_steps)) + np.arange(n_steps)  # strictly increasing
    x = log_step(steps)
    middle = (x[0] + x[-1]) / 2
    if n_groups is None:
        centers = rng.uniform(middle - spread_decades / 2, middle + spread_decades / 2, n_curves)
    else:
        means = np.linspace(middle - spread_decades / 2, middle + spread_decades / 2, n_groups) if n_groups > 1 \
            else np.array([middle])
        centers = means[np.arange(n_curves) % n_groups] + rng.normal(0, 0.03, n_curves)
    curves = 1 - 1 / (1 + np.exp(-(x[None, :] - centers[:, None]) / width))  # [N, S]
    curves += rng.normal(0, noise, curves.shape)
    return steps.astype(np.int64), curves, step_from_log(centers)


def synthetic_scaling_scalars(widths=(32, 64, 128), n_trains=(0, 500, 2000, 8000), *, n_seeds: int = 6,
                              steps: int = 2000, batch_size: int = 32, width_alpha: float = 0.4,
                              data_alpha: float = 0.5, r_star: float = 5.0, noise: float = 0.05,
                              member_noise: float = 0.0, random_state=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(scalars, members) of a width x n_train grid with planted answers. A fresh member's test loss at step s is
    (width / 32)^-width_alpha (s B)^-data_alpha (a pure power law in samples seen, times per-seed noise
    exp(N(0, noise)) fixed over the curve, the same at every grid point); a repeated member (E = steps B / n_train
    epochs) follows the fresh curve
    of its seed at the effective samples D'(s) = U + U R* (1 - exp(-(s B / U - 1) / R*)) once past one epoch, so its
    final loss sits where the fresh curve of its seed has seen Muennighoff's D' for r_star. member_noise > 0 scales
    each member's whole curve by its own exp(N(0, member_noise)) too (D' is then no longer exact). test/acc is
    1 - loss / 2.
    Checkpoints: 0, then log-spaced to `steps`."""
    rng = np.random.default_rng(random_state)
    checkpoints = np.unique(np.r_[0, np.geomspace(1, steps, 40).round().astype(int)])
    frames, members = [], []
    member = 0
    scale = {seed: np.exp(rng.normal(0, noise)) for seed in range(n_seeds)}
    for width in widths:
        for n_train in n_trains:
            for seed in range(n_seeds):
                seen = np.maximum(checkpoints * batch_size, 1).astype(float)
                if n_train > 0:
                    past = seen > n_train
                    effective = n_train * muennighoff_epochs(seen / n_train - 1, r_star)
                    seen = np.where(past, effective, seen)
                own = np.exp(rng.normal(0, member_noise)) if member_noise > 0 else 1.0
                loss = own * scale[seed] * (width / 32) ** -width_alpha * seen**-data_alpha
                frames.append(pd.DataFrame({"member": member, "step": np.tile(checkpoints, 2),
                                            "name": np.repeat([LOSS, ACC], len(checkpoints)),
                                            "value": np.r_[loss, 1 - loss / 2]}))
                members.append({"member": member, "init_seed": seed, "model.width": width, DATA_KEY: n_train,
                                BATCH_KEY: batch_size})
                member += 1
    return pd.concat(frames, ignore_index=True), pd.DataFrame(members)


def synthetic_language_scalars(n_members: int = 6, *, n_steps: int = 60, last_step: int = 20_000,
                               references: tuple[str, ...] = ("uniform", "unigram", "bigram"),
                               stage_steps: tuple[float, ...] = (300.0, 3_000.0), jitter: float = 0.15,
                               lag: float = 1_000.0, onset: float = 1_500.0, heads: tuple[int, int] = (2, 2),
                               offset_uas: float | None = None, random_state=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scalars of a language run with known answers, for tests and examples: (scalars, truth).

    Checkpoints: step 0 and `n_steps - 1` log-spaced steps up to `last_step`. On x = log10(1 + step), stage k is
    the interval between midpoints m_(k-1) and m_k (the first open to the left, the last to the right); KL to
    reference k is 0.05 inside its stage and grows by 1 per decade away from it, so the closest reference switches
    from k to k + 1 exactly where x passes m_k. The midpoints are log10(1 + stage_steps) moved per member by up to
    +-`jitter` decades. `uas/best`, the head L{last}H0 and `pairs/acc` rise along logistics in x centred at
    `onset` and `onset + lag` (each jittered per member); `test/loss` falls at the second onset; the other heads
    stay flat; with `offset_uas`, `uas/offset` is that constant.

    truth: member, reference, boundary_step (the first checkpoint at or past the member's midpoint: where a
    stage begins; the first reference's is step 0; NaN past the last step), and per member uas_onset and
    pairs_onset (the planted centres, in steps).
    """
    rng = np.random.default_rng(random_state)
    steps = np.unique(np.r_[0, np.geomspace(1, last_step, n_steps - 1).round()]).astype(np.int64)  # [S]
    x = np.log10(1.0 + steps)
    frames, truth = [], []
    for member in range(n_members):
        midpoints = np.log10(1.0 + np.asarray(stage_steps)) + rng.uniform(-jitter, jitter, len(stage_steps))
        edges = np.r_[-np.inf, midpoints, np.inf]  # stage k spans [edges[k], edges[k + 1]]
        for k, name in enumerate(references):
            distance = np.maximum(edges[k] - x, 0.0) + np.maximum(x - edges[k + 1], 0.0)
            frames.append(_curve(member, steps, f"kl/{name}", 0.05 + distance))
        boundary = [0.0] + [float(steps[x >= m][0]) if (x >= m).any() else np.nan for m in midpoints]
        uas_onset = onset * 10 ** rng.uniform(-jitter, jitter)
        pairs_onset = uas_onset + lag * 10 ** rng.uniform(-jitter, jitter)
        rise_uas = _logistic(x, np.log10(1 + uas_onset))
        rise_pairs = _logistic(x, np.log10(1 + pairs_onset))
        frames += [_curve(member, steps, "uas/best", 0.2 + 0.6 * rise_uas),
                   _curve(member, steps, "pairs/acc", 0.5 + 0.45 * rise_pairs),
                   _curve(member, steps, "test/loss", 1.0 + 2.0 * (1 - rise_pairs))]
        if offset_uas is not None:
            frames.append(_curve(member, steps, "uas/offset", np.full(len(steps), offset_uas)))
        for layer in range(heads[0]):
            for head in range(heads[1]):
                induction = layer == heads[0] - 1 and head == 0
                frames.append(_curve(member, steps, f"uas/L{layer}H{head}",
                                     0.2 + 0.6 * rise_uas if induction else np.full(len(steps), 0.1)))
        truth += [{"member": member, "reference": name, "boundary_step": step, "uas_onset": uas_onset,
                   "pairs_onset": pairs_onset} for name, step in zip(references, boundary)]
    return pd.concat(frames, ignore_index=True), pd.DataFrame(truth)


def synthetic_rule_scalars(labels=("hierarchical", "linear", "mixed", "hierarchical"), *, n_steps: int = 30,
                           every: int = 100, switch_steps=None, flicker=(), test_acc=None,
                           random_state=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scalars of a question-formation run with planted rules: (scalars, truth).

    Member i starts mixed (hierarchical 0.4, linear 0.4) and from checkpoint switch_steps[i] (default 10 + i, in
    checkpoints) holds labels[i]: hierarchical (0.9 + noise < 0.1, linear the rest), linear (the mirror) or mixed
    (0.5 / 0.4). Members listed in `flicker` alternate between their label and mixed at every checkpoint of the last
    third (late_label_changes = that many changes). test/acc is test_acc[i] (default 0.95) at the end, gen/acc
    the hierarchical share. truth: member, label, switch_step (in steps; for a flickering member the last switch),
    late_changes."""
    rng = np.random.default_rng(random_state)
    steps = np.arange(n_steps) * every
    switch_steps = list(switch_steps) if switch_steps is not None else [10 + i for i in range(len(labels))]
    accuracy = list(test_acc) if test_acc is not None else [0.95] * len(labels)
    plateau = {"hierarchical": (0.9, 0.05), "linear": (0.05, 0.9), "mixed": (0.5, 0.4)}
    frames, truth = [], []
    late = int(np.ceil(n_steps / 3))
    for member, label in enumerate(labels):
        at = np.where(np.arange(n_steps) >= switch_steps[member], 1, 0)
        if member in flicker:
            at[-late:] = np.arange(late) % 2 == (late - 1) % 2  # the last checkpoint holds the label
        hierarchical = np.where(at, plateau[label][0], 0.4) + rng.uniform(0, 0.05, n_steps)
        linear = np.where(at, plateau[label][1], 0.4) + rng.uniform(0, 0.02, n_steps)
        if label == "linear":
            hierarchical = np.where(at, 0.02, hierarchical)
        switch = steps[switch_steps[member]] if member not in flicker else steps[-1]
        if label == "mixed":
            switch = steps[0]  # mixed from the start: the label never changes
        changes = late - 1 if member in flicker else 0
        frames += [_curve(member, steps, HIERARCHICAL, hierarchical), _curve(member, steps, LINEAR, linear),
                   _curve(member, steps, "rule/neither", 1 - hierarchical - linear),
                   _curve(member, steps, "test/acc", np.linspace(0.1, accuracy[member], n_steps)),
                   _curve(member, steps, "gen/acc", hierarchical)]
        truth.append({"member": member, "label": label, "switch_step": float(switch), "late_changes": changes})
    return pd.concat(frames, ignore_index=True), pd.DataFrame(truth)


def synthetic_counting_scalars(vocab_sizes=(10, 16, 24), *, n_seeds: int = 6, gap: float = 0.2, noise: float = 0.02,
                               rare_gap: float = 0.0, n_steps: int = 5, random_state=None
                               ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scalars of a letter-counting sweep with planted gaps: (scalars, members). Per vocab size (BPE above the
    alphabet of 10), seed accuracies: absent 0.9, present_own_token 0.8, present_inside_token 0.8 - gap (absent at
    vocab 10: no multi-letter pieces), counts 0.7; inside pieces by training share (the four SHARE_BINS) 0.8 - gap
    minus rare_gap, rare_gap / 2, 0, 0, inside_rare_piece 0.8 - gap - rare_gap, inside_common_piece 0.8 - gap; plus
    N(0, noise) per seed; earlier checkpoints lower."""
    rng = np.random.default_rng(random_state)
    steps = np.arange(n_steps) * 100
    frames, members = [], []
    for block, vocab in enumerate(vocab_sizes):
        for seed in range(n_seeds):
            member = block * n_seeds + seed
            members.append({"member": member, "task.vocab_size": vocab, "config": f"vocab_size={vocab}"})
            final = {"absent": 0.9, "present_own_token": 0.8, "count_1": 0.7, "count_2": 0.7, "count_3_plus": 0.7}
            if vocab > 10:
                inside = 0.8 - gap
                final["present_inside_token"] = final["inside_common_piece"] = inside
                final["inside_rare_piece"] = inside - rare_gap
                final |= dict(zip(SHARE_BINS, (inside - rare_gap, inside - rare_gap / 2, inside, inside)))
            for subset, value in final.items():
                end = value + rng.normal(0, noise)
                frames.append(_curve(member, steps, f"test/{subset}/acc", np.linspace(0.1, end, n_steps)))
            frames.append(_curve(member, steps, "test/acc", np.linspace(0.1, 0.8, n_steps)))
    return pd.concat(frames, ignore_index=True), pd.DataFrame(members)


def piecewise_regimes(n_members: int = 8, *, detour_members: Sequence[int] = (1, 4, 6), detour_steps: int = 150,
                      every: int = 10, n_steps: int = 800, noise: float = 0.25, jitter: int = 20,
                      random_state=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Synthetic ground truth for maps: (scalars, truth). Every member goes through three regimes A -> B -> C with
    distinct metric levels (A until about step 150, B until about 400, C to the end, each change jittered by up
    to `jitter` steps); the `detour_members` pass through a fourth regime D between A and B, which postpones
    everything after it by `detour_steps`. Losses and norms are log-normal, accuracies Gaussian, with standard
    deviation `noise` on the log10 / raw scale. truth: member, step, regime (0 A, 1 B, 2 C, 3 D)."""
    rng = np.random.default_rng(random_state)
    # log10 train/loss, log10 test/loss, train/acc, test/acc, log10 weight_norm, log10 grad_norm per regime
    levels = np.array([[0.5, 0.5, 0.1, 0.1, 1.0, -1.0],   # A: untrained
                       [-2.0, 1.0, 1.0, 0.1, 1.8, -2.0],  # B: memorized
                       [-3.0, -2.0, 1.0, 1.0, 1.3, -3.0],  # C: generalized
                       [-0.5, 0.5, 0.6, 0.1, 2.5, -0.5]])  # D: the detour
    names = ["train/loss", "test/loss", "train/acc", "test/acc", "weight_norm", "grad_norm"]
    logged = np.array([True, True, False, False, True, True])
    steps = np.arange(0, n_steps + 1, every)
    frames, truth = [], []
    for member in range(n_members):
        a_end = 150 + rng.integers(-jitter, jitter + 1)
        d_steps = detour_steps if member in detour_members else 0
        b_end = 400 + rng.integers(-jitter, jitter + 1) + d_steps
        regime = np.where(steps < a_end, 0, np.where(steps < a_end + d_steps, 3, np.where(steps < b_end, 1, 2)))
        values = levels[regime] + noise * rng.standard_normal((len(steps), len(names)))  # [S, D]
        values = np.where(logged, 10.0 ** values, values)
        for j, name in enumerate(names):
            frames.append(pd.DataFrame({"member": member, "step": steps, "name": name, "value": values[:, j]}))
        truth.append(pd.DataFrame({"member": member, "step": steps, "regime": regime}))
    return pd.concat(frames, ignore_index=True), pd.concat(truth, ignore_index=True)


def _logistic(x: np.ndarray, centre: float, width: float = 0.08) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(x - centre) / width))


def _curve(member: int, steps: np.ndarray, name: str, values: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"member": member, "step": steps, "name": name, "value": np.asarray(values, dtype=float)})


def _spaced_centers(rng, low: float, high: float, count: int, *, gap: float) -> np.ndarray:
    """`count` sorted uniform draws in [low, high], consecutive ones at least `gap` apart."""
    free = high - low - gap * max(count - 1, 0)
    if free < 0:
        raise ValueError(f"cannot fit {count} transitions {gap} decades apart in [{low:.2f}, {high:.2f}]")
    return np.sort(rng.uniform(0.0, free, count)) + low + gap * np.arange(count)
