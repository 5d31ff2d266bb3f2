"""Test-wide settings."""

import os

# The test models are tiny: with several OpenMP threads per process, the threads' synchronization costs more than
# the work, and on a shared machine it slows the suite ~10x. One thread (inherited by the CLI subprocesses) keeps it
# fast; it changes no result the tests check.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
