"""Sparse parity (Barak et al. 2022) and multitask sparse parity (Michaud et al. 2023, the quantization model).

Members of one ensemble share the split seed (so the secret bits and the test set) and differ only in data seed.
Online training draws fresh samples in blocks of `BLOCK_STEPS` steps per member, each block from its own
("data", data_seed, block) stream, so any step is recomputable on its own and generation is vectorised.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..seeds import generator
from ..spec import TASKS, Check, Sizes, Spec, TaskSpec
from .base import Batch, EvalSplit, Task
from .interventions import parse_intervention
from .modular import EpochOrder, probe_positions

BLOCK_STEPS = 100  # steps of fresh samples drawn at once per member
TRAIN_BLOCK = 4096  # examples of a fixed multitask training set drawn from one stream


@TASKS.register("sparse_parity")
@dataclass(frozen=True)
class SparseParitySpec(TaskSpec):
    """Parity of k secret bits out of n (Barak et al. 2022); labels are +-1."""

    name: str = "sparse_parity"
    n: int = 40
    k: int = 3
    n_train: int = 0  # 0: fresh samples every step (online)
    n_test: int = 1000
    batch_size: int = 32
    split_seed: int = 0  # picks the secret bits, the fixed training set and the test set

    def check(self, check: Check) -> None:
        check(self.n >= 1, "task.n", "must be at least 1")
        check(1 <= self.k <= self.n, "task.k", "must be between 1 and task.n")
        check(self.n_train >= 0, "task.n_train", "must be >= 0 (0: online)")
        check(self.n_test >= 1, "task.n_test", "must be at least 1")
        check(self.batch_size >= 1, "task.batch_size", "must be at least 1")

    def sizes(self, spec: Spec) -> Sizes:
        return Sizes(vocab_size=None, n_positions=0, n_inputs=self.n, n_outputs=1, batch=self.batch_size,
                     n_eval=self.n_test)

    @classmethod
    def build(cls, tasks, data_seeds, max_probe_examples):
        return SparseParity(tasks, data_seeds, max_probe_examples)


@TASKS.register("multitask_parity")
@dataclass(frozen=True)
class MultitaskParitySpec(TaskSpec):
    """Multitask sparse parity (Michaud et al. 2023): one-hot control bits pick one of `n_tasks` parities."""

    name: str = "multitask_parity"
    n_tasks: int = 20
    n: int = 30
    k: int = 3
    zipf_exponent: float = 1.4  # P(task i) ~ i^-zipf_exponent, i = 1..n_tasks
    batch_size: int = 2000
    n_test_per_task: int = 200
    split_seed: int = 0  # picks each subtask's bits, the test set and the fixed training set
    n_train: int = 0  # 0: fresh samples every step; else a fixed training set visited in epochs (nested: a member's
    # set is the first n_train examples of one stream, so more data only adds examples)
    intervention: str = ""  # drop / weight / curriculum of subtasks (tasks/interventions.py), per member

    member_fields = frozenset({"intervention", "n_train"})  # each member's own training data

    def subtask_names(self) -> list[str]:
        width = len(str(self.n_tasks - 1))
        return [f"task{i:0{width}d}" for i in range(self.n_tasks)]

    def check(self, check: Check) -> None:
        check(self.n_tasks >= 1, "task.n_tasks", "must be at least 1")
        check(self.n_train == 0 or self.n_train >= self.batch_size, "task.n_train",
              f"must be 0 (fresh samples) or at least task.batch_size ({self.batch_size})")
        try:
            parse_intervention(self.intervention, self.subtask_names())
        except ValueError as err:
            check(False, "task.intervention", str(err))
        check(not (self.intervention and self.n_train), "task.intervention",
              "applies to fresh samples only (task.n_train = 0)")
        check(1 <= self.k <= self.n, "task.k", "must be between 1 and task.n")
        check(0 <= self.zipf_exponent < float("inf"), "task.zipf_exponent", "must be >= 0 and finite")
        check(self.batch_size >= 1, "task.batch_size", "must be at least 1")
        check(self.n_test_per_task >= 1, "task.n_test_per_task", "must be at least 1")

    def sizes(self, spec: Spec) -> Sizes:
        return Sizes(vocab_size=None, n_positions=0, n_inputs=self.n_tasks + self.n, n_outputs=2,
                     batch=self.batch_size, n_eval=self.n_tasks * self.n_test_per_task)

    @classmethod
    def build(cls, tasks, data_seeds, max_probe_examples):
        return MultitaskParity(tasks, data_seeds, max_probe_examples)


class OnlineBlocks:
    """Fresh training samples: member m's block b is `draw(generator("data", data_seeds[m], b), m, b)`, a tuple of
    tensors each [BLOCK_STEPS, B, ...]; every member's current block is cached, stacked as [BLOCK_STEPS, M, B, ...].
    When every member has the same data seed and `variant` (what else its draw depends on) the block is drawn once
    and not stacked (a shared batch, [B, ...])."""

    def __init__(self, data_seeds: list[int], draw: Callable[[torch.Generator, int, int], tuple[torch.Tensor, ...]],
                 variants: list | None = None):
        self.shared = len(set(zip(data_seeds, variants or [None] * len(data_seeds)))) == 1
        self.data_seeds, self.draw = data_seeds[:1] if self.shared else data_seeds, draw
        self._block, self._data = -1, ()

    def at(self, step: int) -> tuple[torch.Tensor, ...]:
        """Return `step`'s rows of every drawn tensor, each [M, B, ...] ([B, ...] if shared)."""
        block, row = divmod(step, BLOCK_STEPS)
        if block != self._block:
            draws = [self.draw(generator("data", seed, block), m, block) for m, seed in enumerate(self.data_seeds)]
            self._data = draws[0] if self.shared else tuple(torch.stack(parts, dim=1) for parts in zip(*draws))
            self._block = block
        return tuple(t[row] for t in self._data)


