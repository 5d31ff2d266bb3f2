"""What `--backend ray` costs, on this machine: the same plan trained sequentially and as Ray tasks, and how many
tiny tasks per second the driver keeps going.

    python benchmarks/ray_overhead.py              # both parts (~3 min on 2 cores)
    python benchmarks/ray_overhead.py --skip-tiny  # the overhead part only

1. grokking-threshold (24 members) cut into ensembles of 6: sequentially in this process, then on a local Ray
   cluster one task at a time (the backend's overhead: worker start, imports, the driver's polling) and two at a
   time (what the cluster buys on 2 cores). Torch uses one thread everywhere, as Ray gives each task one CPU.
2. 1,000 one-member ensembles of a tiny spec, one task each: tasks per second, and the rows of every member counted
   (none may be lost).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

import ontogeny as og  # noqa: E402


def timed(**kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    run = og.run(**kwargs)
    return time.perf_counter() - start, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-tiny", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="ontogeny-ray-") as root:
        root = Path(root)
        common = {"spec": "grokking-threshold", "max_members": 6, "commit_seconds": 30.0}
        sequential, reference = timed(**common, out=root / "sequential")
        one, _ = timed(**common, out=root / "ray1", backend="ray", max_parallel=1)
        two, run = timed(**common, out=root / "ray2", backend="ray", max_parallel=2)
        same = run.scalars().equals(reference.scalars()) and run.examples().equals(reference.examples())
        print(f"grokking-threshold, 24 members in 4 ensembles of 6: sequential {sequential:.1f} s; Ray, 1 task at a "
              f"time {one:.1f} s (overhead {one / sequential - 1:+.0%}); 2 at a time {two:.1f} s "
              f"({sequential / two:.2f}x); rows equal to sequential: {same}")
        if not args.skip_tiny:
            tiny = {"task.p": 5, "task.train_fraction": 0.5, "model.width": 4, "steps": 2, "record.every": 1,
                    "seeds": 1000}
            seconds, run = timed(spec="grokking", overrides=tiny, out=root / "tiny", backend="ray",
                                 max_members=1, max_parallel=256)
            counts = run.sql("SELECT member, count(*) AS n FROM scalars GROUP BY member")
            print(f"1,000 one-member ensembles as Ray tasks: {seconds:.1f} s, {1000 / seconds:.1f} tasks/s; members "
                  f"with rows {len(counts)} of 1000, rows per member {sorted(set(counts.n))}")


if __name__ == "__main__":
    main()
