"""Checkpoint-suite step: revisions whose weights equal another step's (suites have shipped mislabelled or
duplicated checkpoints), revisions whose model config differs from the member's first, and revisions whose probe loss
jumps an order of magnitude above both neighbours (damaged weights load and score as garbage)."""

from __future__ import annotations

import pandas as pd

from ..analyze import Context, StepResult, analysis_step


LOSS_JUMP = 10.0  # a revision whose loss is this many times both neighbours' is flagged


@analysis_step("suite", writes=("suite_checks",), tables=("revisions",))
def suite(context: Context) -> StepResult:
    """Table `suite_checks` (member x step flagged: duplicate_of step, config_changed, loss_jump: the probe loss over
    the larger of its neighbours' where that is at least LOSS_JUMP, else NaN)."""
    revisions = context.run.revisions().sort_values(["member", "step"])
    jumps = _loss_jumps(context.scalars)
    flags = []
    for member, rows in revisions.groupby("member"):
        first_step = rows.drop_duplicates("weights_sha256").set_index("weights_sha256").step
        base_config = rows.config_sha256.iloc[0]
        for row in rows.itertuples():
            same = first_step[row.weights_sha256]
            changed = row.config_sha256 != base_config
            jump = jumps.get((member, row.step))
            if same != row.step or changed or jump is not None:
                flags.append({"member": member, "step": row.step, "revision": row.revision,
                              "duplicate_of": same if same != row.step else None, "config_changed": changed,
                              "loss_jump": jump})
    table = pd.DataFrame(flags, columns=["member", "step", "revision", "duplicate_of", "config_changed", "loss_jump"])
    table["duplicate_of"] = table.duplicate_of.astype("Int64")
    table["loss_jump"] = table.loss_jump.astype(float)
    result = StepResult(tables={"suite_checks": table})
    duplicates, changed = table[table.duplicate_of.notna()], table[table.config_changed]
    lines = [f"member {r.member} {r.revision}: weights equal step {r.duplicate_of}'s (mislabelled or duplicated?)"
             for r in duplicates.itertuples()]
    lines += [f"member {r.member} {r.revision}: model config differs from the member's first revision"
              for r in changed.itertuples()]
    lines += [f"member {r.member} {r.revision}: probe loss {r.loss_jump:.0f}x its neighbours' (damaged weights?)"
              for r in table[table.loss_jump.notna()].itertuples()]
    result.summary = lines or [f"suite: {len(revisions)} revisions of {revisions.member.nunique()} member(s), "
                               "all distinct weights, one config per member"]
    return result


def _loss_jumps(scalars: pd.DataFrame) -> dict[tuple[int, int], float]:
    """{(member, step): loss / max(neighbours' loss)} where that is >= LOSS_JUMP, from each member's probe loss."""
    loss = scalars[scalars.name == "probe/loss"].sort_values(["member", "step"])
    jumps = {}
    for member, rows in loss.groupby("member"):
        values, steps = rows.value.to_numpy(), rows.step.to_numpy()
        for i in range(len(values)):
            neighbours = values[max(i - 1, 0):i].tolist() + values[i + 1:i + 2].tolist()
            if neighbours and values[i] >= LOSS_JUMP * max(neighbours) > 0:
                jumps[(int(member), int(steps[i]))] = float(values[i] / max(neighbours))
    return jumps
