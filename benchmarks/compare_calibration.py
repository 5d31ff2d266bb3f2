"""Does `ontogeny compare` keep its promise at the seed counts people use? Coverage and false verdicts by n.

Run by hand (about 15 min on 2 cores; a calibration check, not a timing):

    python benchmarks/compare_calibration.py              # 500 simulated comparisons per cell
    python benchmarks/compare_calibration.py --sims 200   # a quick look

Each simulated comparison is two runs of n seeds. Paired: member i of both runs shares init seed i, whose effect
s_i is common to both sides (b_i - a_i = delta + e_i); unpaired: two sets of n seeds. The seed effects and noise
are normal, Student-t with 3 degrees of freedom (heavy tails) or centred log-normal (skewed, sigma 1). With no true
difference (delta = 0) the table gives the share of comparisons whose verdict claims one ("B raises / lowers");
with delta = 1 noise sd it gives how often the 95% interval covers delta and how often the verdict finds it. The
last columns give the same for the percentile bootstrap over seeds that `compare` used before (`bootstrap.compare`).
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from ontogeny.analysis.bootstrap import compare as bootstrap_compare
from ontogeny.analysis.compare import compare_values

NOISE = {
    "normal": lambda rng, n: rng.normal(0, 1, n),
    "t3": lambda rng, n: rng.standard_t(3, n) / np.sqrt(3),  # unit variance
    "lognormal": lambda rng, n: (rng.lognormal(0, 1, n) - np.exp(0.5)) / np.sqrt((np.e - 1) * np.e),
}


def labels(n: int, offset: int = 0) -> pd.MultiIndex:
    return pd.MultiIndex.from_arrays([np.arange(n) + offset, np.zeros(n, dtype=int)], names=["init_seed", "data_seed"])


def simulate(noise: str, n: int, paired: bool, delta: float, sims: int, seed: int) -> dict[str, float]:
    rng, draw = np.random.default_rng(seed), NOISE[noise]
    claimed = covered = boot_claimed = boot_covered = 0
    for i in range(sims):
        seeds = draw(rng, n) * 2  # seed effects larger than the noise, as between init seeds
        a = pd.Series(seeds + draw(rng, n), index=labels(n))
        b_seeds = seeds if paired else draw(rng, n) * 2
        b = pd.Series(b_seeds + delta + draw(rng, n), index=labels(n, 0 if paired else 1000))
        row = compare_values(a, b, metric="m", at="final")
        claimed += row["verdict"].startswith(("B raises", "B lowers"))
        covered += row["low"] <= delta <= row["high"]
        boot = bootstrap_compare(a, b, paired=paired, random_state=i)
        boot_claimed += not boot.low <= 0 <= boot.high
        boot_covered += boot.low <= delta <= boot.high
    return {"claimed": claimed / sims, "covered": covered / sims, "boot_claimed": boot_claimed / sims,
            "boot_covered": boot_covered / sims}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=500)
    parser.add_argument("--designs", default="paired,unpaired", help="paired, unpaired or both")
    args = parser.parse_args()
    print(f"{'design':9s} {'noise':10s} {'n':>3s} {'false verdicts':>15s} {'coverage':>9s} {'power':>6s}"
          f" {'bootstrap: false':>17s} {'coverage':>9s}")
    for paired in [design == "paired" for design in args.designs.split(",")]:
        for noise in NOISE:
            for n in (4, 5, 6, 8, 12, 20):
                null = simulate(noise, n, paired, 0.0, args.sims, seed=n)
                shifted = simulate(noise, n, paired, 1.0, args.sims, seed=1000 + n)
                print(f"{'paired' if paired else 'unpaired':9s} {noise:10s} {n:3d} {null['claimed']:15.3f} "
                      f"{shifted['covered']:9.3f} {shifted['claimed']:6.2f} {null['boot_claimed']:17.3f} "
                      f"{shifted['boot_covered']:9.3f}", flush=True)


if __name__ == "__main__":
    main()
