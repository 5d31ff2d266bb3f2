"""SAE step: on an `ontogeny sae` run, the agreement of SAE seeds per checkpoint (tables written by the command)."""

from __future__ import annotations

from ..analyze import Context, StepResult, analysis_step
from ..sae import agreement_summary


@analysis_step("sae", tables=("sae_agreement",))
def sae(context: Context) -> StepResult:
    """No tables of its own (the command wrote them); one line per checkpoint and per stability comparison."""
    return StepResult(summary=agreement_summary(context.run, random_state=context.random_state))
