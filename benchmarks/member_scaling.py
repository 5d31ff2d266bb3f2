"""Throughput as the ensemble grows: `ontogeny run` end to end at 8 to 512 members beside a plain per-seed loop.

Run by hand, not in CI:

    python benchmarks/member_scaling.py                     # 8, 32, 128, 512 members, 1,500 steps (~6 min)
    python benchmarks/member_scaling.py --members 32 128    # some sizes only
    python benchmarks/member_scaling.py --steps 300         # shorter (start-up weighs more)
    python benchmarks/member_scaling.py --members 32 --steps 3000 --every 250   # the 32-member end-to-end case

The case: (40, 3) sparse parity, width-256 ReLU MLP, batches of 32 fresh samples, SGD lr 0.1, hinge
loss, recording on (the recipe's 34 checkpoints over 1,500 steps, each evaluating 1,000 test examples per member),
one thread (`OMP_NUM_THREADS=1`). The ontogeny side is the command a user types, timed from process start to exit
(start-up, training, recording, commits), in a child process whose peak RSS gives the memory per member. The
baseline, in this process, is how reference code does it: `nn.Sequential` + `torch.optim.SGD` per seed, one seed
after another, evaluating the same 1,000 examples at the same checkpoints. One seed after another costs the same
per seed at any number of seeds, so it is timed on `--baseline-seeds` seeds and scaled to each size (said so in
the table). FLOP/s count training only, 2.0 MFLOP per member-step (forward and backward, 6 * 32 * (40 * 256 +
256)); the next column adds the evaluations' forward passes (2 * 1,000 * (40 * 256 + 256) per member and
checkpoint), which the run performs too. The roofline is this process's best single-thread float32 GEMM rate on
square matrices of 256 to 1,024.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from ontogeny.evaluation.schedule import checkpoint_steps
from ontogeny.spec import load_spec
from ontogeny.train.malloc import reuse_freed_memory
from roofline import matmul_roofline

N, K, WIDTH, BATCH, N_TEST, LR = 40, 3, 256, 32, 1000, 0.1
FLOP_PER_MEMBER_STEP = 6 * BATCH * (N * WIDTH + WIDTH)
FLOP_PER_MEMBER_EVALUATION = 2 * N_TEST * (N * WIDTH + WIDTH)


def ontogeny_run(members: int, steps: int, every: int) -> tuple[float, float]:
    """Wall seconds and peak RSS (GiB) of `ontogeny run` in a child process with one thread."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "ontogeny.cli", "run", "sparse-parity", "--out", str(Path(tmp) / "run"),
                   "--set", f"seeds={members}", "--set", f"model.width={WIDTH}", "--set", f"steps={steps}",
                   "--set", "task.batch_size=32", "--set", f"task.n_test={N_TEST}", "--set", f"record.every={every}"]
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        wall = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest child so far: sizes ascend
    return wall, peak_kib / 2**20


def evaluation_steps(steps: int, every: int) -> set[int]:
    return set(checkpoint_steps(load_spec("sparse-parity", [f"steps={steps}", f"record.every={every}"]).record, steps))


def baseline_seconds_per_seed(n_seeds: int, steps: int, every: int) -> float:
    """A plain loop per seed with the run's evaluation points; seconds per seed (the mean over `n_seeds`)."""
    checkpoints = evaluation_steps(steps, every)
    secret = torch.randperm(N, generator=torch.Generator().manual_seed(0))[:K]
    test_x = torch.randint(0, 2, (N_TEST, N), generator=torch.Generator().manual_seed(1)).float() * 2 - 1
    test_y = test_x[:, secret].prod(-1)
    start = time.perf_counter()
    for seed in range(n_seeds):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(N, WIDTH), nn.ReLU(), nn.Linear(WIDTH, 1))
        optimizer = torch.optim.SGD(model.parameters(), lr=LR)
        gen = torch.Generator().manual_seed(10_000 + seed)
        for step in range(steps + 1):
            x = torch.randint(0, 2, (BATCH, N), generator=gen).float() * 2 - 1
            y = x[:, secret].prod(-1)
            loss = torch.relu(1 - y * model(x).squeeze(-1)).mean()
            if step in checkpoints:  # what ontogeny records: test loss and accuracy of every example
                with torch.no_grad():
                    out = model(test_x).squeeze(-1)
                    example_loss, correct = torch.relu(1 - test_y * out), (out.sign() == test_y)
                    example_loss.tolist(), correct.tolist()
            if step == steps:
                break
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return (time.perf_counter() - start) / n_seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, nargs="+", default=[8, 32, 128, 512])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--every", type=int, default=250, help="record.every (the recipe's 250 by default)")
    parser.add_argument("--baseline-seeds", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, load average {os.getloadavg()[0]:.2f}", flush=True)
    roofline = matmul_roofline()
    print(f"matmul roofline: {roofline:.1f} GFLOP/s (float32 GEMM, 1 thread)", flush=True)
    with reuse_freed_memory():  # as `ontogeny run` has it, so both sides use the same allocator settings
        per_seed = baseline_seconds_per_seed(args.baseline_seeds, args.steps, args.every)
    print(f"baseline: {per_seed:.2f} s per seed ({args.steps} steps + evaluations, mean of {args.baseline_seeds})",
          flush=True)
    evaluations = len(evaluation_steps(args.steps, args.every))
    rows = []
    for members in sorted(args.members):
        wall, peak = ontogeny_run(members, args.steps, args.every)
        rate = members * args.steps / wall
        with_eval = members * evaluations * FLOP_PER_MEMBER_EVALUATION / wall / 1e9
        rows.append((members, wall, rate, rate * FLOP_PER_MEMBER_STEP / 1e9, with_eval, peak, members * per_seed))
        print(f"  {members} members: {wall:.1f} s", flush=True)
    print(f"\n| members | ontogeny wall | seed-steps/s | GFLOP/s (% of roofline) | with evaluations | peak RSS "
          f"| MiB per member | per-seed loop wall (scaled) | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for members, wall, rate, gflops, with_eval, peak, base in rows:
        total = gflops + with_eval
        print(f"| {members} | {wall:.1f} s | {rate:,.0f} | {gflops:.1f} ({100 * gflops / roofline:.0f}%) "
              f"| {total:.1f} ({100 * total / roofline:.0f}%) | {peak:.2f} GiB | {peak * 1024 / members:.1f} "
              f"| {base:.0f} s | {base / wall:.1f}x |")
    print(f"\nload average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
