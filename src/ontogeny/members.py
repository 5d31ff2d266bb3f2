"""From a spec to members (grid points x init seeds x data orders) and from members to ensembles."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import pandas as pd

from .spec import Spec
from .store import member_row, members_frame


@dataclass(frozen=True)
class Member:
    """One trained model: its id, its ensemble, its seeds and its fully resolved spec (one grid point)."""

    member: int
    ensemble: int
    init_seed: int
    data_seed: int
    spec: Spec


def shape_key(spec: Spec) -> str:
    """Specs with the same key can be trained together: equal after resetting the per-member fields."""
    data = spec.to_dict()
    for key in spec.member_fields():
        section, name = key.split(".")
        data[section].pop(name, None)
    return repr(data)


def expand(spec: Spec) -> list[Member]:
    """Return every member of `spec` in a stable order: grid point, then init seed, then data order."""
    points = spec.grid() if spec.sweep else [{}]
    ensembles: dict[str, int] = {}
    members = []
    for point in points:
        resolved = spec.at(point) if point else dataclasses.replace(spec, sweep=())
        ensemble = ensembles.setdefault(shape_key(resolved), len(ensembles))
        for init_seed in spec.seeds:
            for data_seed in spec.data_orders:
                members.append(Member(len(members), ensemble, init_seed, data_seed, resolved))
    return members


def ensembles(members: list[Member]) -> list[list[Member]]:
    """Group members by ensemble id, in id order."""
    groups: dict[int, list[Member]] = {}
    for member in members:
        groups.setdefault(member.ensemble, []).append(member)
    return [groups[key] for key in sorted(groups)]


def hyperparameters(spec: Spec) -> dict[str, object]:
    """Flatten a member's task/model/optim fields into {'optim.lr': 0.001, ...} (tuples as text)."""
    flat = {}
    for section in ("task", "model", "optim"):
        for key, value in dataclasses.asdict(getattr(spec, section)).items():
            flat[f"{section}.{key}"] = str(list(value)) if isinstance(value, tuple) else value
    return flat


def member_rows(members: list[Member], diverged: dict[int, int | None], *, finished: bool, task=None) -> pd.DataFrame:
    """The `members` table rows of `members`: ids, seeds, status (running / ok / diverged), hyperparameters and,
    given the ensemble's `task`, its loss kind and chance-level loss (ln C for C classes, 1 for the hinge)."""
    rows = []
    for m in members:
        step = diverged.get(m.member)
        status = "diverged" if step is not None else ("ok" if finished else "running")
        loss = {} if task is None else {"loss_kind": task.loss,
                                         "chance_loss": 1.0 if task.loss == "hinge" else math.log(task.n_outputs)}
        rows.append(member_row(m.member, status, ensemble=m.ensemble, init_seed=m.init_seed, data_seed=m.data_seed,
                               diverged_step=step, **loss, **hyperparameters(m.spec)))
    return members_frame(rows)
