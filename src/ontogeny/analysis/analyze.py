"""Run every analysis that fits a run, read through the store, and write the results back as tables.

Tables written (one row per ...): `grokking` (member), `transitions` (member x curve x transition),
`example_dynamics` (member x split x example), `hidden_transitions` (member x split), `subset_onsets`
(member x split x subset), `seed_stats` (configuration x quantity), `variance` (quantity x component) and
`solutions` (member). Re-running overwrites them, so analysis is idempotent; a run still being written is
analyzed as far as it got.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..store import Run, write_table
from ._common import log_step
from .bootstrap import VarianceDecomposition, multibootstrap
from .dynamics import ExampleDynamics
from .grokking import GrokkingAnalysis
from .hidden import HiddenTransitions
from .solutions import SolutionTypes
from .transitions import TransitionDetector

ANALYSES = ("grokking", "transitions", "examples", "hidden", "seeds", "solutions")
CURVES = ("train/loss", "test/loss", "train/acc", "test/acc")
HYPERPARAMETER_PREFIXES = ("task.", "model.", "optim.")


@dataclass
class Analysis:
    """What `analyze` found: the tables it wrote and a readable summary, one line per finding."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    summary: list[str] = field(default_factory=list)


def analyze(run: Run, what: tuple[str, ...] | list[str] | None = None, *, random_state: int = 0,
            write: bool = True) -> Analysis:
    """Run the analyses named in `what` (default all of ANALYSES) on `run`; write their tables into it."""
    what = tuple(what or ANALYSES)
    unknown = set(what) - set(ANALYSES)
    if unknown:
        raise ValueError(f"unknown analyses {sorted(unknown)} (known: {', '.join(ANALYSES)})")
    result = Analysis()
    scalars, members = run.scalars(), run.members()
    if scalars.empty:
        result.summary.append("nothing recorded yet")
        return result
    members["config"] = config_labels(members)
    members = _analyzable(members, scalars, result.summary)
    if members.empty:
        result.summary.append("no member left to analyze")
        return result
    scalars = scalars[scalars.member.isin(members.member)]
    outcomes = member_outcomes(scalars, members)
    if "grokking" in what:
        _grokking(result, scalars, members, random_state)
    if "transitions" in what:
        _transitions(result, scalars)
    if "examples" in what or "hidden" in what:
        _examples_and_hidden(result, run, scalars, members, what, random_state)
    if "seeds" in what:
        _seed_stats(result, outcomes, members, random_state)
    if "solutions" in what:
        _solutions(result, outcomes, members, random_state)
    if write:
        for name, table in result.tables.items():
            write_table(run.path, name, table)
    return result


def _analyzable(members: pd.DataFrame, scalars: pd.DataFrame, summary: list[str]) -> pd.DataFrame:
    """The members with rows that did not diverge; says in `summary` which were left out and why."""
    diverged = members[members.status == "diverged"]
    if len(diverged):
        summary.append(f"skipped {len(diverged)} diverged member(s) (loss NaN/inf, frozen): " + ", ".join(
            f"{m} at step {s}" for m, s in zip(diverged.member, diverged.diverged_step)))
    recorded = set(scalars.member.unique())
    waiting = members[~members.member.isin(recorded) & (members.status != "diverged")]
    if len(waiting):
        summary.append(f"{len(waiting)} member(s) have no rows yet (still to train, or the run stopped): "
                       f"{_id_list(waiting.member)}")
    unknown = sorted(recorded - set(members.member))
    if unknown:
        summary.append(f"skipped rows of {len(unknown)} member(s) missing from the members table: {_id_list(unknown)}")
    return members[members.member.isin(recorded) & (members.status != "diverged")]


