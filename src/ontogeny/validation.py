"""Spec validation: impossible values and specs too large for this machine, refused before anything is written."""

from __future__ import annotations

import os

import math

from .exceptions import SpecError
from .store.layout import SAFE_NAME_RULE, is_safe_name
from .spec import MODULAR_OPS, MLPModel, ModularTask, MultitaskParityTask, SparseParityTask, Spec

MAX_STEPS = 10**12
MAX_CHECKPOINTS = 10**6


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
    if isinstance(task, ModularTask):
        check(task.p >= 2, "task.p", "must be at least 2")
        check(task.op in MODULAR_OPS, "task.op", f"must be one of {', '.join(MODULAR_OPS)}")
        check(task.op != "/" or _is_prime(task.p), "task.p", "must be prime for division")
        check(0 < task.train_fraction < 1, "task.train_fraction", "must be strictly between 0 and 1")
        check(task.batch_size >= 0, "task.batch_size", "must be >= 0 (0: full batch)")
    elif isinstance(task, SparseParityTask):
        check(task.n >= 1, "task.n", "must be at least 1")
        check(1 <= task.k <= task.n, "task.k", "must be between 1 and task.n")
        check(task.n_train >= 0, "task.n_train", "must be >= 0 (0: online)")
        check(task.n_test >= 1, "task.n_test", "must be at least 1")
        check(task.batch_size >= 1, "task.batch_size", "must be at least 1")
    else:
        check(task.n_tasks >= 1, "task.n_tasks", "must be at least 1")
        check(1 <= task.k <= task.n, "task.k", "must be between 1 and task.n")
        check(task.zipf_exponent >= 0, "task.zipf_exponent", "must be >= 0")
        check(task.batch_size >= 1, "task.batch_size", "must be at least 1")
        check(task.n_test_per_task >= 1, "task.n_test_per_task", "must be at least 1")
    if isinstance(model, MLPModel):
        check(model.width >= 1, "model.width", "must be at least 1")
        check(model.depth >= 1, "model.depth", "must be at least 1")
        check(model.activation in ("relu", "gelu", "square"), "model.activation", "must be relu, gelu or square")
    else:
        check(model.n_layers >= 1, "model.n_layers", "must be at least 1")
        check(model.d_model >= 1, "model.d_model", "must be at least 1")
        check(model.n_heads >= 1, "model.n_heads", "must be at least 1")
        check(model.d_model % model.n_heads == 0, "model.n_heads", "must divide model.d_model")
        check(model.d_mlp >= 1, "model.d_mlp", "must be at least 1")
        check(model.activation in ("relu", "gelu"), "model.activation", "must be relu or gelu")
        check(not isinstance(task, SparseParityTask | MultitaskParityTask), "model.name",
              "the transformer reads tokens; parity tasks give bits (use model.name = 'mlp')")
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
    need, have = estimate_memory(spec), _machine_memory()
    if check_machine and have and need > 0.8 * have:
        raise SpecError(f"needs about {need / 2**30:.1f} GiB of memory for {n_members(spec)} members, "
                        f"this machine has {have / 2**30:.1f} GiB (use fewer seeds or a smaller model)",
                        source=source, key="model")


def n_members(spec: Spec) -> int:
    return len(spec.grid()) * len(spec.seeds) * len(spec.data_orders)


def estimate_memory(spec: Spec) -> int:
    """Rough peak bytes of training: weights, grads and optimizer state, and the largest activations (float32)."""
    task, model = spec.task, spec.model
    if isinstance(task, ModularTask):
        vocab, positions, n_in, outputs = task.p + 1, 3, None, task.p
        batch = task.batch_size or int(task.p * task.p * max([task.train_fraction, *_swept(spec, "task.train_fraction")]))
        n_eval = task.p * task.p
    elif isinstance(task, SparseParityTask):
        vocab, positions, n_in, outputs = None, 0, task.n, 1
        batch, n_eval = task.batch_size, task.n_test
    else:
        vocab, positions, n_in, outputs = None, 0, task.n_tasks + task.n, 2
        batch, n_eval = task.batch_size, task.n_tasks * task.n_test_per_task
    if isinstance(model, MLPModel):
        first = (vocab * positions if vocab else n_in) * model.width
        params = first + (model.depth - 1) * model.width**2 + model.width * outputs
        per_example = model.depth * model.width * 3
    else:
        d = model.d_model
        params = vocab * d + positions * d + model.n_layers * (4 * d * d + 2 * d * model.d_mlp) + d * outputs
        per_example = model.n_layers * positions * (6 * d + 2 * model.d_mlp + model.n_heads * positions) + outputs
    members = n_members(spec)
    return 4 * members * (4 * params + 3 * (batch + n_eval) * (per_example + outputs))


def _swept(spec: Spec, key: str) -> list:
    return [v for k, values in spec.sweep if k == key for v in values]


def _machine_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))
