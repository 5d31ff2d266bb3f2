"""Do the scaling fits' intervals keep their promise at the seed counts people use? Coverage by n.

Run by hand (about 5 min on 2 cores; a calibration check, not a timing):

    python benchmarks/scaling_calibration.py              # 1000 simulated fits per cell (250 for R*)
    python benchmarks/scaling_calibration.py --sims 200   # a quick look

Exponent: final loss 2 w^-0.45 at five widths (16..256), each member's loss times exp(e), e normal (sd 0.15) or
Student-t with 3 degrees of freedom scaled to that sd; paired (every width holds the same n init seeds: a t
interval over the seeds' own exponents) or unpaired (a seed per member: refits on seed resamples). R*: the
Muennighoff form planted at R* = 5 (`synthetic_scaling_scalars`, width 32, n_train 500/2000/8000 and fresh data,
member noise 0.05), paired. Each cell gives how often the 95% interval covers the planted value (goal >= 0.93).
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from ontogeny.analysis.scaling import member_outcomes, power_law_fits, repeat_members, repeat_table
from ontogeny.analysis.synthetic import synthetic_scaling_scalars

WIDTHS = np.array([16, 32, 64, 128, 256])


def planted(n_seeds: int, paired: bool, noise: str, rng) -> pd.DataFrame:
    size = (n_seeds, len(WIDTHS))
    e = rng.normal(0, 0.15, size) if noise == "normal" else rng.standard_t(3, size) * 0.15 / np.sqrt(3)
    seeds = np.arange(n_seeds)[:, None] * (1 if paired else len(WIDTHS)) + (0 if paired else np.arange(len(WIDTHS)))
    return pd.DataFrame({"member": np.arange(e.size), "init_seed": np.broadcast_to(seeds, size).ravel(),
                         "width": np.tile(WIDTHS, n_seeds), "n_train": 0, "epochs": np.nan,
                         "final_loss": (2.0 * WIDTHS**-0.45 * np.exp(e)).ravel()})


def exponent_coverage(n: int, paired: bool, noise: str, sims: int) -> float:
    covered = 0
    for seed in range(sims):
        row = power_law_fits(planted(n, paired, noise, np.random.default_rng(seed)), n_boot=1000,
                             random_state=seed).iloc[0]
        covered += row.alpha_low <= 0.45 <= row.alpha_high
    return covered / sims


def r_star_coverage(n: int, sims: int) -> float:
    covered = 0
    for seed in range(sims):
        scalars, members = synthetic_scaling_scalars(widths=(32,), n_seeds=n, r_star=5.0, member_noise=0.05,
                                                     random_state=seed)
        row = repeat_table(repeat_members(scalars, member_outcomes(scalars, members)), n_boot=200,
                           random_state=seed).iloc[0]
        covered += row.r_star_low <= 5.0 <= row.r_star_high
    return covered / sims


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=1000)
    args = parser.parse_args()
    rows = []
    for n in (4, 8, 16):
        row = {"seeds": n}
        for paired in (True, False):
            for noise in ("normal", "t3"):
                row[f"alpha {'paired' if paired else 'unpaired'} {noise}"] = exponent_coverage(n, paired, noise,
                                                                                                args.sims)
        row["R* paired"] = r_star_coverage(n, args.sims // 4)
        rows.append(row)
        print(pd.DataFrame(rows).round(3).to_string(index=False), flush=True)


if __name__ == "__main__":
    main()
