"""Does `SolutionTypes` keep quiet about identical seeds, and still find planted types and outliers?

Run by hand (about 20 min on 2 cores; a calibration check, not a timing):

    python benchmarks/solutions_calibration.py              # 300 simulated runs per cell
    python benchmarks/solutions_calibration.py --sims 100   # a quick look

Null rows: n identically distributed members on 1 or 3 outcome columns, drawn normal, Student-t with 3 degrees of
freedom, or as accuracies on a finite test set (binomial: 400 examples at 0.9, and 200 at 0.995, where most seeds
tie at 100%). "any flag" is the share of runs with an outlier or more than one type (goal <= 0.05).
Planted rows (normal columns): two types of n/2 members 4 or 6 sd apart on the first column ("types found":
exactly 2 types, the right members), and one member 6 sd from the rest ("outlier found": that member flagged and
nothing else).
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from ontogeny.analysis.solutions import SolutionTypes

NULLS = {
    "normal": lambda rng, n, d: rng.normal(0, 1, (n, d)),
    "t3": lambda rng, n, d: rng.standard_t(3, (n, d)),
    "accuracy 0.9 / 400": lambda rng, n, d: rng.binomial(400, 0.9, (n, d)) / 400,
    "accuracy 0.995 / 200": lambda rng, n, d: rng.binomial(200, 0.995, (n, d)) / 200,
}


def fit(values: np.ndarray, seed: int) -> SolutionTypes:
    frame = pd.DataFrame(values, columns=[f"c{i}" for i in range(values.shape[1])])
    return SolutionTypes(random_state=seed).fit(frame, list(frame.columns))


def null_row(kind: str, n: int, d: int, sims: int) -> dict:
    outliers = types = anything = 0
    for seed in range(sims):
        result = fit(NULLS[kind](np.random.default_rng(seed), n, d), seed)
        outliers += result.outliers_.any()
        types += result.n_clusters_ > 1
        anything += result.outliers_.any() or result.n_clusters_ > 1
    return {"data": kind, "members": n, "columns": d, "false outlier": outliers / sims,
            "false types": types / sims, "any flag": anything / sims}


def planted_row(n: int, d: int, sims: int) -> dict:
    found = {4.0: 0, 6.0: 0}
    found_outlier = 0
    truth = np.arange(n) >= n // 2
    for seed in range(sims):
        rng = np.random.default_rng(10_000 + seed)
        for separation in found:
            values = rng.normal(0, 1, (n, d))
            values[truth, 0] += separation
            result = fit(values, seed)
            found[separation] += result.n_clusters_ == 2 and np.array_equal(result.labels_.to_numpy() == 1, truth)
        values = rng.normal(0, 1, (n, d))
        values[0, 0] += 6.0
        result = fit(values, seed)
        found_outlier += result.outliers_.tolist() == [i == 0 for i in range(n)]
    return {"members": n, "columns": d, "types found (4 sd)": found[4.0] / sims,
            "types found (6 sd)": found[6.0] / sims, "outlier found (6 sd)": found_outlier / sims}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=300)
    parser.add_argument("--null", choices=list(NULLS), action="append", help="only these null rows (repeatable)")
    parser.add_argument("--no-planted", action="store_true", help="leave out the planted rows")
    args = parser.parse_args()
    rows = [null_row(kind, n, d, args.sims) for kind in args.null or NULLS for n in (4, 8, 16) for d in (1, 3)]
    print(pd.DataFrame(rows).round(3).to_string(index=False), flush=True)
    if args.no_planted:
        return
    rows = [planted_row(n, d, args.sims) for n in (4, 8, 16) for d in (1, 3)]
    print(pd.DataFrame(rows).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
