"""Run the analysis steps that fit a run, read through the store, and write their tables back into it.

Each step lives in its own module under `analysis/steps/` and registers itself with `@analysis_step`, saying
which scalars it needs (or the examples table) and which earlier steps' results it reads; results pass between
steps explicitly (`context.results`). Re-running overwrites the tables, so analysis is idempotent; a run still
being written is analyzed as far as it got, and diverged members are left out (and named in the summary).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from graphlib import CycleError, TopologicalSorter
from typing import Any

import numpy as np
import pandas as pd

from ..registry import Registry
from ..store import Run, one_line_when_disk_full, write_table
from ._common import log_step
from .summary import grid_labels

ANALYSES = Registry("analysis", "ontogeny.analysis.steps")


@dataclass
class StepResult:
    """What one step found: tables to write, summary lines, and values later steps may read."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    summary: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """A registered analysis step: `function(context) -> StepResult`, run when the run has what it `needs`."""

    name: str
    function: Callable[[Context], StepResult]
    scalars: tuple[str, ...] = ()  # every one of these scalar curves must be recorded
    examples: bool = False  # needs per-example rows
    tables: tuple[str, ...] = ()  # needs these tables (e.g. a suite's `revisions`)
    after: tuple[str, ...] = ()  # steps whose results it reads, when they run
    on_request: bool = False  # costly (it recomputes through the models): runs only when named in `what`
    writes: tuple[str, ...] = ()  # the tables it may write: the one place their names are declared

    def missing(self, context: Context) -> str | None:
        """What the run lacks for this step, or None."""
        absent = [name for name in self.scalars if name not in context.scalar_names]
        if absent:
            return f"no {', '.join(absent)} recorded"
        if self.examples and not context.has_examples:
            return "no per-example rows recorded"
        absent = [name for name in self.tables if name not in context.run.tables()]
        if absent:
            return f"no {', '.join(absent)} table"
        return None


def analysis_step(name: str, *, scalars: tuple[str, ...] = (), examples: bool = False, tables: tuple[str, ...] = (),
                  after: tuple[str, ...] = (), on_request: bool = False, writes: tuple[str, ...] = ()) -> Callable:
    """Decorator registering `function(context) -> StepResult` as the analysis step `name`, which writes at most
    the tables named in `writes`."""
    def register(function: Callable[[Context], StepResult]) -> Callable[[Context], StepResult]:
        ANALYSES.register(name)(Step(name, function, scalars, examples, tables, after, on_request, writes))
        return function
    return register


@dataclass
class Context:
    """What a step reads: the run, the scalars and members it may analyze, earlier steps' results."""

    run: Run
    scalars: pd.DataFrame  # member, step, name, value of the analyzable members
    members: pd.DataFrame  # the analyzable members, with a `config` label per grid point
    random_state: int
    results: dict[str, StepResult] = field(default_factory=dict)
    options: dict[str, dict[str, str]] = field(default_factory=dict)  # per step: {"llc": {"lr": "1e-3"}}

    @cached_property
    def scalar_names(self) -> set[str]:
        return set(self.scalars.name.unique())

    @cached_property
    def has_examples(self) -> bool:
        return bool(len(self.run.examples(relation=True).limit(1).fetchall()))

    @cached_property
    def outcomes(self) -> pd.DataFrame:
        """Per member: the final value of every scalar and the area under test/acc in log-step."""
        return member_outcomes(self.scalars, self.members)

    def example_curves(self, member: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Per split of one member: (example ids [N], steps [S], loss [N, S], correct [N, S]) over complete steps."""
        frame = self.run.examples(member=member, relation=True).order("split, example, step").df()
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


@dataclass
class Analysis:
    """What `analyze` found: the tables it wrote and a readable summary, one line per finding."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    summary: list[str] = field(default_factory=list)


def analyze(run: Run, what: tuple[str, ...] | list[str] | None = None, *, random_state: int = 0,
            write: bool = True, progress: Callable[[str, int, int], None] | None = None,
            options: dict[str, dict[str, str]] | None = None) -> Analysis:
    """Run the steps named in `what` (default every registered step but those run on request) on `run`; write their
    tables into it. `progress(step name, its number from 1, the number of steps)` is called as each step starts.
    `options` are settings of single steps, {step: {key: value}} (e.g. {"llc": {"lr": "3e-3"}})."""
    asked = tuple(what or ())
    unknown = [name for name in (*asked, *(options or {})) if name not in ANALYSES]
    if unknown:
        raise ValueError(f"unknown analyses {sorted(unknown)} (known: {', '.join(ANALYSES.names())})")
    with run.pinned():  # a run still being written is read as it stood when the analysis began
        return _analyze(run, asked, random_state, write, progress, options or {})


def _analyze(run: Run, asked: tuple[str, ...], random_state: int, write: bool,
             progress: Callable[[str, int, int], None] | None, options: dict[str, dict[str, str]]) -> Analysis:
    result = Analysis()
    if run.has_spec:
        run.spec  # noqa: B018 (reading it checks it against the hash it was trained under: an edited spec is refused)
    scalars, members = run.scalars(), run.members()
    if scalars.empty:
        result.summary.append("nothing recorded yet")
        return result
    members["config"] = grid_labels(members)
    members = _analyzable(members, scalars, result.summary)
    if members.empty:
        result.summary.append("no member left to analyze")
        return result
    context = Context(run, scalars[scalars.member.isin(members.member)], members, random_state, options=options)
    steps = [ANALYSES.get(name) for name in asked] or [
        step for step in map(ANALYSES.get, ANALYSES.names()) if not step.on_request]
    ordered = _ordered(steps)
    for number, step in enumerate(ordered, 1):
        if progress:
            progress(step.name, number, len(ordered))
        missing = step.missing(context)
        if missing:
            if step.name in asked:
                result.summary.append(f"{step.name}: skipped ({missing})")
            continue
        outcome = context.results[step.name] = step.function(context)
        undeclared = sorted(set(outcome.tables) - set(step.writes))
        if undeclared:  # a step's tables are named where it is registered, so readers and the docs can find them
            raise ValueError(f"analysis step {step.name!r} wrote {undeclared}, which its writes= does not name")
        result.tables.update(outcome.tables)
        result.summary.extend(outcome.summary)
    if write:
        with one_line_when_disk_full(run.path, "run the same command again"):  # each table is written whole or not
            for name, table in result.tables.items():
                write_table(run.path, name, table)
    return result


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


def _ordered(steps: list[Step]) -> list[Step]:
    """The steps in name order, each after the steps it reads (when those run too): the first ready name each time."""
    chosen = {step.name: step for step in steps}
    sorter = TopologicalSorter({name: [a for a in step.after if a in chosen] for name, step in chosen.items()})
    try:
        sorter.prepare()
    except CycleError as err:
        raise ValueError(f"analysis steps read each other in a circle: {' -> '.join(err.args[1])}") from None
    ready, done = [], []
    while sorter.is_active():
        ready = sorted([*ready, *sorter.get_ready()])
        done.append(chosen[ready.pop(0)])
        sorter.done(done[-1].name)
    return done


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
                       f"{id_list(waiting.member)}")
    unknown = sorted(recorded - set(members.member))
    if unknown:
        summary.append(f"skipped rows of {len(unknown)} member(s) missing from the members table: {id_list(unknown)}")
    return members[members.member.isin(recorded) & (members.status != "diverged")]


def id_list(ids, limit: int = 20) -> str:
    """'1, 2, 3' (at most `limit` ids, then 'and N more')."""
    ids = [str(i) for i in ids]
    return ", ".join(ids[:limit]) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")
