"""How long `ontogeny serve`'s index of runs takes with many runs under RUNS_DIR, first scan and after.

Run by hand, not in CI (a few minutes: it trains one small run and copies it N times):

    python benchmarks/serve_index.py                 # 1,000 runs
    python benchmarks/serve_index.py --runs 200      # a quick look

The index stats each run's files to tell whether it changed; a run's status (members, steps done) is read from its
tables only the first time and whenever one of its files changed since. Target: the index of 1,000 runs in under
1 s after the first scan.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import ontogeny as og
from ontogeny.report.serve import RunsDirectory, index_page


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "source"
        og.run("grokking", overrides=["task.p=23", "steps=60", "seeds=2"], out=source)
        runs_dir = Path(scratch) / "runs"
        for index in range(args.runs):
            shutil.copytree(source, runs_dir / f"run{index:04d}", ignore=shutil.ignore_patterns("weights"))
        runs = RunsDirectory(runs_dir)
        for attempt in ("first scan", "second", "third"):
            started = time.perf_counter()
            index_page(runs)
            print(f"index of {args.runs} runs, {attempt}: {time.perf_counter() - started:.2f} s", flush=True)


if __name__ == "__main__":
    main()
