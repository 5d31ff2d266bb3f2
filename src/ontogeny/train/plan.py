"""Sizing ensembles to a worker's memory and packing them into tasks (for `ontogeny run`, sequential or on Ray).

Members that share every shape can train as one ensemble; a plan cuts such a group into ensembles of at most
`max_members` (so each fits one worker's memory: the spec's memory estimate, per member) and, for a distributed
run, packs small ensembles into one task so that no task is mostly start-up. The cut depends only on the members
and `max_members`, which a run records in meta.json, so a resumed run (on either backend) has the same ensembles.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass

from ..exceptions import SpecError
from ..members import Member, ensembles, shape_key

MEMORY_SHARE = 0.8  # of a worker's memory that its ensembles may plan to use
H100_DENSE_PEAK = {"float32": 67e12, "bfloat16": 989e12}  # FLOP/s, SXM, tensor cores for bf16 (NVIDIA's sheet)
GPU_SHARE = 0.25  # of that peak an ensemble is meant to reach (issue 25's target; benchmarks/gpu_speed.py)


@dataclass(frozen=True)
class Plan:
    """Ensembles (members renumbered into ensemble ids 0..E-1), their estimated peak memory, and the tasks that
    train them (ensemble indices per task, in order)."""

    groups: list[list[Member]]
    memory: list[int]
    tasks: list[list[int]]
    max_members: int

    def describe(self, seconds: list[float] | None = None) -> list[str]:
        """One line per task: its ensembles, members each, memory each (and estimated seconds)."""
        lines = []
        for number, task in enumerate(self.tasks):
            parts = [f"ensemble {i}: {len(self.groups[i])} members, {self.memory[i] / 2**20:,.0f} MiB"
                     + (f", ~{seconds[i]:,.0f} s" if seconds else "") for i in task]
            lines.append(f"task {number}: " + "; ".join(parts))
        return lines


def member_memory(member: Member) -> int:
    """Estimated peak bytes of training one member of its grid point (the spec's estimate for a single seed)."""
    from ..validation import estimate_memory

    one = dataclasses.replace(member.spec, seeds=(0,), data_orders=(0,), sweep=())
    return estimate_memory(one)


def worker_memory(device: str) -> int | None:
    """Memory of one worker's device, as this machine has it: the GPU's, or the RAM; None for a GPU this machine
    lacks (a Ray driver beside GPU workers: then give --max-members)."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return None
        return torch.cuda.get_device_properties(torch.device(device)).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def make_plan(members: list[Member], *, max_members: int | None = None, memory_budget: int | None = None,
              parallel: int = 1) -> Plan:
    """Cut each group of same-shape members into ensembles of at most `max_members` (default: as many as fit
    MEMORY_SHARE of `memory_budget` bytes, all of them without a budget) and pack them into tasks of about
    1 / (4 * parallel) of the whole work each (a large ensemble is a task of its own)."""
    shaped = ensembles(members)
    if max_members is None:
        if memory_budget is None:
            max_members = max(len(group) for group in shaped)
        else:
            largest = max(member_memory(group[0]) for group in shaped)
            max_members = int(MEMORY_SHARE * memory_budget // largest)
            if max_members < 1:
                raise SpecError(f"one member needs about {largest / 2**30:.1f} GiB, more than "
                                f"{MEMORY_SHARE:.0%} of a worker's {memory_budget / 2**30:.1f} GiB", key="model")
    if max_members < 1:
        raise SpecError(f"--max-members must be at least 1 (got {max_members})")
    groups: list[list[Member]] = []
    for group in shaped:
        for start in range(0, len(group), max_members):
            index = len(groups)
            groups.append([dataclasses.replace(m, ensemble=index) for m in group[start:start + max_members]])
    memory = [member_memory(group[0]) * len(group) for group in groups]
    work = [len(group) * group[0].spec.steps * member_memory(group[0]) for group in groups]  # a proxy for time
    target = sum(work) / (4 * max(parallel, 1))
    tasks: list[list[int]] = []
    for index, amount in enumerate(work):
        last = tasks[-1] if tasks else None
        if last is not None and sum(work[i] for i in last) + amount <= target:
            last.append(index)
        else:
            tasks.append([index])
    return Plan(groups, memory, tasks, max_members)


def time_plan(plan: Plan, steps: int = 3) -> tuple[list[float] | None, list[float]]:
    """Estimated seconds to train each ensemble: `steps` timed training steps (after one untimed) of the first
    ensemble of each shape, scaled by members and steps (None for a GPU this machine lacks: nothing is timed); and
    its training FLOPs, counted by torch's FLOP counter (matmuls and attention, forward and backward; evaluations are
    not) on one member's step on PyTorch's meta device, which computes shapes alone: the path a GPU takes (every token
    unembedded; attention as products, which the counter misses in the CPU's fused kernel), in float32 (the count
    does not depend on the precision)."""
    from torch.utils.flop_counter import FlopCounterMode

    from .loop import EnsembleTrainer

    here = runs_here(plan.groups[0][0].spec.device)
    per_member_step: dict[str, tuple[float, float]] = {}  # seconds, FLOPs
    seconds, flops = [], []
    for group in plan.groups:
        key = shape_key(group[0].spec)
        if key not in per_member_step:
            one = dataclasses.replace(group[0], spec=dataclasses.replace(group[0].spec, precision="float32"))
            with FlopCounterMode(display=False) as counter:
                EnsembleTrainer([one], device="meta").time_steps(1)
            elapsed = float("nan")
            if here:
                trainer = EnsembleTrainer(group, device=group[0].spec.device)
                trainer.time_steps(1)
                start = time.perf_counter()
                trainer.time_steps(steps)
                elapsed = time.perf_counter() - start
            per_member_step[key] = (elapsed / (steps * len(group)), counter.get_total_flops())
        scale = len(group) * group[0].spec.steps
        seconds.append(per_member_step[key][0] * scale)
        flops.append(per_member_step[key][1] * scale)
    return (seconds if here else None), flops


def runs_here(device: str) -> bool:
    """Whether this machine has `device` (a CPU, or a GPU it has)."""
    import torch

    return not device.startswith("cuda") or torch.cuda.is_available()


def gpu_minutes(flops: float, precision: str) -> float:
    """Minutes `flops` take on one H100 at GPU_SHARE of its dense peak in `precision`."""
    return flops / (GPU_SHARE * H100_DENSE_PEAK[precision]) / 60
