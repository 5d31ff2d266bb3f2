"""How often the variance decomposition's 95% intervals cover the true shares, on simulated crossed designs.

    python benchmarks/variance_coverage.py              # 300 simulations per design, ~2 min

Each simulation draws a crossed init x data-order table with known variance components (`synthetic_crossed`:
variances 1, 1, 0.5 interaction, 0.5 residual) and fits `VarianceDecomposition` with 500 bootstrap draws; the
coverage is the share of simulations whose interval holds the true share. Monte Carlo error at 300: about 1.3%.
"""

import argparse

from ontogeny.analysis.bootstrap import VarianceDecomposition
from ontogeny.analysis.synthetic import synthetic_crossed

TRUTH = {"first": 1.0, "second": 1.0, "interaction": 0.5, "residual": 0.5}
DESIGNS = [(8, 6, 1), (8, 6, 2), (16, 12, 2)]  # init seeds, data orders, replicates


def true_shares(replicates: int) -> dict[str, float]:
    total = sum(TRUTH.values())
    shares = {"init_seed": TRUTH["first"] / total, "data_seed": TRUTH["second"] / total}
    if replicates > 1:
        shares.update(interaction=TRUTH["interaction"] / total, residual=TRUTH["residual"] / total)
    else:
        shares["interaction+residual"] = (TRUTH["interaction"] + TRUTH["residual"]) / total
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--simulations", type=int, default=300)
    args = parser.parse_args()
    for n_init, n_data, replicates in DESIGNS:
        want = true_shares(replicates)
        hits = dict.fromkeys(want, 0)
        for sim in range(args.simulations):
            frame = synthetic_crossed(n_init, n_data, replicates, **TRUTH, random_state=sim)
            components = VarianceDecomposition(n_boot=500, random_state=sim).fit(frame, "outcome").components_
            for source, share in want.items():
                hits[source] += bool(components.loc[source, "ci_low"] <= share <= components.loc[source, "ci_high"])
        coverage = ", ".join(f"{source} {count / args.simulations:.1%}" for source, count in hits.items())
        print(f"{n_init} init x {n_data} data x {replicates} replicates: {coverage}")


if __name__ == "__main__":
    main()
