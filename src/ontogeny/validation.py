"""Spec validation: impossible values and specs too large for this machine, refused before anything is written."""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

from .exceptions import SpecError
from .names import SAFE_NAME_RULE, is_safe_name

if TYPE_CHECKING:  # only annotations: spec.py imports this module
    from .spec import Spec

MAX_STEPS = 10**12
MAX_CHECKPOINTS = 10**6
MIN_EVAL_ROWS = 32  # probe examples per evaluation chunk, at least
PRECISIONS = ("float32", "bfloat16")  # the dtype matmuls run in; weights, gradients and optimizer stay float32


def validate(spec: Spec, source: str | None = None, *, check_machine: bool = True) -> None:
    """Raise `SpecError` for impossible values (and for specs too large for this machine's memory)."""

    def check(ok: bool, key: str, message: str) -> None:
        if not ok:
            raise SpecError(f"{message} (got {spec.get(key)!r})", source=source, key=key)

    task, model, optim, record = spec.task, spec.model, spec.optim, spec.record
    check(is_safe_name(spec.name), "name", f"must be one safe path component: {SAFE_NAME_RULE}")
    check(1 <= spec.steps <= MAX_STEPS, "steps", f"must be between 1 and {MAX_STEPS:.0e}")
    check(len(spec.seeds) >= 1, "seeds", "needs at least one seed")
    check(len(set(spec.seeds)) == len(spec.seeds), "seeds", "seeds must be distinct")
    check(len(set(spec.data_orders)) == len(spec.data_orders), "data_orders", "data orders must be distinct")
    check(spec.device == "cpu" or spec.device.startswith("cuda"), "device", "must be 'cpu' or 'cuda[:N]'")
    check(spec.precision in PRECISIONS, "precision", f"must be one of {', '.join(PRECISIONS)}")
    task.check(check)
    model.check(check, task.sizes(spec))
    check(0 < model.init_scale < math.inf, "model.init_scale", "must be positive and finite")
    check(optim.name in ("adamw", "sgd"), "optim.name", "must be 'adamw' or 'sgd'")
    check(0 < optim.lr < math.inf, "optim.lr", "must be positive and finite")
    check(0 <= optim.weight_decay < math.inf, "optim.weight_decay", "must be >= 0 and finite")
    check(all(0 <= b < 1 for b in optim.betas), "optim.betas", "each beta must be in [0, 1)")
    check(0 < optim.eps < math.inf, "optim.eps", "must be positive and finite")
    check(0 <= optim.momentum < 1, "optim.momentum", "must be in [0, 1)")
    check(0 <= optim.grad_clip < math.inf, "optim.grad_clip", "must be >= 0 and finite (0: off)")
    check(optim.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0")
    check(optim.schedule in ("constant", "cosine", "linear"), "optim.schedule", "must be constant, cosine or linear")
    check(record.every >= 1, "record.every", "must be at least 1")
    check(spec.steps // record.every <= MAX_CHECKPOINTS, "record.every",
          f"records more than {MAX_CHECKPOINTS:.0e} checkpoints over {spec.steps} steps (record less often)")
    check(record.per_octave >= 1, "record.per_octave", "must be at least 1")
    check(record.weights_every >= 0, "record.weights_every", "must be >= 0")
    check(record.max_probe_examples >= 1, "record.max_probe_examples", "must be at least 1")
    if check_machine and spec.device.startswith("cuda"):
        import torch

        check(torch.cuda.is_available(), "device", "CUDA is not available on this machine")
    # Ensembles are cut to fit (train/plan.py), so what must fit is one member.
    need, have = estimate_memory(spec) // n_members(spec), _machine_memory()
    if check_machine and have and need > 0.8 * have:
        raise SpecError(f"needs about {need / 2**30:.1f} GiB of memory per member, this machine has "
                        f"{have / 2**30:.1f} GiB (use a smaller model or batch)", source=source, key="model")


def n_members(spec: Spec) -> int:
    return len(spec.grid()) * len(spec.seeds) * len(spec.data_orders)


def estimate_memory(spec: Spec) -> int:
    """Rough peak bytes of training: weights, grads and optimizer state, and the largest activations (float32).
    Evaluations run in chunks sized to the memory left (at least MIN_EVAL_ROWS examples: train/loop.py). A captured
    CUDA graph keeps a training step's activations for itself, beside an eager checkpoint step's (train/graphs.py)."""
    sizes = spec.task.sizes(spec)
    params, per_example = spec.model.memory(sizes)
    graphs = spec.cuda_graphs and spec.device.startswith("cuda")  # a CPU ignores the setting
    rows = 3 * sizes.batch * (2 if graphs else 1) + min(sizes.n_eval, MIN_EVAL_ROWS)
    return 4 * n_members(spec) * (4 * params + rows * (per_example + sizes.n_outputs))


def _machine_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
