"""Seed policy: one independent random stream per (seed, purpose), never per ensemble position.

A member's draws depend only on its own seeds: `init_seed` for weights, `data_seed` for data order and
minibatches, the task's `split_seed` for the train/test split. Streams are keyed by a hash of the purpose and
the seed (plus optional integers such as a block index), so adding members or purposes never shifts another stream.
"""

import hashlib

import torch


def stream_seed(purpose: str, seed: int, *extra: int) -> int:
    """Return a 63-bit integer seed for the stream named by `purpose`, `seed` and any `extra` integers."""
    key = ":".join([purpose, str(int(seed)), *(str(int(e)) for e in extra)])
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") >> 1


def generator(purpose: str, seed: int, *extra: int) -> torch.Generator:
    """Return a fresh CPU `torch.Generator` for one stream (see `stream_seed`)."""
    return torch.Generator().manual_seed(stream_seed(purpose, seed, *extra))
