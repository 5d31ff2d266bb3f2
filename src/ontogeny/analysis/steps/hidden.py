"""Hidden transitions step: a smooth aggregate curve made of many sudden per-example (or per-subset) ones."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..analyze import Context, StepResult, analysis_step
from ..hidden import HiddenTransitions


@analysis_step("hidden", writes=("hidden_transitions", "subset_onsets"), examples=True)
def hidden(context: Context) -> StepResult:
    """Tables `hidden_transitions` (member x split) and, where the run names subsets, `subset_onsets`."""
    scalars, subsets = context.scalars, context.run.subsets()
    rows, onsets, result = [], [], StepResult()
    for member in context.members.member:
        for split, (examples, steps, loss, _) in context.example_curves(int(member)).items():
            if len(steps) < 3:
                continue
            names = sorted(subsets[subsets.split == split].subset.unique())
            level, curves, labels = "example", loss, examples
            if names:  # named subsets (e.g. subtasks): their curves, recorded as scalars
                own = scalars[(scalars.member == member) & scalars.name.isin([f"{split}/{n}/loss" for n in names])]
                wide = own.pivot_table(index="name", columns="step", values="value").reindex(columns=steps)
                level, curves, labels = "subset", wide.to_numpy(), [n.split("/")[1] for n in wide.index]
            aggregate = scalars[(scalars.member == member) & (scalars.name == f"{split}/loss")]
            aggregate = aggregate.set_index("step").value.reindex(steps).to_numpy()
            fit = HiddenTransitions(random_state=context.random_state).fit(steps, curves, aggregate)
            quantiles = fit.onset_quantiles_
            rows.append({"member": member, "split": split, "level": level, "n_curves": len(curves),
                         "n_learned": int(np.isfinite(fit.onsets_).sum()), "onset_median": quantiles[0.5],
                         "onset_q25": quantiles[0.25], "onset_q75": quantiles[0.75], "n_groups": fit.n_groups_,
                         "median_width": float(np.nanmedian(fit.rises_)), "aggregate_width": fit.aggregate_rise_})
            if level == "subset":
                onsets.append(pd.DataFrame({"member": member, "split": split, "subset": labels,
                                            "onset_step": fit.onsets_, "width": fit.rises_}))
    if rows:
        table = pd.DataFrame(rows)
        result.tables["hidden_transitions"] = table
        for (split, level), part in table.groupby(["split", "level"]):
            result.summary.append(
                f"hidden transitions ({split}, per {level}): {part.n_learned.median():.0f}/{part.n_curves.median():.0f}"
                f" curves change; onsets span steps {part.onset_q25.median():.0f}-{part.onset_q75.median():.0f} "
                f"(IQR) in {part.n_groups.median():.0f} groups; each rises in {part.median_width.median():.2f} "
                f"decades vs {part.aggregate_width.median():.2f} for the aggregate (median over members)")
    if onsets:
        result.tables["subset_onsets"] = pd.concat(onsets, ignore_index=True)
    return result
