"""Checkpoint-suite step: revisions whose weights equal another step's (suites have shipped mislabelled or
duplicated checkpoints) and revisions whose model config differs from the member's first."""

from __future__ import annotations

import pandas as pd

from ..analyze import Context, StepResult, analysis_step


@analysis_step("suite", tables=("revisions",))
def suite(context: Context) -> StepResult:
    """Table `suite_checks` (member x step flagged: duplicate_of step, config_changed)."""
    revisions = context.run.revisions().sort_values(["member", "step"])
    flags = []
    for member, rows in revisions.groupby("member"):
        first_step = rows.drop_duplicates("weights_sha256").set_index("weights_sha256").step
        base_config = rows.config_sha256.iloc[0]
        for row in rows.itertuples():
            same = first_step[row.weights_sha256]
            changed = row.config_sha256 != base_config
            if same != row.step or changed:
                flags.append({"member": member, "step": row.step, "revision": row.revision,
                              "duplicate_of": same if same != row.step else None, "config_changed": changed})
    table = pd.DataFrame(flags, columns=["member", "step", "revision", "duplicate_of", "config_changed"])
    table["duplicate_of"] = table.duplicate_of.astype("Int64")
    result = StepResult(tables={"suite_checks": table})
    duplicates, changed = table[table.duplicate_of.notna()], table[table.config_changed]
    lines = [f"member {r.member} {r.revision}: weights equal step {r.duplicate_of}'s (mislabelled or duplicated?)"
             for r in duplicates.itertuples()]
    lines += [f"member {r.member} {r.revision}: model config differs from the member's first revision"
              for r in changed.itertuples()]
    result.summary = lines or [f"suite: {len(revisions)} revisions of {revisions.member.nunique()} member(s), "
                               "all distinct weights, one config per member"]
    return result