def random_bytes(gen: torch.Generator, shape: tuple[int, ...], n: int) -> torch.Tensor:
    """Return n uniform random bits per entry of `shape`, packed 8 to a byte (8x fewer draws and cached bytes
    than one per bit): [*shape, ceil(n / 8)] uint8. `unpack_bits` turns them into bits."""
    return torch.randint(0, 256, (*shape, -(-n // 8)), generator=gen, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, n: int) -> torch.Tensor:
    """Return the first n bits of bytes packed [..., n_bytes], lowest bit first: [..., n] uint8 0/1."""
    bits = (packed.unsqueeze(-1) >> torch.arange(8, dtype=torch.uint8)) & 1  # [..., n_bytes, 8]
    return bits.flatten(-2)[..., :n].contiguous()


def to_signs(bits: torch.Tensor) -> torch.Tensor:
    """Return bits [...] 0/1 as signs [...] int8 +1/-1 (so a product of signs is the parity)."""
    return 1 - 2 * bits.to(torch.int8)


def random_signs(gen: torch.Generator, shape: tuple[int, ...], n: int) -> torch.Tensor:
    """Return uniform +-1 inputs: [*shape, n] int8."""
    return to_signs(unpack_bits(random_bytes(gen, shape, n), n))


def random_subsets(gen: torch.Generator, n: int, k: int, count: int) -> torch.Tensor:
    """Return `count` sorted k-subsets of range(n), drawn one after another from `gen`: [count, k] int64."""
    return torch.stack([torch.randperm(n, generator=gen)[:k].sort().values for _ in range(count)])


# ---- sparse parity --------------------------------------------------------------------------------------------


class SparseParity(Task):
    """Inputs x in {-1, +1}^n, label the product of the k secret bits (+-1, hinge loss)."""

    loss = "hinge"
    n_outputs = 1

    def __init__(self, tasks: list[SparseParitySpec], data_seeds: list[int], max_probe_examples: int):
        spec = tasks[0]
        self.n_inputs, self.batch_size, self.n_members = spec.n, spec.batch_size, len(tasks)
        self.secret = random_subsets(generator("split", spec.split_seed), spec.n, spec.k, 1)[0]  # [k]
        test_x = random_signs(generator("split", spec.split_seed, 1), (spec.n_test,), spec.n)[:max_probe_examples]
        self._splits = [self._split("test", torch.arange(len(test_x)), test_x)]
        self._blocks = self._orders = None
        if spec.n_train > 0:  # a fixed training set, visited in per-member epoch orders
            self.train_x = random_signs(generator("split", spec.split_seed, 2), (spec.n_train,), spec.n)  # [n_train, n]
            seeds = data_seeds[:1] if len(set(data_seeds)) == 1 else data_seeds  # one order: a shared batch
            self._orders = [EpochOrder(spec.n_train, spec.batch_size, seed) for seed in seeds]
            keep = probe_positions(spec.n_train, max_probe_examples)  # [N_probe]
            self._splits.insert(0, self._split("train", keep, self.train_x[keep]))
        else:  # online: fresh samples every step
            shape = (BLOCK_STEPS, spec.batch_size)
            self._blocks = OnlineBlocks(
                data_seeds, lambda gen, *_: (random_bytes(gen, shape, spec.n),))  # [S, B, n_bytes]

    def labels(self, signs: torch.Tensor) -> torch.Tensor:
        """Return the parity labels of +-1 inputs [..., n]: product of the secret bits, float32 [...]."""
        return signs[..., self.secret].prod(-1).float()

    def _split(self, name: str, example: torch.Tensor, signs: torch.Tensor) -> EvalSplit:
        return EvalSplit(name, example, signs.float(), self.labels(signs))

    def eval_splits(self) -> list[EvalSplit]:
        """Return ["train" (fixed training set only), "test"]: example [N], x [N, n] float32, y [N] float32 +-1."""
        return self._splits

    def batch(self, step: int) -> Batch:
        """Return `step`'s batch: x [M, B, n] float32 +-1, y [M, B] float32 +-1, weight None; x [B, n] and y [B]
        when every member has the same data seed."""
        if self._blocks is not None:
            (packed,) = self._blocks.at(step)  # [M, B, n_bytes] or [B, n_bytes]
            signs = to_signs(unpack_bits(packed, self.n_inputs))  # [M, B, n] or [B, n]
        elif len(self._orders) == 1:
            signs = self.train_x[self._orders[0].positions(step)]  # [B, n]
        else:
            signs = torch.stack([self.train_x[order.positions(step)] for order in self._orders])  # [M, B, n]
        return Batch(signs.float(), self.labels(signs))


# ---- multitask sparse parity ----------------------------------------------------------------------------------


class MultitaskParity(Task):
    """Inputs: n_tasks one-hot control bits, then n task bits (float32 0/1); the label (class 0/1) is the parity of
    the control-selected subtask's k bits. Subtask i (1-based) is trained on with probability ~ i^-zipf_exponent."""

    loss = "cross_entropy"
    n_outputs = 2

    def __init__(self, tasks: list[MultitaskParitySpec], data_seeds: list[int], max_probe_examples: int):
        self.spec = spec = tasks[0]
        self.n_tasks, self.n, self.batch_size, self.n_members = spec.n_tasks, spec.n, spec.batch_size, len(tasks)
        self.n_inputs = spec.n_tasks + spec.n
        self.subtask_bits = random_subsets(generator("split", spec.split_seed), spec.n, spec.k, spec.n_tasks)  # [T, k]
        rank = torch.arange(1, spec.n_tasks + 1, dtype=torch.float64)  # [T]
        self.task_probs = rank ** -spec.zipf_exponent / (rank ** -spec.zipf_exponent).sum()  # [T] float64
        self._cdf = self.task_probs.cumsum(0)  # [T]
        self.interventions = [parse_intervention(t.intervention, spec.subtask_names()) for t in tasks]  # [M]
        self.n_train = [t.n_train for t in tasks]  # [M]
        online = [m for m, n in enumerate(self.n_train) if n == 0]
        self._online, self._blocks = online, None
        if online:  # members trained on fresh samples
            self._blocks = OnlineBlocks([data_seeds[m] for m in online],
                                        lambda gen, i, b: self._draw(gen, online[i], b),
                                        variants=[self.interventions[m] for m in online])
        if len(online) < len(tasks):  # members trained on a fixed set: the first n_train of one stream, in epochs
            self._train_x, self._train_y = self._training_set(spec, max(self.n_train))
            pairs = list(zip(self.n_train, data_seeds))
            one_order = len(set(pairs)) == 1  # one set and one data seed for every member: a shared batch
            self._orders = [EpochOrder(n, spec.batch_size, seed) if n else None
                            for n, seed in (pairs[:1] if one_order else pairs)]
        self._splits = [self._test_split(spec, max_probe_examples)]

    def _training_set(self, spec: MultitaskParitySpec, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed training set's first `size` examples: x [size, n_tasks + n] float32, y [size] int64, drawn in
        blocks of TRAIN_BLOCK from their own streams, so a smaller set is exactly a prefix of a larger one."""
        tasks, bits = [], []
        for block in range(-(-size // TRAIN_BLOCK)):
            gen = generator("split", spec.split_seed, 2, block)
            uniform = torch.rand(TRAIN_BLOCK, generator=gen, dtype=torch.float64)
            tasks.append(torch.searchsorted(self._cdf, uniform, right=True).clamp_(max=self.n_tasks - 1))
            bits.append(unpack_bits(random_bytes(gen, (TRAIN_BLOCK,), self.n), self.n))
        return self.inputs(torch.cat(tasks)[:size], torch.cat(bits)[:size])

    def _draw(self, gen: torch.Generator, member: int, block: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One member's block: subtask ids [BLOCK_STEPS, B] int64 and packed task bits [BLOCK_STEPS, B, n_bytes]."""
        uniform = torch.rand((BLOCK_STEPS, self.batch_size), generator=gen, dtype=torch.float64)  # [S, B]
        cdf = self._member_cdf(member, block)  # [T] or, when the mixture changes inside the block, [S, T]
        task = torch.searchsorted(cdf, uniform, right=True).clamp_(max=self.n_tasks - 1)  # inverse-cdf Zipf draw
        return task, random_bytes(gen, (BLOCK_STEPS, self.batch_size), self.n)

    def _member_cdf(self, member: int, block: int) -> torch.Tensor:
        """The subtask cdf of member's steps in `block`: Zipf, times its intervention's weights at each step."""
        intervention, names = self.interventions[member], self.spec.subtask_names()
        if not intervention.action:
            return self._cdf
        weights = [intervention.weights(step, names)
                   for step in range(block * BLOCK_STEPS, (block + 1) * BLOCK_STEPS)]
        if all(w is None for w in weights):
            return self._cdf
        probs = torch.stack([self.task_probs if w is None else self.task_probs * w for w in weights])  # [S, T]
        return (probs / probs.sum(1, keepdim=True)).cumsum(1)

    def _test_split(self, spec: MultitaskParitySpec, max_probe_examples: int) -> EvalSplit:
        per_task = spec.n_test_per_task
        if spec.n_tasks * per_task > max_probe_examples:
            per_task = max(max_probe_examples // spec.n_tasks, 1)
        # draw the full test set and keep a prefix per subtask, so a smaller cap probes a subset of a larger one
        packed = random_bytes(generator("split", spec.split_seed, 1), (spec.n_tasks, spec.n_test_per_task), spec.n)
        bits = unpack_bits(packed[:, :per_task], spec.n).reshape(-1, spec.n)  # [T * per_task, n]
        task = torch.arange(spec.n_tasks).repeat_interleave(per_task)  # [T * per_task]
        x, y = self.inputs(task, bits)
        subsets = {name: task == i for i, name in enumerate(spec.subtask_names())}  # [N] bool each
        return EvalSplit("test", torch.arange(len(task)), x, y, subsets=subsets)

    def inputs(self, task: torch.Tensor, bits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the inputs and labels of subtask ids [...] with task bits [..., n]:
        x [..., n_tasks + n] float32 (one-hot control, then bits) and y [...] int64 (parity of the subtask's bits)."""
        control = torch.nn.functional.one_hot(task, self.n_tasks)  # [..., T]
        x = torch.cat([control.float(), bits.float()], dim=-1)  # [..., T + n]
        y = bits.gather(-1, self.subtask_bits[task]).sum(-1, dtype=torch.int64) % 2  # [...]
        return x, y

    def eval_splits(self) -> list[EvalSplit]:
        """Return ["test"]: example [N], x [N, n_tasks + n] float32, y [N] int64, one subset "taskNN" per subtask."""
        return self._splits

    def batch(self, step: int) -> Batch:
        """Return `step`'s batch (fresh samples, or the member's fixed set in epochs): x [M, B, n_tasks + n] float32,
        y [M, B] int64, weight None (x [B, n_tasks + n], y [B] when every member draws the same batch)."""
        if len(self._online) == self.n_members:
            task, packed = self._blocks.at(step)  # [M, B], [M, B, n_bytes] (or without M)
            return Batch(*self.inputs(task, unpack_bits(packed, self.n)))
        if len(self._orders) == 1:  # one fixed set and one order for every member
            positions = self._orders[0].positions(step)  # [B]
            return Batch(self._train_x[positions], self._train_y[positions])
        fresh = None
        if self._online:
            task, packed = self._blocks.at(step)
            fresh = self.inputs(task, unpack_bits(packed, self.n))  # [M_online, B, ...] or, shared, [B, ...]
        xs, ys = [], []
        for m, order in enumerate(self._orders):
            if order is not None:
                positions = order.positions(step)  # [B]
                xs.append(self._train_x[positions])
                ys.append(self._train_y[positions])
            else:
                i = self._online.index(m)
                xs.append(fresh[0] if self._blocks.shared else fresh[0][i])
                ys.append(fresh[1] if self._blocks.shared else fresh[1][i])
        return Batch(torch.stack(xs), torch.stack(ys))
