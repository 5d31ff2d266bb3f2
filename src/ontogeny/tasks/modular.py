"""Modular arithmetic `a op b mod p` (Power et al. 2022, grokking): every pair (a, b) is one example.

Examples are ordered by their stable id `a * p + b`. Each member's train set is the first `round(train_fraction * N)`
examples of one permutation drawn from its `split_seed`, so with one split seed a smaller fraction's train set is a
subset of a larger one's. Also home to the small samplers the parity tasks share (epoch orders, padding, probes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..seeds import generator
from ..spec import TASKS, Check, Sizes, Spec, TaskSpec
from .base import Batch, EvalSplit, Task

MODULAR_OPS = ("+", "-", "*", "/", "a^2+b^2")


@TASKS.register("modular")
@dataclass(frozen=True)
class ModularSpec(TaskSpec):
    """`a op b mod p` over all p*p pairs (pairs with b=0 dropped for '/'); a `train_fraction` share is trained on."""

    name: str = "modular"
    p: int = 97
    op: str = "+"
    train_fraction: float = 0.3
    split_seed: int = 0
    batch_size: int = 0  # 0: full batch

    member_fields = frozenset({"train_fraction", "split_seed"})  # each member's own split of one finite table

    def check(self, check: Check) -> None:
        check(self.p >= 2, "task.p", "must be at least 2")
        check(self.op in MODULAR_OPS, "task.op", f"must be one of {', '.join(MODULAR_OPS)}")
        check(self.op != "/" or _is_prime(self.p), "task.p", "must be prime for division")
        check(0 < self.train_fraction < 1, "task.train_fraction", "must be strictly between 0 and 1")
        check(self.batch_size >= 0, "task.batch_size", "must be >= 0 (0: full batch)")
        if self.p >= 2 and 0 < self.train_fraction < 1:
            n = self.p * (self.p - 1) if self.op == "/" else self.p * self.p
            n_train = min(max(round(self.train_fraction * n), 1), n - 1)  # as train_positions splits
            batch = max(MIN_SPLIT, self.batch_size)
            check(n_train >= batch and n - n_train >= MIN_SPLIT, "task.train_fraction",
                  f"leaves {n_train} train and {n - n_train} test examples of {n} (p = {self.p}); the train split "
                  f"needs at least {batch}{' (a batch)' if self.batch_size > MIN_SPLIT else ''}, the test split "
                  f"{MIN_SPLIT}")

    def sizes(self, spec: Spec) -> Sizes:
        fractions = [self.train_fraction, *(v for k, values in spec.sweep if k == "task.train_fraction" for v in values)]
        batch = self.batch_size or int(self.p * self.p * max(fractions))
        return Sizes(vocab_size=self.p + 1, n_positions=3, n_inputs=0, n_outputs=self.p, batch=batch,
                     n_eval=self.p * self.p)

    @classmethod
    def build(cls, tasks, data_seeds, max_probe_examples):
        return ModularArithmetic(tasks, data_seeds, max_probe_examples)


MIN_SPLIT = 4  # examples a split needs at least (and no fewer than a batch): fewer cannot show learning


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))

# ---- shared sampling helpers ----------------------------------------------------------------------------------


class EpochOrder:
    """One member's minibatches over a fixed train set: epoch e visits it in a permutation from ("data", seed, e)."""

    def __init__(self, n_train: int, batch_size: int, data_seed: int):
        self.n_train, self.data_seed = n_train, data_seed
        self.batch_size = min(batch_size, n_train)  # a train set smaller than one batch is used whole
        self.steps_per_epoch = n_train // self.batch_size  # the last incomplete batch is dropped
        self._epoch, self._order = -1, torch.empty(0, dtype=torch.int64)

    def positions(self, step: int) -> torch.Tensor:
        """Return the positions (into the train set) of `step`'s minibatch: [B] int64."""
        epoch, row = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:  # cache one epoch; any step is recomputable from its epoch alone (resume-safe)
            self._order = torch.randperm(self.n_train, generator=generator("data", self.data_seed, epoch))  # [n_train]
            self._epoch = epoch
        return self._order[row * self.batch_size : (row + 1) * self.batch_size]  # [B]


def stack_padded(xs: list[torch.Tensor], ys: list[torch.Tensor]) -> Batch:
    """Stack per-member examples (x_m [n_m, ...], y_m [n_m]) into a Batch: x [M, n_max, ...], y [M, n_max],
    zero-padded past each member's n_m with weight 0 there (weight None when every n_m is equal)."""
    sizes = [len(y) for y in ys]
    if min(sizes) == max(sizes):
        return Batch(torch.stack(xs), torch.stack(ys))
    n_max = max(sizes)
    x = xs[0].new_zeros((len(xs), n_max, *xs[0].shape[1:]))  # [M, n_max, ...]
    y = ys[0].new_zeros((len(ys), n_max))  # [M, n_max]
    weight = torch.zeros(len(ys), n_max)  # [M, n_max]
    for m, (x_m, y_m) in enumerate(zip(xs, ys)):
        x[m, : len(y_m)], y[m, : len(y_m)], weight[m, : len(y_m)] = x_m, y_m, 1.0
    return Batch(x, y, weight)


