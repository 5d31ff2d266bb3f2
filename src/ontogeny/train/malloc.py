"""Keep freed CPU memory for reuse while training.

PyTorch's CPU allocator takes every tensor from glibc's malloc. By default glibc serves a block over its mmap
threshold (128 KiB, rising to at most 32 MiB) with a fresh mapping and unmaps it on free, and returns the heap's top
to the OS past its trim threshold. A training step allocates the same large activations every step, so each one
page-faults in anew: at 512 sparse-parity members that was about half of the step time (benchmarks/README.md).
Raising both thresholds makes the step reuse the same memory; the price is that the process keeps its peak memory
until training ends, when `reuse_freed_memory` hands the free part back (`malloc_trim`).

It changes the whole process, so ontogeny applies it only in processes of its own (`ontogeny run`, a Ray task); a
script that calls `ontogeny.run` may wrap the call in `reuse_freed_memory()` itself.

There is no library for this: it is two `mallopt` calls through ctypes. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from contextlib import contextmanager

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # from glibc's malloc.h
_LARGE = 1 << 30


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:  # musl or an unusual libc: leave the allocator alone
        return None


@contextmanager
def reuse_freed_memory():
    """Within this block, freed blocks up to 1 GiB stay in the heap for the next allocation (glibc only)."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, _LARGE)
        libc.mallopt(M_TRIM_THRESHOLD, _LARGE)
    try:
        yield
    finally:
        if libc is not None:
            libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)  # where glibc's own dynamic threshold ends up after large frees
            libc.mallopt(M_TRIM_THRESHOLD, 64 << 20)  # twice that, as glibc sets it
            libc.malloc_trim(0)
