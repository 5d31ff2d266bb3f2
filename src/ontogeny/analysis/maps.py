"""Training maps (Hu et al. 2023, "Latent state models of training dynamics"): a Gaussian HMM over the members'
trajectories of training metrics, its states shared by all seeds, and the detours that only some seeds take.

Each checkpoint of a member is one observation: the metrics it recorded (losses and norms as log10, every metric
standardized over all members and steps). One HMM with diagonal covariances is fitted to all members' sequences
together (hmmlearn, EM from k-means means), so a state means the same thing for every seed; the number of states is
the lowest BIC over 1..max_states, each the best of several restarts. Viterbi gives each member's state sequence.

States are numbered by when members first reach them (median first-visit step). The end state is the most common
final state; a member that ends there arrives at its first visit. A state that some members visit and others do not
has a delay: the median arrival step of the members that visit it minus that of the members that do not, with a
one-sided rank-sum permutation p-value (do the visitors arrive later?). It is a detour (after Hu et al., who call
states that some runs take and that slow convergence detours, and test them against convergence time) when every
visitor leaves it again and the test finds the delay at `alpha` (0.05); a state one seed of eight visits can never
be one (its smallest p is 1/8).

Hu et al.'s code (michahu/modeling-training) also fits hmmlearn's diagonal GaussianHMM, up to 8 states, 5 restarts;
it z-scores each run on its own and scores BIC on held-out runs. Here every metric is standardized over all members
and steps, so a state is the same level of a metric for every seed (a seed that never generalizes keeps its low
test accuracy instead of being rescaled to look like the others). BIC is scored on held-out members as theirs is:
the members are split in two halves, each half scored under the other's fit, and the two BICs averaged (scored on
the fitted members, BIC chose the largest number tried, 8, in all 27 maps of a held-out check: it favours more
states on long, smoothly drifting trajectories, Pohle et al. 2017); with fewer than 4 members it is scored in
sample. The map is then refitted on every member with the chosen number of states. Their features differ: they
fit weight statistics (norms, spectra, sparsity, moments of each layer), with loss and accuracy only for
convergence time; this map fits the recorded metrics (by default losses, accuracies, weight and gradient norm).

Checkpoints are the HMM's time steps, whatever their spacing: transition probabilities are per checkpoint, while
dwell times and delays are given in training steps.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

# The metrics a map is built from when a run has them (Hu et al. use the training and test metrics and norms).
DEFAULT_METRICS = ("train/loss", "test/loss", "train/acc", "test/acc", "weight_norm", "grad_norm")
# Losses and norms span orders of magnitude over training: their log10 keeps early steps from dominating.
LOG_SUFFIXES = ("loss", "norm")
# Variance floor of each state in standardized units: stops a state collapsing onto a flat plateau (train/acc = 1).
MIN_COVAR = 1e-3
# Fewest members for choosing the number of states on held-out members (two halves of at least two)
MIN_HELD_OUT_MEMBERS = 4


def map_features(scalars: pd.DataFrame, metrics: Sequence[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(features, scale): features [rows, D] indexed by (member, step), sorted, in standardized units; scale per
    metric (index) with columns log (bool: log10 taken), mean, std (of the transformed values).

    `metrics` default: those of DEFAULT_METRICS the run recorded, else every recorded curve but `lr`. Checkpoints
    missing one of the metrics are left out; a metric that never changes carries no information and is dropped."""
    recorded = list(dict.fromkeys(scalars["name"]))
    if metrics is None:
        metrics = [m for m in DEFAULT_METRICS if m in recorded] or [m for m in recorded if m != "lr"]
    absent = [m for m in metrics if m not in recorded]
    if absent:
        raise ValueError(f"metrics {absent} not recorded (recorded: {', '.join(recorded)})")
    rows = scalars[scalars["name"].isin(metrics)]
    wide = rows.pivot_table(index=["member", "step"], columns="name", values="value", aggfunc="last")
    wide = wide.reindex(columns=list(metrics)).replace([np.inf, -np.inf], np.nan).dropna().sort_index()
    logs = {m: m.endswith(LOG_SUFFIXES) and bool((wide[m] > 0).all()) for m in wide.columns}
    transformed = wide.apply(lambda column: np.log10(column) if logs[column.name] else column)
    mean, std = transformed.mean(), transformed.std(ddof=0)
    kept = [m for m in transformed.columns if std[m] > 1e-12 * max(1.0, abs(mean[m]))]
    if not kept or wide.empty:
        raise ValueError(f"no metric of {list(metrics)} varies over the recorded checkpoints: nothing to map")
    scale = pd.DataFrame({"log": pd.Series(logs), "mean": mean, "std": std}).loc[kept]
    return (transformed[kept] - mean[kept]) / std[kept], scale


