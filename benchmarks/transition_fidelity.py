"""TransitionDetector on three corpora of synthetic curves of known kinds (`ontogeny.analysis.transition_corpus`):
precision, recall and false transitions per smooth curve, on the corpus it was tuned on, the held-out one and the
unseen one (per kind and noise law).

    python benchmarks/transition_fidelity.py                    # 200 curves per kind and cell (~2.5 min)
    python benchmarks/transition_fidelity.py --rho 0.5          # correlated noise on every kind of the first

Targets: precision >= 0.95, recall >= 0.90, at most 0.2 false transitions per curve of each smooth kind.
"""

from __future__ import annotations

import argparse
import time

from ontogeny.analysis.transition_corpus import (MARGIN, SMOOTH, UNSEEN_SMOOTH, corpus, evaluate, evaluate_held_out,
                                                 held_out_corpus, unseen_corpus)
from ontogeny.analysis.transitions import TransitionDetector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-kind", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rho", type=float, help="lag-1 correlation of every kind's noise (default: see above)")
    args = parser.parse_args()
    steps, rows = corpus(args.per_kind, args.seed, args.rho)
    start = time.perf_counter()
    result = evaluate(TransitionDetector(), steps, rows)
    seconds = time.perf_counter() - start
    print(f"{len(rows)} curves on {len(steps)} checkpoints, {seconds:.1f} s")
    print(f"precision {result['precision']:.3f}, recall {result['recall']:.3f} (within {MARGIN} decades)")
    for kind, value in result["by_kind"].items():
        what = "false transitions per curve" if kind in SMOOTH else "(precision, recall)"
        print(f"  {kind:<11} {what}: {value}")
    rows = held_out_corpus(args.per_kind, args.seed + 1)
    print(f"\nheld-out corpus, {len(rows)} curves:")
    print(evaluate_held_out(TransitionDetector(), rows).round(3).to_string(index=False))
    rows = unseen_corpus(args.per_kind, args.seed + 2)
    print(f"\nunseen corpus, {len(rows)} curves:")
    print(evaluate_held_out(TransitionDetector(), rows, UNSEEN_SMOOTH).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
