"""Controlled datasets: tensors with stable example ids, named subsets and seed-determined training batches.

Each task module defines its spec (a `spec.TaskSpec`), registers it in `spec.TASKS` and builds its `Task`.
`make_task` builds the one `Task` that serves an ensemble; member m's data depends only on its own task spec
(the task's `member_fields`) and `data_seeds[m]`, never on its position or the ensemble's size.
"""

from __future__ import annotations

import dataclasses

from ..spec import TaskSpec
from .base import IGNORE, Batch, EvalSplit, PairSplit, SequenceSplit, Task, TokenSplit
from .grammar import GrammarSpec
from .letters import LetterCountingSpec
from .markov import MarkovICLSpec
from .modular import ModularSpec
from .parity import MultitaskParitySpec, SparseParitySpec
from .questions import QuestionFormationSpec

__all__ = ["IGNORE", "Batch", "EvalSplit", "GrammarSpec", "LetterCountingSpec", "MarkovICLSpec", "ModularSpec",
           "MultitaskParitySpec", "PairSplit", "QuestionFormationSpec", "SequenceSplit", "SparseParitySpec", "Task",
           "TokenSplit", "make_task"]


def make_task(tasks: list[TaskSpec], data_seeds: list[int], max_probe_examples: int) -> Task:
    """Return the `Task` serving an ensemble whose member m has task spec `tasks[m]` and data seed `data_seeds[m]`.

    Raises ValueError if the members' specs differ in a field other than the task's `member_fields`, or if the
    lists are empty or of different lengths.
    """
    if not tasks or len(tasks) != len(data_seeds):
        raise ValueError(f"need one data seed per member (got {len(tasks)} tasks, {len(data_seeds)} data seeds)")
    first = tasks[0]
    if not isinstance(first, TaskSpec):
        raise ValueError(f"unknown task spec {first!r}")
    may_differ = type(first).member_fields
    for m, task in enumerate(tasks[1:], start=1):
        if type(task) is not type(first):
            raise ValueError(f"member {m} has task {task.name!r}, member 0 has {first.name!r}")
        differ = [f.name for f in dataclasses.fields(first)
                  if f.name not in may_differ and getattr(task, f.name) != getattr(first, f.name)]
        if differ:
            raise ValueError(f"member {m}'s task differs from member 0's in {', '.join(differ)}; members of one "
                             f"ensemble may differ only in {', '.join(sorted(may_differ)) or 'their data seed'}")
    return type(first).build(list(tasks), list(data_seeds), max_probe_examples)
