"""Per-example dynamics step: age of acquisition, abruptness, forgetting and cartography of every example."""

from __future__ import annotations

import pandas as pd

from ..analyze import Context, StepResult, analysis_step
from ..dynamics import ExampleDynamics


@analysis_step("examples", writes=("example_dynamics",), examples=True)
def examples(context: Context) -> StepResult:
    """Table `example_dynamics` (member x split x example)."""
    frames, result = [], StepResult()
    members = context.members.set_index("member")
    for member in members.index:
        # the producer's chance-level loss and loss kind, where it gave them (else: the untrained level, and
        # no cartography confidence unless the loss is known to be a cross entropy)
        chance = members.chance_loss.get(member) if "chance_loss" in members else None
        kind = members.loss_kind.get(member) if "loss_kind" in members else "cross_entropy"
        dynamics = ExampleDynamics(chance=None if pd.isna(chance) else float(chance),
                                   loss_kind=kind if isinstance(kind, str) else "unknown")
        for split, (ids, steps, loss, correct) in context.example_curves(int(member)).items():
            if len(steps) < 3:
                continue
            table = dynamics.fit(steps, loss=loss, correct=correct, index=ids).table_
            frames.append(table.reset_index(names="example").assign(member=member, split=split))
    if frames:
        table = pd.concat(frames, ignore_index=True).rename(columns={"n_forgetting": "forgetting_events",
                                                                     "ever_learned": "learned"})
        front = ["member", "split", "example"]
        result.tables["example_dynamics"] = table[front + [c for c in table.columns if c not in front]]
        acquired = table.acquired
        result.summary.append(f"examples: {acquired.mean():.0%} of member x example curves acquired; median age of "
                              f"acquisition step {table.aoa_step[acquired].median():.0f} (halfway from chance to "
                              f"the best loss, Chang et al. 2024); {int(table.forgetting_events.sum())} forgetting "
                              f"events")
    return result