class TrainingMap:
    """One Gaussian HMM over all members' metric trajectories; states, transitions and detours.

    Parameters (stored only): `metrics` (default: see `map_features`); `max_states` tried by BIC; `n_restarts` EM
    runs per number of states (the best log-likelihood is kept); `n_iter`, `tol` of each EM run; `max_fit_members`:
    with more members the HMM is fitted to a random subset of that many (every member is still decoded);
    `random_state` seeds hmmlearn's k-means and initial probabilities.

    Fitted: `features_` (standardized observations, index member, step), `scale_` (see `map_features`), `bic_`
    (BIC per number of states, NaN where not tried), `n_states_`, `model_` (the hmmlearn model, its own state
    order), `order_` (model state -> map state), `states_` (member, step, state), `transmat_` [K, K] and
    `means_` [K, D] (map order, standardized), `state_table_`, `transitions_`, `end_state_`, `arrival_` (member ->
    first step in the end state, NaN if it ends elsewhere), `fit_members_`.
    """

    def __init__(self, *, metrics: Sequence[str] | None = None, max_states: int = 8, n_restarts: int = 5,
                 n_iter: int = 300, tol: float = 1e-3, max_fit_members: int = 64, alpha: float = 0.05,
                 random_state=None):
        self.metrics = metrics
        self.alpha = alpha
        self.max_states = max_states
        self.n_restarts = n_restarts
        self.n_iter = n_iter
        self.tol = tol
        self.max_fit_members = max_fit_members
        self.random_state = random_state

    def fit(self, scalars: pd.DataFrame) -> TrainingMap:
        """Fit the map to a scalars frame (member, step, name, value); returns self."""
        if self.max_states < 1 or self.n_restarts < 1:
            raise ValueError(f"max_states and n_restarts must be >= 1, got {self.max_states}, {self.n_restarts}")
        features, self.scale_ = map_features(scalars, self.metrics)
        lengths = features.groupby(level="member").size()
        short = lengths.index[lengths < 2]
        if len(short):
            features = features.drop(index=short, level="member")
            lengths = lengths.drop(short)
        if lengths.empty:
            raise ValueError("every member has fewer than 2 complete checkpoints: no trajectory to map")
        self.features_ = features
        rng = np.random.default_rng(self.random_state)
        members = lengths.index.to_numpy()
        if len(members) > self.max_fit_members:
            members = np.sort(rng.choice(members, self.max_fit_members, replace=False))
        self.fit_members_ = members
        fit_rows = features.loc[members]
        x_fit, fit_lengths = fit_rows.to_numpy(), lengths.loc[members].to_numpy()
        seeds = rng.integers(0, 2**31 - 1, size=(self.max_states, self.n_restarts))
        distinct = len(np.unique(x_fit.round(12), axis=0))
        self.bic_ = pd.Series(np.nan, index=pd.RangeIndex(1, self.max_states + 1, name="n_states"), name="bic")
        # held out, as Hu et al.: the members split in two halves, each half's BIC under the other half's fit
        halves = np.array_split(rng.permutation(len(members)), 2) if len(members) >= MIN_HELD_OUT_MEMBERS else []
        self.held_out_ = bool(halves)
        best = None
        for n_states in range(1, min(self.max_states, distinct) + 1):
            if halves:
                scores = [self._held_out_bic(fit_rows, members, fit_half, score_half, n_states, seeds[n_states - 1])
                          for fit_half, score_half in (halves, halves[::-1])]
                self.bic_[n_states] = np.mean(scores)
                continue
            model = self._best_of_restarts(x_fit, fit_lengths, n_states, seeds[n_states - 1])
            if model is None:  # every restart lost a state
                continue
            self.bic_[n_states] = model.bic(x_fit, fit_lengths)
            if best is None or self.bic_[n_states] < self.bic_[best.n_components]:
                best = model
        if halves:
            chosen = int(self.bic_.idxmin())
            best = self._best_of_restarts(x_fit, fit_lengths, chosen, seeds[chosen - 1])
        self.model_, self.n_states_ = best, best.n_components
        _, raw = best.decode(features.to_numpy(), lengths.to_numpy(), algorithm="viterbi")
        self._number_states(features.index, raw)
        self._tabulate(rng)
        return self

    def _held_out_bic(self, rows: pd.DataFrame, members, fit_half, score_half, n_states: int, seeds) -> float:
        """BIC of the members in `score_half` under the best HMM fitted to those in `fit_half` (NaN if none fits)."""
        fit, score = rows.loc[members[fit_half]], rows.loc[members[score_half]]
        model = self._best_of_restarts(fit.to_numpy(), fit.groupby(level="member").size().to_numpy(), n_states, seeds)
        if model is None:
            return float("nan")
        model.implementation = "log"  # members the fit never saw can be far from every state: no underflow in logs
        return float(model.bic(score.to_numpy(), score.groupby(level="member").size().to_numpy()))

    def _best_of_restarts(self, x, lengths, n_states: int, seeds):
        from hmmlearn.hmm import GaussianHMM  # a dependency (pyproject), imported where it is used: it loads slowly
        from threadpoolctl import threadpool_limits

        best, best_score = None, -np.inf
        # hmmlearn's k-means start runs on OpenMP threads: on a few hundred points, with torch loaded, their
        # start-up and spinning cost 100x the work (measured: 0.1 s per k-means run); one thread is faster
        with _quiet("hmmlearn"), threadpool_limits(limits=1):
            for seed in seeds[:1] if n_states == 1 else seeds:
                model = GaussianHMM(n_components=n_states, covariance_type="diag", min_covar=MIN_COVAR,
                                    n_iter=self.n_iter, tol=self.tol, random_state=int(seed),
                                    implementation="scaling")  # 3x faster than "log" here, same optimum
                try:
                    # a restart whose state loses all its mass divides 0 by 0 in the M-step: drop that restart
                    with np.errstate(divide="ignore", invalid="ignore"):
                        score = model.fit(x, lengths).score(x, lengths)
                except ValueError:  # hmmlearn's own check of NaN probabilities
                    continue
                if np.isfinite(score) and score > best_score:
                    best, best_score = model, score
        return best

    def _number_states(self, index: pd.MultiIndex, raw: np.ndarray) -> None:
        """Renumber the model's states by median first-visit step (unvisited states last)."""
        frame = pd.DataFrame({"member": index.get_level_values("member"), "step": index.get_level_values("step"),
                              "state": raw})
        first = frame.groupby(["state", "member"]).step.min().groupby("state").median()
        order = np.argsort(first.reindex(range(self.n_states_)).fillna(np.inf).to_numpy(), kind="stable")
        self.order_ = np.empty(self.n_states_, dtype=int)
        self.order_[order] = np.arange(self.n_states_)
        frame["state"] = self.order_[raw]
        self.states_ = frame
        self.transmat_ = self.model_.transmat_[np.ix_(order, order)]
        self.means_ = self.model_.means_[order]

    def _tabulate(self, rng: np.random.Generator) -> None:
        states, n_states = self.states_, self.n_states_
        members = states.member.unique()
        runs = _stretches(states)  # one row per stay in a state
        final = states.groupby("member").state.last()
        counts = final.value_counts()
        # the most common final state; ties go to the state reached later
        self.end_state_ = int(max(counts.index, key=lambda s: (counts[s], s)))
        # arrival: first entry into the end state, for the members that end there (a member may flicker in and out)
        entries = runs[runs.state == self.end_state_].groupby("member").entry.min().astype(float)
        self.arrival_ = entries.where(final.reindex(entries.index) == self.end_state_).reindex(members)
        visits = runs.groupby("state").member.unique()
        rows = []
        for state in range(n_states):
            visitors = visits.get(state, np.array([]))
            share = len(visitors) / len(members)
            final_share = float((final == state).mean())
            delay, p_value = np.nan, np.nan
            if 0 < share < 1:  # an optional state: what does visiting it cost?
                arrived = self.arrival_.dropna()
                delay, p_value = median_delay(arrived.to_numpy(), arrived.index.isin(visitors), rng)
            detour = bool(final_share == 0 and delay > 0 and p_value <= self.alpha)
            stays = runs[runs.state == state]
            rows.append({"state": state, "n_members": len(visitors), "share": share, "final_share": final_share,
                         "detour": detour, "delay_steps": float(delay), "delay_p": float(p_value),
                         "first_step": float(stays.groupby("member").entry.min().median()) if len(stays) else np.nan,
                         "mean_dwell_checkpoints": float(stays.length.mean()) if len(stays) else np.nan,
                         "mean_dwell_steps": float(stays.dwell.mean()) if len(stays) else np.nan})
        table = pd.DataFrame(rows)
        means = self.means_ * self.scale_["std"].to_numpy() + self.scale_["mean"].to_numpy()  # [K, D]
        for j, metric in enumerate(self.scale_.index):
            table[metric] = 10.0 ** means[:, j] if self.scale_.loc[metric, "log"] else means[:, j]
        self.state_table_ = table
        member, state = states.member.to_numpy(), states.state.to_numpy()
        same_member = member[1:] == member[:-1]
        observed = pd.Series(1, index=pd.MultiIndex.from_arrays(
            [state[:-1][same_member], state[1:][same_member]])).groupby(level=[0, 1]).size()
        i, j = np.meshgrid(np.arange(n_states), np.arange(n_states), indexing="ij")
        transitions = pd.DataFrame({"from_state": i.ravel(), "to_state": j.ravel(),
                                    "probability": self.transmat_.ravel()})
        transitions["n_observed"] = [int(observed.get((a, b), 0)) for a, b in zip(i.ravel(), j.ravel())]
        keep = (transitions.probability >= 1e-3) | (transitions.n_observed > 0)
        self.transitions_ = transitions[keep].reset_index(drop=True)

    def paths(self) -> pd.Series:
        """Per member: its sequence of distinct states, e.g. (0, 1, 3)."""
        runs = _stretches(self.states_)
        return runs.groupby("member").state.agg(tuple)


