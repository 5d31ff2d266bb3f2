"""What an `ontogeny sae` run found, in plain language: the share of SAE latents the seeds share per checkpoint
(trained model vs the random-init control), the SAEs' quality, and how stable each seed's latents are."""

from __future__ import annotations

import numpy as np

from ..store import Run
from .bootstrap import multibootstrap

THRESHOLD = 0.7  # Paulo & Belrose 2025: latents whose best one-to-one partner has cosine >= 0.7 are "shared"
SAE_SCALARS = ("sae/mse", "sae/fve", "sae/l0", "sae/dead", "sae/loss_recovered")


def agreement_summary(run: Run, random_state: int = 0) -> list[str]:
    """Plain-language lines: per checkpoint, the share of latents shared across seeds (mean over seed pairs per
    model member, then over model members with a Multi-Bootstrap CI), the SAE quality, and stability."""
    pairs, scalars = run.table("sae_agreement"), run.scalars(name=list(SAE_SCALARS))
    members = run.members().set_index("member")
    last = scalars[scalars.step == scalars.groupby("member").step.transform("max")]
    lines = []
    for step, rows in pairs.groupby("source_step"):
        per_model = rows.groupby("source_member").shared.mean().to_numpy()
        ci = multibootstrap(per_model, random_state=random_state)
        n_seeds = int(rows.seed_b.max()) + 1
        ids = members.index[members.source_step == step]
        quality = last[last.member.isin(ids)].groupby("name").value.median()
        what = "random init" if step == 0 else "trained"
        both = ""
        if "shared_both" in rows:  # runs made before it was recorded lack it
            both_ci = multibootstrap(rows.groupby("source_member").shared_both.mean().to_numpy(),
                                     random_state=random_state)
            both = (f"; {both_ci.estimate:.0%} [{both_ci.low:.0%}, {both_ci.high:.0%}] with encoder and decoder each "
                    f"matched above {THRESHOLD} (Paulo & Belrose's criterion)")
        lines.append(f"sae [step {step}, {what}]: {ci.estimate:.0%} [{ci.low:.0%}, {ci.high:.0%}] of latents shared "
                     f"across {n_seeds} seeds (decoders matched one to one at cosine >= {THRESHOLD}; mean over seed "
                     f"pairs, 95% CI over {len(per_model)} model members){both}; median FVE "
                     f"{quality.get('sae/fve', np.nan):.3f}, L0 "
                     f"{quality.get('sae/l0', np.nan):.1f}, dead {quality.get('sae/dead', np.nan):.0%}, loss "
                     f"recovered {quality.get('sae/loss_recovered', np.nan):.0%}")
    if "sae_stability" in run.tables():
        stability = run.table("sae_stability")
        final = stability.source_step.max()
        for step, rows in stability[stability.source_step < final].groupby("source_step"):
            lines.append(f"sae [step {step}]: {rows.shared_with_last.mean():.0%} of a seed's latents reappear in the "
                         f"same seed's SAE at step {final} (cosine >= {THRESHOLD}; mean over {len(rows)} SAEs)")
    return lines
