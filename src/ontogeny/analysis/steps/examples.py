"""Per-example dynamics step: age of acquisition, abruptness, forgetting and cartography of every example."""

from __future__ import annotations

import pandas as pd

from ..analyze import Context, StepResult, analysis_step
from ..dynamics import ExampleDynamics


@analysis_step("examples", examples=True)
def examples(context: Context) -> StepResult:
    """Table `example_dynamics` (member x split x example)."""
    frames, result = [], StepResult()
    for member in context.members.member:
        for split, (ids, steps, loss, correct) in context.example_curves(int(member)).items():
            if len(steps) < 3:
                continue
            table = ExampleDynamics().fit(steps, loss=loss, correct=correct, index=ids).table_
            frames.append(table.reset_index(names="example").assign(member=member, split=split))
    if frames:
        table = pd.concat(frames, ignore_index=True).rename(columns={"n_forgetting": "forgetting_events",
                                                                     "ever_learned": "learned"})
        front = ["member", "split", "example"]
        result.tables["example_dynamics"] = table[front + [c for c in table.columns if c not in front]]
        learned = table.aoa_step.notna()
        result.summary.append(f"examples: {learned.mean():.0%} of member x example curves acquired; median age of "
                              f"acquisition step {table.aoa_step.median():.0f}; {int(table.forgetting_events.sum())} "
                              f"forgetting events")
    return result
