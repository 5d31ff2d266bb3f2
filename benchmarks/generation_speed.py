"""How fast the rule tasks' sentence generators are (they run inside task construction, so every run pays them).

Run by hand, not in CI (wall time depends on the machine and its load; tests assert behaviour only):

    python benchmarks/generation_speed.py

Prints the seconds for 20,000 sentences of the agreement grammar (`grammar_gen`, the "deep" setting with
center-embedding) and for 20,000 train plus 20,000 gen examples of question formation (`questions_gen`). The
target, the budget the old timing tests held, is under 1 s each on a 2-core CPU.
"""

from __future__ import annotations

import time

from ontogeny.tasks import grammar_gen, questions_gen

TARGET_SECONDS = 1.0


def timed(make) -> float:
    make(100)  # warm up: imports, caches
    start = time.perf_counter()
    make(20_000)
    return time.perf_counter() - start


def main() -> None:
    deep = grammar_gen.Grammar(pp_share=0.2, rc_share=0.2, center_share=0.5, center_depth=3, adjective_share=0.5)
    mixed = questions_gen.QuestionGrammar(complexity=0.3, disambiguating=0.25, quest_share=0.5)
    cases = {
        "agreement grammar, 20k sentences": timed(lambda n: grammar_gen.sample(deep, n, seed=0)),
        "question formation, 20k train + 20k gen": timed(
            lambda n: (questions_gen.sample(mixed, "train", n, seed=0), questions_gen.sample(mixed, "gen", n, seed=0))),
    }
    for name, seconds in cases.items():
        verdict = "met" if seconds < TARGET_SECONDS else "MISSED"
        print(f"{name:42s} {seconds:6.2f} s  (target < {TARGET_SECONDS:.0f} s: {verdict})")


if __name__ == "__main__":
    main()
