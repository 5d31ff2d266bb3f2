"""Seed statistics: the Multi-Bootstrap and a variance decomposition over crossed seeds.

Multi-Bootstrap (Sellam et al. 2022, "The MultiBERTs: BERT reproductions for robustness analysis"): a quantity
measured on several seeds (and on a shared set of examples) varies with both, so a confidence interval
resamples seeds and examples jointly. Comparisons follow the paper's reference code: paired (both
configurations share seeds) resamples one set of seeds for both; unpaired resamples each side's seeds
separately; the examples are resampled once per draw and shared by both sides.

Variance decomposition: when init seeds and data seeds are crossed (every init with every data order), a
two-way random-effects ANOVA splits an outcome's variance into init, data order, their interaction and, with
replicates, residual (method-of-moments estimators from expected mean squares, e.g. Searle, Casella &
McCulloch 1992, ch. 4), with CIs from the pigeonhole bootstrap (Owen 2007), resampling the levels of both
factors independently. Measured coverage of the nominal 95% share intervals in 300 simulated designs each
(benchmarks/variance_coverage.py): 93-100% (data order 93-96%, residual 95-97%, init 97-100%).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class BootstrapResult:
    """The plug-in estimate (the statistic of the data as observed, not the mean of the bootstrap draws), the
    percentile CI [low, high], and the bootstrap distribution [n_boot] (its mean: `bootstrap_mean`)."""

    estimate: float
    low: float
    high: float
    distribution: np.ndarray = field(repr=False)
    estimate_kind: str = "plug-in"

    @property
    def bootstrap_mean(self) -> float:
        return float(np.mean(self.distribution))


@dataclass(frozen=True)
class Comparison:
    """Difference statistic(treatment) - statistic(base): plug-in estimate, percentile CI, two-sided p-value
    (2 * the smaller bootstrap tail beyond 0, capped at 1), the one-sided p = P*(difference <= 0) that the
    MultiBERTs code reports, and the bootstrap distribution of the difference [n_boot]. Both p-values are
    floored at 1 / n_boot: a tail no draw reached is "below 1 / n_boot", never 0."""

    difference: float
    low: float
    high: float
    p_value: float
    p_one_sided: float
    distribution: np.ndarray = field(repr=False)
    estimate_kind: str = "plug-in"


def _as_matrix(values) -> np.ndarray:
    """[members] -> [members, 1]; [members, examples] unchanged."""
    values = np.asarray(values, dtype=float)
    if values.ndim not in (1, 2) or len(values) == 0:
        raise ValueError(f"values must be [members] or [members, examples], got shape {values.shape}")
    return values[:, None] if values.ndim == 1 else values


def _draws(rng, n_boot: int, size: int) -> np.ndarray:
    """Indices of n_boot resamples with replacement of `size` items, [n_boot, size]."""
    return rng.integers(0, size, size=(n_boot, size))


def _resampled_statistic(values: np.ndarray, seeds: np.ndarray, examples: np.ndarray,
                         statistic: Callable) -> np.ndarray:
    """statistic of values[seeds[b]][:, examples[b]] for every draw b -> [n_boot]."""
    n_boot, (n_members, n_examples) = len(seeds), values.shape
    if statistic is np.mean:  # counts-weighted mean, O(n_boot * members * examples) without copies
        seed_counts = np.zeros((n_boot, n_members))
        np.add.at(seed_counts, (np.arange(n_boot)[:, None], seeds), 1.0)
        example_counts = np.zeros((n_boot, n_examples))
        np.add.at(example_counts, (np.arange(n_boot)[:, None], examples), 1.0)
        return ((seed_counts @ values) * example_counts).sum(axis=1) / (n_members * n_examples)
    if n_examples == 1:
        return np.asarray(statistic(values[seeds, 0], axis=-1), dtype=float)
    return np.array([statistic(values[np.ix_(s, e)]) for s, e in zip(seeds, examples)], dtype=float)


def _percentile_interval(distribution: np.ndarray, ci: float) -> tuple[float, float]:
    low, high = np.quantile(distribution, [(1 - ci) / 2, (1 + ci) / 2])
    return float(low), float(high)


def multibootstrap(values, *, n_boot: int = 2000, ci: float = 0.95, statistic: Callable = np.mean,
                   random_state=None) -> BootstrapResult:
    """Percentile CI of statistic(values), values [members] or [members, examples] (seeds on the first axis):
    each draw resamples members and, for a matrix, examples too, jointly. `statistic` maps the (resampled)
    array to a scalar; for 1-D input it must accept `axis` (as numpy reductions do)."""
    values = _as_matrix(values)
    rng = np.random.default_rng(random_state)
    seeds, examples = _draws(rng, n_boot, values.shape[0]), _draws(rng, n_boot, values.shape[1])
    distribution = _resampled_statistic(values, seeds, examples, statistic)
    estimate = float(statistic(values[:, 0]) if values.shape[1] == 1 else statistic(values))
    return BootstrapResult(estimate, *_percentile_interval(distribution, ci), distribution)


def compare(base, treatment, *, paired: bool, n_boot: int = 2000, ci: float = 0.95,
            statistic: Callable = np.mean, random_state=None) -> Comparison:
    """Multi-Bootstrap comparison of two configurations, each [members] or [members, examples].

    paired=True: both sides share their seeds; each draw resamples one set of seeds for both. Pandas inputs
    (Series or DataFrames indexed by seed label) are paired by label, whatever their row order; arrays are
    paired row by row. paired=False: each side's seeds are resampled separately. Examples (columns, which must
    match) are resampled once per draw and shared, as in the MultiBERTs reference code.
    """
    if paired:
        base, treatment = _paired_by_label(base, treatment)
    base, treatment = _as_matrix(base), _as_matrix(treatment)
    if base.shape[1] != treatment.shape[1]:
        raise ValueError(f"both sides need the same examples: {base.shape[1]} vs {treatment.shape[1]} columns")
    if paired and base.shape[0] != treatment.shape[0]:
        raise ValueError(f"paired comparison needs the same seeds: {base.shape[0]} vs {treatment.shape[0]} rows")
    rng = np.random.default_rng(random_state)
    examples = _draws(rng, n_boot, base.shape[1])
    base_seeds = _draws(rng, n_boot, base.shape[0])
    treatment_seeds = base_seeds if paired else _draws(rng, n_boot, treatment.shape[0])
    distribution = (_resampled_statistic(treatment, treatment_seeds, examples, statistic)
                    - _resampled_statistic(base, base_seeds, examples, statistic))

    def plug_in(values):
        return float(statistic(values[:, 0]) if values.shape[1] == 1 else statistic(values))

    floor = 1.0 / n_boot
    below, above = float(np.mean(distribution <= 0)), float(np.mean(distribution >= 0))
    return Comparison(plug_in(treatment) - plug_in(base), *_percentile_interval(distribution, ci),
                      max(floor, min(1.0, 2 * min(below, above))), max(floor, below), distribution)


def _paired_by_label(base, treatment):
    """Pandas inputs reordered so that row i of both is the same seed label; arrays as they are."""
    if not isinstance(base, pd.Series | pd.DataFrame) or not isinstance(treatment, pd.Series | pd.DataFrame):
        return base, treatment
    if set(base.index) != set(treatment.index) or base.index.has_duplicates:
        raise ValueError(f"paired comparison needs the same seed labels on both sides: {sorted(base.index)} vs "
                         f"{sorted(treatment.index)}")
    return base.to_numpy(), treatment.loc[base.index].to_numpy()


# ---------------------------------------------------------------- variance decomposition over crossed seeds


def _two_way_table(frame: pd.DataFrame, outcome: str, factors: tuple[str, str]) -> np.ndarray:
    """Balanced crossed design -> outcomes [levels of factor 0, levels of factor 1, replicates]."""
    first, second = factors
    counts = frame.groupby([first, second]).size()
    n_first, n_second = frame[first].nunique(), frame[second].nunique()
    if len(counts) != n_first * n_second or counts.nunique() != 1:
        raise ValueError(f"{first} x {second} must be fully crossed with the same number of rows per cell "
                         f"(got {len(counts)} of {n_first * n_second} cells, sizes {sorted(counts.unique())})")
    ordered = frame.sort_values([first, second], kind="stable")
    return ordered[outcome].to_numpy(dtype=float).reshape(n_first, n_second, int(counts.iloc[0]))


def _anova(table: np.ndarray) -> dict[str, np.ndarray]:
    """Two-way ANOVA sums of squares, degrees of freedom and mean squares of table [..., a, b, r], vectorised
    over leading axes (one per bootstrap draw)."""
    a, b, r = table.shape[-3:]
    grand = table.mean(axis=(-3, -2, -1), keepdims=True)
    cell = table.mean(axis=-1, keepdims=True)  # [..., a, b, 1]
    row = cell.mean(axis=-2, keepdims=True)  # [..., a, 1, 1]
    col = cell.mean(axis=-3, keepdims=True)  # [..., 1, b, 1]
    ss = {
        "first": b * r * ((row - grand) ** 2).sum(axis=(-3, -2, -1)),
        "second": a * r * ((col - grand) ** 2).sum(axis=(-3, -2, -1)),
        "interaction": r * ((cell - row - col + grand) ** 2).sum(axis=(-3, -2, -1)),
        "residual": ((table - cell) ** 2).sum(axis=(-3, -2, -1)),
    }
    df = {"first": a - 1, "second": b - 1, "interaction": (a - 1) * (b - 1), "residual": a * b * (r - 1)}
    ms = {k: ss[k] / df[k] if df[k] > 0 else np.full_like(ss[k], np.nan) for k in ss}
    return {"ss": ss, "df": df, "ms": ms, "shape": (a, b, r)}


def _components(anova: dict) -> dict[str, np.ndarray]:
    """Random-effects variance components from expected mean squares, truncated at 0:
    E[MS_first] = s2_e + r s2_ab + b r s2_first, E[MS_second] = s2_e + r s2_ab + a r s2_second,
    E[MS_ab] = s2_e + r s2_ab, E[MS_e] = s2_e. Without replicates (r = 1) interaction and residual are one."""
    a, b, r = anova["shape"]
    ms = anova["ms"]
    out = {"first": np.maximum((ms["first"] - ms["interaction"]) / (b * r), 0.0),
           "second": np.maximum((ms["second"] - ms["interaction"]) / (a * r), 0.0)}
    if r > 1:
        out["interaction"] = np.maximum((ms["interaction"] - ms["residual"]) / r, 0.0)
        out["residual"] = ms["residual"]
    else:
        out["interaction"] = ms["interaction"]
    return out


class VarianceDecomposition:
    """Shares of an outcome's variance due to init seed, data order, their interaction and residual.

    Parameters (stored only): `factors` the two crossed columns; `n_boot`, `ci`, `random_state` for the
    pigeonhole bootstrap.

    Fitted: `anova_` (DataFrame per source: ss, df, ms) and `components_` (DataFrame per source: variance,
    share, ci_low, ci_high of the share). Sources are named by the factors, "interaction" and "residual";
    without replicates the interaction row is named "interaction+residual" and there is no residual row.
    """

    def __init__(self, *, factors: tuple[str, str] = ("init_seed", "data_seed"), n_boot: int = 1000,
                 ci: float = 0.95, random_state=None):
        self.factors = factors
        self.n_boot = n_boot
        self.ci = ci
        self.random_state = random_state

    def fit(self, frame: pd.DataFrame, outcome: str) -> VarianceDecomposition:
        """frame: one row per member with the two factor columns and `outcome`."""
        table = _two_way_table(frame, outcome, tuple(self.factors))
        a, b, r = table.shape
        anova = _anova(table)
        names = {"first": self.factors[0], "second": self.factors[1],
                 "interaction": "interaction" if r > 1 else "interaction+residual", "residual": "residual"}
        self.anova_ = pd.DataFrame({"ss": [float(anova["ss"][k]) for k in names],
                                    "df": [anova["df"][k] for k in names],
                                    "ms": [float(anova["ms"][k]) for k in names]},
                                   index=pd.Index(list(names.values()), name="source"))
        if r == 1:
            self.anova_ = self.anova_.drop(index="residual")

        rng = np.random.default_rng(self.random_state)
        rows, cols = _draws(rng, self.n_boot, a), _draws(rng, self.n_boot, b)
        boot_table = table[rows[:, :, None], cols[:, None, :]]  # [n_boot, a, b, r]
        point, boot = _components(anova), _components(_anova(boot_table))
        total, boot_total = sum(point.values()), sum(boot.values())
        records = []
        for key, variance in point.items():
            with np.errstate(invalid="ignore", divide="ignore"):
                shares = boot[key] / boot_total
            shares = shares[np.isfinite(shares)]  # a draw of identical outcomes has no variance to share
            low, high = (np.quantile(shares, [(1 - self.ci) / 2, (1 + self.ci) / 2]) if len(shares)
                         else (np.nan, np.nan))
            records.append({"source": names[key], "variance": float(variance),
                            "share": float(variance / total) if total > 0 else np.nan,
                            "ci_low": float(low), "ci_high": float(high)})
        self.components_ = pd.DataFrame(records).set_index("source")
        return self