def median_delay(arrival: np.ndarray, visited: np.ndarray, rng: np.random.Generator,
                 n_permutations: int = 10_000) -> tuple[float, float]:
    """(median arrival of the visitors - median arrival of the others, one-sided p-value that visitors arrive later)
    over members' arrival steps [N] and whether each visited the state [N] (bool). The p-value is the Wilcoxon
    rank-sum (Mann-Whitney) permutation test: how often relabeling which members visited gives the visitors a rank
    sum at least as large, exactly over all relabelings when there are at most `n_permutations`, else over that many
    random ones (ties get average ranks). Its smallest value is 1 / C(N, visitors): 0.018 for 3 of 8 (a median
    difference could not go below 0.054 there). NaN when either group is empty."""
    from scipy.stats import rankdata

    n_visited = int(visited.sum())
    if n_visited == 0 or n_visited == len(arrival):
        return float("nan"), float("nan")
    observed = np.median(arrival[visited]) - np.median(arrival[~visited])
    if math.comb(len(arrival), n_visited) <= n_permutations:
        groups = np.array(list(itertools.combinations(range(len(arrival)), n_visited)))  # [P, n_visited]
    else:
        groups = np.argsort(rng.random((n_permutations, len(arrival))), axis=1)[:, :n_visited]
    ranks = rankdata(arrival)
    sums = ranks[groups].sum(axis=1)  # [P]
    return float(observed), float(np.mean(sums >= ranks[visited].sum() - 1e-9))


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Silence a library's log messages (hmmlearn logs every restart that leaves a state empty) for a block."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _stretches(states: pd.DataFrame) -> pd.DataFrame:
    """One row per stay of a member in a state: member, state, entry (first step), length (checkpoints), dwell
    (steps from entry to the next state's entry, or to the member's last step when it never leaves)."""
    member, step, state = (states[c].to_numpy() for c in ("member", "step", "state"))
    new = np.ones(len(states), dtype=bool)
    new[1:] = (member[1:] != member[:-1]) | (state[1:] != state[:-1])
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], len(states))  # exclusive
    last_of_member = pd.Series(step).groupby(member).transform("max").to_numpy()
    exit_step = np.where((ends < len(states)) & (member[np.minimum(ends, len(states) - 1)] == member[starts]),
                         step[np.minimum(ends, len(states) - 1)], last_of_member[starts])
    return pd.DataFrame({"member": member[starts], "state": state[starts], "entry": step[starts],
                         "length": ends - starts, "dwell": exit_step - step[starts]})
