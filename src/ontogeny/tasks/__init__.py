"""Controlled datasets: tensors with stable example ids, named subsets and seed-determined training batches.

`make_task` builds the one `Task` that serves an ensemble; member m's data depends only on its own task spec
(`split_seed`, `train_fraction`) and `data_seeds[m]`, never on its position or the ensemble's size.
"""

from __future__ import annotations

import dataclasses

from ..spec import MEMBER_FIELDS, ModularTask, MultitaskParityTask, SparseParityTask
from .base import Batch, EvalSplit, Task
from .modular import ModularArithmetic
from .parity import MultitaskParity, SparseParity

__all__ = ["Batch", "EvalSplit", "Task", "make_task"]

TaskSpec = ModularTask | SparseParityTask | MultitaskParityTask

_TASK_CLASSES = {ModularTask: ModularArithmetic, SparseParityTask: SparseParity, MultitaskParityTask: MultitaskParity}
# Parity members share the secret bits and the test set, so only modular members may differ in their split.
_MEMBER_TASK_FIELDS = {
    ModularTask: {key.removeprefix("task.") for key in MEMBER_FIELDS if key.startswith("task.")},
    SparseParityTask: set(),
    MultitaskParityTask: set(),
}


def make_task(tasks: list[TaskSpec], data_seeds: list[int], max_probe_examples: int) -> Task:
    """Return the `Task` serving an ensemble whose member m has task spec `tasks[m]` and data seed `data_seeds[m]`.

    Raises ValueError if the members' specs differ in a field other than `train_fraction` / `split_seed`
    (modular only), or if the lists are empty or of different lengths.
    """
    if not tasks or len(tasks) != len(data_seeds):
        raise ValueError(f"need one data seed per member (got {len(tasks)} tasks, {len(data_seeds)} data seeds)")
    first = tasks[0]
    if type(first) not in _TASK_CLASSES:
        raise ValueError(f"unknown task spec {first!r}")
    may_differ = _MEMBER_TASK_FIELDS[type(first)]
    for m, task in enumerate(tasks[1:], start=1):
        if type(task) is not type(first):
            raise ValueError(f"member {m} has task {task.name!r}, member 0 has {first.name!r}")
        differ = [f.name for f in dataclasses.fields(first)
                  if f.name not in may_differ and getattr(task, f.name) != getattr(first, f.name)]
        if differ:
            raise ValueError(f"member {m}'s task differs from member 0's in {', '.join(differ)}; members of one "
                             f"ensemble may differ only in {', '.join(sorted(may_differ)) or 'their data seed'}")
    return _TASK_CLASSES[type(first)](list(tasks), list(data_seeds), max_probe_examples)
