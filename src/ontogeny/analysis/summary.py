"""The per-member table printed after a run: when each member memorized and generalized, and how it ended."""

from __future__ import annotations

import pandas as pd

THRESHOLD = 0.99  # "memorized" / "generalized": accuracy at or above 99%, as Power et al. 2022


def first_step_at_or_above(scalars: pd.DataFrame, name: str, threshold: float = THRESHOLD) -> pd.Series:
    """First checkpoint step where curve `name` reaches `threshold`, per member (NaN where it never does)."""
    rows = scalars[(scalars.name == name) & (scalars.value >= threshold)]
    return rows.groupby("member").step.min()


def member_summary(scalars: pd.DataFrame, members: pd.DataFrame) -> pd.DataFrame:
    """One row per member: seeds, memorization step (train/acc >= 99%), generalization step (test/acc >= 99%),
    final train and test accuracy, status."""
    final = scalars[scalars.step == scalars.groupby("member").step.transform("max")]
    final = final.pivot_table(index="member", columns="name", values="value")
    table = members.set_index("member")[["init_seed", "data_seed", "status"]].copy()
    table["memorization"] = first_step_at_or_above(scalars, "train/acc").astype("Int64")
    table["generalization"] = first_step_at_or_above(scalars, "test/acc").astype("Int64")
    for name in ("train/acc", "test/acc"):
        table[f"final {name}"] = final[name] if name in final else float("nan")
    return table.reset_index()[["member", "init_seed", "data_seed", "memorization", "generalization",
                                "final train/acc", "final test/acc", "status"]]
