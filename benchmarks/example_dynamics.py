"""Time ExampleDynamics on 100k examples x 200 checkpoints (loss and correctness), the scale of a run's probe set.

Run: python benchmarks/example_dynamics.py [n_examples] [n_checkpoints]
Prints the seconds taken by fit and the error of the recovered ages of acquisition. Target: under 10 s on 2 cores.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from ontogeny.analysis.dynamics import ExampleDynamics


def main(n_examples: int = 100_000, n_checkpoints: int = 200) -> None:
    rng = np.random.default_rng(0)
    raw = np.round(np.geomspace(1, 100_000, n_checkpoints))
    steps = np.maximum.accumulate(raw - np.arange(n_checkpoints)) + np.arange(n_checkpoints)  # [S] distinct
    x = np.log10(1 + steps)
    center = rng.uniform(x[0] + 0.5, x[-1] - 0.5, n_examples)  # [N] true log10(1 + age of acquisition)
    width = rng.uniform(0.02, 0.3, n_examples)
    learned = 1 / (1 + np.exp(-(x[None, :] - center[:, None]) / width[:, None]))  # [N, S]
    loss = np.log(10) * (1 - learned) + 0.05 + rng.normal(0, 0.1, learned.shape)  # chance loss of 10 classes
    loss = np.abs(loss).astype(np.float32)
    correct = loss < np.log(2)

    start, start_cpu = time.perf_counter(), time.process_time()
    table = ExampleDynamics().fit(steps, loss=loss, correct=correct).table_
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    error = np.abs(np.log10(1 + table["aoa_step"].to_numpy()) - center)
    # CPU time (all threads) is the number to trust on a shared machine, where wall time includes waiting
    print(f"ExampleDynamics.fit: {n_examples} examples x {len(steps)} checkpoints in {seconds:.2f} s wall, "
          f"{cpu_seconds:.2f} s CPU ({os.cpu_count()} cores visible); "
          f"median |log10 AoA error| = {np.nanmedian(error):.3f} decades")


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:]))