def _id_list(ids, limit: int = 20) -> str:
    ids = [str(i) for i in ids]
    return ", ".join(ids[:limit]) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def config_labels(members: pd.DataFrame) -> pd.Series:
    """A text label per member naming its grid point by the hyperparameters that vary ("all" without a sweep)."""
    varying = [c for c in members.columns if c.startswith(HYPERPARAMETER_PREFIXES) and members[c].nunique() > 1]
    if not varying:
        return pd.Series("all", index=members.index)
    return members[varying].apply(lambda row: ", ".join(f"{k}={v}" for k, v in row.items()), axis=1)


def member_outcomes(scalars: pd.DataFrame, members: pd.DataFrame) -> pd.DataFrame:
    """Per member: final value of every scalar and the area under test/acc in log-step (mean accuracy in log time)."""
    last = scalars[scalars.step == scalars.groupby("member").step.transform("max")]
    outcomes = last.pivot_table(index="member", columns="name", values="value").add_prefix("final ")
    acc = scalars[scalars.name == "test/acc"].sort_values("step")
    if not acc.empty:
        outcomes["test/acc area"] = acc.groupby("member").apply(_log_area, include_groups=False)
    return outcomes.reindex(members.member)


def _log_area(frame: pd.DataFrame) -> float:
    x = log_step(frame.step.to_numpy(dtype=float))
    return float(np.trapezoid(frame.value, x) / (x[-1] - x[0])) if len(x) > 1 else float("nan")


def _grokking(result: Analysis, scalars, members, random_state) -> None:
    if not {"train/acc", "test/acc"} <= set(scalars.name):
        return
    swept = "task.train_fraction" in members and members["task.train_fraction"].nunique() > 1
    fit = GrokkingAnalysis(sweep="task.train_fraction" if swept else None, random_state=random_state).fit(
        scalars, members)
    steps = fit.steps_.reset_index(names="member")
    result.tables["grokking"] = steps[["member", "memorization_step", "generalization_step", "delay"]]
    for config, group in members.groupby("config", sort=False):
        gen = steps.set_index("member").loc[group.member, "generalization_step"]
        done = gen.dropna()
        line = f"test/acc [{config}]: {len(done)}/{len(gen)} members generalize (>= 99%)"
        if len(done) >= 2:
            ci = multibootstrap(done.to_numpy(), statistic=np.median, random_state=random_state)
            line += f"; generalization step {ci.estimate:.0f} [{ci.low:.0f}, {ci.high:.0f}] (median, 95% CI over seeds)"
        elif len(done) == 1:
            line += f"; generalization step {done.iloc[0]:.0f}"
        result.summary.append(line)
    if fit.data_threshold_ is not None:
        low, high = fit.data_threshold_ci_
        result.summary.append(f"data threshold (train fraction where >= half the seeds generalize): "
                              f"{fit.data_threshold_:g} [{low:g}, {high:g}] (95% CI over seeds)")
        result.tables["grokking_sweep"] = fit.by_sweep_.reset_index()
        result.tables.setdefault("_threshold", pd.DataFrame(
            [{"config": "all", "quantity": "data_threshold", "estimate": fit.data_threshold_, "ci_low": low,
              "ci_high": high, "n_members": len(members)}]))


def _transitions(result: Analysis, scalars) -> None:
    frames = []
    for member, rows in scalars[scalars.name.isin(CURVES)].groupby("member"):
        curves = rows.pivot_table(index="name", columns="step", values="value").dropna(axis=1)
        if curves.shape[1] < 8:  # too few checkpoints to tell a change from noise
            continue
        fit = TransitionDetector(log_steps=True).fit(curves.columns.to_numpy(), curves.to_numpy(),
                                                     names=list(curves.index))
        frames.append(fit.transitions_.assign(member=member))
    if frames:
        table = pd.concat(frames, ignore_index=True)
        result.tables["transitions"] = table[["member", *[c for c in table.columns if c != "member"]]]
        for curve, rows in table.groupby("curve"):
            result.summary.append(f"{curve}: {len(rows)} transitions in {rows.member.nunique()} members; "
                                  f"median onset step {rows.onset_step.median():.0f}")


