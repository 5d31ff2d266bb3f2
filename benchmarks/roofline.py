"""This machine's matmul roofline and a training step's useful FLOPs, shared by the speed benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def matmul_roofline(dtype: torch.dtype = torch.float32) -> float:
    """Best GFLOP/s of one GEMM in `dtype` of a square size in 256..1024 with torch's current thread count."""
    best = 0.0
    for size in (256, 512, 1024):
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        for _ in range(3):
            a @ b
        repeats = max(3, int(2e9 // (2 * size**3)))
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = max(best, 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9)
    return best


def step_flops(step: Callable[[], None]) -> int:
    """FLOPs of one call of `step` (forward and backward) as torch's FLOP counter counts them: matmuls and
    attention, not elementwise work or the optimizer."""
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()