def probe_positions(n: int, max_examples: int) -> torch.Tensor:
    """Return the positions probed out of `n` examples: all of them, or a fixed sorted sample of `max_examples`
    drawn from ("probe", 0), the same for every run. [min(n, max_examples)] int64."""
    if n <= max_examples:
        return torch.arange(n)
    return torch.randperm(n, generator=generator("probe", 0))[:max_examples].sort().values


# ---- modular arithmetic ---------------------------------------------------------------------------------------


def modular_table(p: int, op: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return every example of `a op b mod p`, ordered by id: ids [N] int64 (a * p + b), tokens x [N, 3] int64
    ([a, b, p], p being the '=' token) and labels y [N] int64. N = p * p, or p * (p - 1) for '/' (b = 0 dropped)."""
    a, b = torch.cartesian_prod(torch.arange(p), torch.arange(p)).unbind(1)  # [p*p] each, a varies slowest
    if op == "/":
        a, b = a[b != 0], b[b != 0]
    if op == "+":
        y = (a + b) % p
    elif op == "-":
        y = (a - b) % p  # torch's % takes the divisor's sign, so this is in [0, p)
    elif op == "*":
        y = a * b % p
    elif op == "/":
        inverse = torch.tensor([pow(v, p - 2, p) for v in range(p)])  # [p]; Fermat: b^(p-2) = b^-1 for prime p
        y = a * inverse[b] % p
    elif op == "a^2+b^2":
        y = (a * a + b * b) % p
    else:
        raise ValueError(f"unknown modular op {op!r}")
    x = torch.stack([a, b, torch.full_like(a, p)], dim=1)  # [N, 3]
    return a * p + b, x, y


def train_positions(n_examples: int, train_fraction: float, split_seed: int) -> torch.Tensor:
    """Return the sorted positions of one member's train examples: [n_train] int64, n_train = round(fraction * N)
    (kept within 1..N-1 so neither split is empty). A prefix of one permutation, so fractions nest."""
    order = torch.randperm(n_examples, generator=generator("split", split_seed))  # [N]
    n_train = min(max(round(train_fraction * n_examples), 1), n_examples - 1)
    return order[:n_train].sort().values


class ModularArithmetic(Task):
    """`a op b mod p` for an ensemble: members may differ in `train_fraction`, `split_seed` and data seed."""

    loss = "cross_entropy"
    n_positions = 3

    def __init__(self, tasks: list[ModularSpec], data_seeds: list[int], max_probe_examples: int):
        spec = tasks[0]
        self.p, self.op, self.batch_size = spec.p, spec.op, spec.batch_size
        self.vocab_size, self.n_outputs, self.n_members = spec.p + 1, spec.p, len(tasks)
        self.example, self.x, self.y = modular_table(spec.p, spec.op)  # [N], [N, 3], [N]
        n = len(self.example)
        # each member's train examples, as positions into the table above: [n_train_m] each
        self.train_positions = [train_positions(n, t.train_fraction, t.split_seed) for t in tasks]
        same_split = all(torch.equal(pos, self.train_positions[0]) for pos in self.train_positions)
        self.shared = same_split and (spec.batch_size == 0 or len(set(data_seeds)) == 1)  # one batch for all
        count = 1 if self.shared else len(tasks)  # one order for a shared batch
        self._orders = [EpochOrder(len(pos), spec.batch_size, seed) for pos, seed in
                        zip(self.train_positions[:count], data_seeds[:count])] if spec.batch_size else []
        self._full_batch: Batch | None = None
        self._splits = self._build_splits(max_probe_examples)

    def _build_splits(self, max_probe_examples: int) -> list[EvalSplit]:
        is_train = torch.zeros(self.n_members, len(self.example), dtype=torch.bool)  # [M, N]
        for m, pos in enumerate(self.train_positions):
            is_train[m, pos] = True
        keep = probe_positions(len(self.example), max_probe_examples)  # [N_probe]
        example, x, y, is_train = self.example[keep], self.x[keep], self.y[keep], is_train[:, keep]
        # both splits hold the very same example tensors, so the loop can run one forward pass for both
        return [EvalSplit("train", example, x, y, member_mask=is_train),
                EvalSplit("test", example, x, y, member_mask=~is_train)]

    def eval_splits(self) -> list[EvalSplit]:
        """Return [train, test] over the same examples: example [N], x [N, 3] int64, y [N] int64, member_mask [M, N]."""
        return self._splits

    def batch(self, step: int) -> Batch:
        """Return `step`'s batch: x [M, B, 3] int64, y [M, B] int64, weight [M, B] or None; x [B, 3] and y [B] when
        every member has the same training set and data seed.
        Full batch (batch_size 0): every member's train set, padded to the largest; the same object every step."""
        if self.batch_size == 0:
            if self._full_batch is None:
                positions = self.train_positions[0]
                self._full_batch = Batch(self.x[positions], self.y[positions]) if self.shared else stack_padded(
                    [self.x[pos] for pos in self.train_positions], [self.y[pos] for pos in self.train_positions])
            return self._full_batch
        if self.shared:
            chosen = self.train_positions[0][self._orders[0].positions(step)]  # [B]
            return Batch(self.x[chosen], self.y[chosen])
        chosen = [pos[order.positions(step)] for pos, order in zip(self.train_positions, self._orders)]  # [B] each
        return stack_padded([self.x[c] for c in chosen], [self.y[c] for c in chosen])
