"""The members table's rows, built the same way by every producer (trainer, recorder, ingest, SAE run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ..exceptions import StoreError
from .layout import MEMBERS_LOCK
from .lock import FileLock
from .run import Run
from .writer import ShardWriter

SEED_COLUMNS = ("init_seed", "data_seed", "diverged_step")  # nullable integers, whoever writes them


def member_row(member: int, status: str, *, ensemble: int | None = None, init_seed: int | None = None,
               data_seed: int | None = None, diverged_step: int | None = None, **settings: Any) -> dict[str, Any]:
    """One member's row: its id, ensemble (its own id when it trains alone), seeds, status (running / ok /
    diverged), the step it diverged at, then its settings."""
    return {"member": member, "ensemble": member if ensemble is None else ensemble, "init_seed": init_seed,
            "data_seed": data_seed, "status": status, "diverged_step": diverged_step, **settings}


def members_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The rows as the members table's frame: seeds and the divergence step as nullable integers (a column that is
    None in every row would otherwise be an object column, and one None among ints a float one)."""
    frame = pd.DataFrame(rows)
    for column in SEED_COLUMNS:
        frame[column] = frame[column].astype("Int64")
    return frame


def claim_member(root: Path, identity: str, first_row: Callable[[int], pd.DataFrame], *, column: str,
                 wanted: int | None = None) -> tuple[int, ShardWriter]:
    """A member id and its writer for a process that joins a run with other writers: `wanted` if given, else the
    member whose `column` holds this process's `identity` (a restarted process finds itself), else the next free id.
    A new id's `first_row(id)` is committed before the run's members lock is released, so no two processes share it."""
    with FileLock(root / MEMBERS_LOCK, f"{root}: member ids", wait=True):
        members = Run(root).members()
        known = members.set_index("member")[column].to_dict() if column in members else {}
        if wanted is not None:
            if wanted in known and known[wanted] != identity:
                raise StoreError(f"{root}: member {wanted} is already recorded with {known[wanted]}; this process "
                                 f"gives {identity}")
            member = int(wanted)
        else:
            same = [m for m, other in known.items() if other == identity]
            member = same[0] if same else int(max(known, default=-1)) + 1
        writer = ShardWriter(root, f"member-{member:05d}")
        if member not in known:
            writer.put("members", first_row(member))
            writer.commit()
    return member, writer
