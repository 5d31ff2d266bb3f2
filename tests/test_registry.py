"""Kinds register themselves: a task defined in one file (here, this test) trains, records and analyzes with no
change anywhere else; an unknown kind is refused with the known ones."""

from dataclasses import dataclass

import pytest
import torch

import ontogeny as og
from ontogeny.analysis import analyze
from ontogeny.analysis.analyze import ANALYSES
from ontogeny.exceptions import SpecError
from ontogeny.spec import MODELS, TASKS, Check, Sizes, TaskSpec, load_spec
from ontogeny.tasks.base import Batch, EvalSplit, Task


# --8<-- [start:task]
class FirstBit(Task):
    """Copy the first of n bits: a task with a fixed train set of 64 examples and 64 test examples."""

    loss, n_outputs = "cross_entropy", 2

    def __init__(self, tasks, data_seeds, max_probe_examples):
        spec = tasks[0]
        self.n_inputs, self.n_members = spec.n, len(tasks)
        bits = torch.randint(0, 2, (128, spec.n), generator=torch.Generator().manual_seed(spec.split_seed))
        example = torch.arange(128)
        self.x, self.y = bits.float(), bits[:, 0]
        self._splits = [EvalSplit("train", example[:64], self.x[:64], self.y[:64]),
                        EvalSplit("test", example[64:], self.x[64:], self.y[64:])]

    def eval_splits(self):
        return self._splits

    def batch(self, step):
        return Batch(self.x[:64].expand(self.n_members, -1, -1), self.y[:64].expand(self.n_members, -1))


@TASKS.register("first_bit")
@dataclass(frozen=True)
class FirstBitTask(TaskSpec):
    name: str = "first_bit"
    n: int = 8
    split_seed: int = 0

    def check(self, check: Check) -> None:
        check(self.n >= 1, "task.n", "must be at least 1")

    def sizes(self, spec) -> Sizes:
        return Sizes(vocab_size=None, n_positions=0, n_inputs=self.n, n_outputs=2, batch=64, n_eval=128)

    @classmethod
    def build(cls, tasks, data_seeds, max_probe_examples):
        return FirstBit(tasks, data_seeds, max_probe_examples)
# --8<-- [end:task]


def test_a_task_registered_in_its_own_file_runs_end_to_end(tmp_path):
    run = og.run("sparse-parity", overrides={"task.name": "first_bit", "task.n": 6, "model.width": 16, "steps": 200,
                                             "seeds": 2, "record.every": 50, "optim.lr": 0.5}, out=tmp_path / "run")
    assert run.spec.task == FirstBitTask(n=6)
    assert run.scalars(name="test/acc", step=200).value.min() == 1.0  # it learned to copy the bit
    assert "grokking" in analyze(run).tables


def test_unknown_kinds_list_the_known_ones():
    with pytest.raises(SpecError, match=r"task.name: unknown task 'nope' \(known: modular, .*sparse_parity"):
        load_spec("grokking", {"task.name": "nope"})
    assert {"mlp", "transformer"} <= set(MODELS.names())
    assert {"components", "counting", "examples", "fourier", "grokking", "hidden", "interventions", "language", "llc",
            "maps", "rules", "sae", "scaling", "seeds", "sharpness", "signature", "solutions", "suite", "transitions",
            "weight_maps"} == set(
        ANALYSES.names())