def example_curves(run: Run, member: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per split of one member: (example ids [N], steps [S], loss [N, S], correct [N, S]) over complete steps."""
    frame = run.examples(member=member, relation=True).order("split, example, step").df()
    curves = {}
    for split, rows in frame.groupby("split", observed=True):
        examples, steps = np.unique(rows.example.to_numpy()), np.unique(rows.step.to_numpy())
        i, j = np.searchsorted(examples, rows.example.to_numpy()), np.searchsorted(steps, rows.step.to_numpy())
        loss = np.full((len(examples), len(steps)), np.nan, dtype=np.float32)
        correct = np.zeros((len(examples), len(steps)), dtype=bool)
        loss[i, j], correct[i, j] = rows.loss.to_numpy(), rows.correct.to_numpy()
        complete = ~np.isnan(loss).any(axis=0)  # a run still being written may hold part of its last step
        curves[str(split)] = (examples, steps[complete], loss[:, complete], correct[:, complete])
    return curves


def _examples_and_hidden(result: Analysis, run, scalars, members, what, random_state) -> None:
    dynamics, hidden, onsets = [], [], []
    subsets = run.subsets()
    for member in members.member:
        for split, (examples, steps, loss, correct) in example_curves(run, int(member)).items():
            if len(steps) < 3:
                continue
            if "examples" in what:
                table = ExampleDynamics().fit(steps, loss=loss, correct=correct, index=examples).table_
                dynamics.append(table.reset_index(names="example").assign(member=member, split=split))
            if "hidden" in what:
                names = sorted(subsets[subsets.split == split].subset.unique())
                level, curves, labels = "example", loss, examples
                if names:  # named subsets (e.g. subtasks): their curves, recorded as scalars
                    rows = scalars[(scalars.member == member) & scalars.name.isin([f"{split}/{n}/loss" for n in names])]
                    wide = rows.pivot_table(index="name", columns="step", values="value").reindex(columns=steps)
                    level, curves, labels = "subset", wide.to_numpy(), [n.split("/")[1] for n in wide.index]
                aggregate = scalars[(scalars.member == member) & (scalars.name == f"{split}/loss")]
                aggregate = aggregate.set_index("step").value.reindex(steps).to_numpy()
                fit = HiddenTransitions(random_state=random_state).fit(steps, curves, aggregate)
                quantiles = fit.onset_quantiles_
                hidden.append({"member": member, "split": split, "level": level, "n_curves": len(curves),
                               "n_learned": int(np.isfinite(fit.onsets_).sum()), "onset_median": quantiles[0.5],
                               "onset_q25": quantiles[0.25], "onset_q75": quantiles[0.75], "n_groups": fit.n_groups_,
                               "median_width": float(np.nanmedian(fit.rises_)), "aggregate_width": fit.aggregate_rise_})
                if level == "subset":
                    onsets.append(pd.DataFrame({"member": member, "split": split, "subset": labels,
                                                "onset_step": fit.onsets_, "width": fit.rises_}))
    if dynamics:
        table = pd.concat(dynamics, ignore_index=True).rename(columns={"n_forgetting": "forgetting_events",
                                                                       "ever_learned": "learned"})
        front = ["member", "split", "example"]
        result.tables["example_dynamics"] = table[front + [c for c in table.columns if c not in front]]
        learned = table.aoa_step.notna()
        result.summary.append(f"examples: {learned.mean():.0%} of member x example curves acquired; median age of "
                              f"acquisition step {table.aoa_step.median():.0f}; {int(table.forgetting_events.sum())} "
                              f"forgetting events")
    if hidden:
        table = pd.DataFrame(hidden)
        result.tables["hidden_transitions"] = table
        for (split, level), rows in table.groupby(["split", "level"]):
            result.summary.append(
                f"hidden transitions ({split}, per {level}): {rows.n_learned.median():.0f}/{rows.n_curves.median():.0f}"
                f" curves change; onsets span steps {rows.onset_q25.median():.0f}-{rows.onset_q75.median():.0f} "
                f"(IQR) in {rows.n_groups.median():.0f} groups; each rises in {rows.median_width.median():.2f} "
                f"decades vs {rows.aggregate_width.median():.2f} for the aggregate (median over members)")
    if onsets:
        result.tables["subset_onsets"] = pd.concat(onsets, ignore_index=True)


def _seed_stats(result: Analysis, outcomes, members, random_state) -> None:
    quantities = {"generalization_step": None, "memorization_step": None, "final test/acc": "final test/acc",
                  "final test/loss": "final test/loss", "test/acc area": "test/acc area"}
    per_member = outcomes.copy()
    if "grokking" in result.tables:
        steps = result.tables["grokking"].set_index("member")
        per_member["generalization_step"] = steps.generalization_step
        per_member["memorization_step"] = steps.memorization_step
    rows = []
    for config, group in members.groupby("config", sort=False):
        values = per_member.loc[group.member.to_numpy()]
        for quantity in quantities:
            if quantity not in values:
                continue
            data = values[quantity].dropna().to_numpy(dtype=float)
            if len(data) < 2:
                continue
            ci = multibootstrap(data, random_state=random_state)
            rows.append({"config": config, "quantity": quantity, "estimate": ci.estimate, "ci_low": ci.low,
                         "ci_high": ci.high, "n_members": len(data)})
    table = pd.DataFrame(rows, columns=["config", "quantity", "estimate", "ci_low", "ci_high", "n_members"])
    threshold = result.tables.pop("_threshold", None)
    if threshold is not None:
        table = pd.concat([table, threshold], ignore_index=True)
    result.tables["seed_stats"] = table
    if members.config.nunique() == 1 and members.init_seed.nunique() > 1 and members.data_seed.nunique() > 1:
        _variance(result, per_member, members, random_state)


def _variance(result: Analysis, per_member, members, random_state) -> None:
    frame = members.set_index("member")[["init_seed", "data_seed"]].join(per_member)
    rows = []
    for quantity in ("final test/loss", "final test/acc", "test/acc area"):
        if quantity not in frame or frame[quantity].isna().any():
            continue
        fit = VarianceDecomposition(random_state=random_state).fit(frame, quantity)
        for component, row in fit.components_.iterrows():
            name = {"init_seed": "init", "data_seed": "data"}.get(component, component)
            rows.append({"quantity": quantity, "component": name, "share": row["share"],
                         "ci_low": row.get("ci_low", np.nan), "ci_high": row.get("ci_high", np.nan)})
    if rows:
        table = pd.DataFrame(rows)
        result.tables["variance"] = table
        for quantity, part in table.groupby("quantity", sort=False):
            shares = ", ".join(f"{r.component} {r.share:.0%}" for r in part.itertuples())
            result.summary.append(f"variance of {quantity}: {shares}")


def _solutions(result: Analysis, outcomes, members, random_state) -> None:
    columns = [c for c in outcomes.columns if c.startswith("final ") and c.endswith("/acc")]
    frames = []
    for config, group in members.groupby("config", sort=False):
        if len(group) < 3 or not columns:
            continue
        frame = outcomes.loc[group.member.to_numpy(), columns].reset_index()
        fit = SolutionTypes(random_state=random_state).fit(frame.dropna(), columns)
        frames.append(pd.DataFrame({"member": fit.labels_.index, "config": config, "cluster": fit.labels_.values,
                                    "outlier": fit.outliers_.values}))
        flagged = list(fit.outliers_[fit.outliers_].index)
        result.summary.append(f"solutions [{config}]: {fit.n_clusters_} type(s) among {len(group)} members"
                              + (f"; outliers: members {flagged}" if flagged else "; no outliers"))
    if frames:
        result.tables["solutions"] = pd.concat(frames, ignore_index=True)
