"""Per member: the table printed after a run (when each member memorized and generalized, how it ended), and the
one label of each member's grid point that analysis and report share."""

from __future__ import annotations

import pandas as pd

THRESHOLD = 0.99  # "memorized" / "generalized": accuracy at or above 99%, as Power et al. 2022
# Columns of `members` that say who a member is rather than what it was trained with.
IDENTITY_COLUMNS = frozenset({"member", "ensemble", "init_seed", "data_seed", "status", "diverged_step", "config",
                              "source", "recorder.config", "chance_loss", "loss_kind"})


def split_curves(names) -> list[str]:
    """The per-split loss and accuracy curves among scalar `names` ("train/loss", "probe/acc", ...; not subsets),
    train first, then test, then the other splits by name."""
    curves = [n for n in set(names) if n.count("/") == 1 and n.split("/")[1] in ("loss", "acc")]
    return sorted(curves, key=lambda n: ({"train": 0, "test": 1}.get(n.split("/")[0], 2), n))


def grid_columns(members: pd.DataFrame) -> list[str]:
    """The members' setting columns that vary (the grid's axes), in table order; seeds are not settings."""
    return [c for c in members.columns if c not in IDENTITY_COLUMNS and not str(c).endswith("seed")
            and members[c].astype(str).nunique() > 1]


def grid_labels(members: pd.DataFrame) -> pd.Series:
    """One label per member naming its grid point by the settings that vary ("train_fraction=0.5, ...", each key's
    last dotted part where those are distinct), "all" where nothing varies; indexed like `members`."""
    keys = grid_columns(members)
    if not keys:
        return pd.Series("all", index=members.index)
    short = [str(key).rsplit(".", 1)[-1] for key in keys]
    names = short if len(set(short)) == len(short) else keys
    values = members[keys].astype(str).to_numpy()
    return pd.Series([", ".join(f"{n}={v}" for n, v in zip(names, row)) for row in values], index=members.index)


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
