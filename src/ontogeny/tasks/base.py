"""What every task gives the training loop: shared eval splits with stable example ids, and training batches.

One `Task` object serves a whole ensemble of M members. Members may differ in their task spec's `member_fields`
(modular arithmetic: `train_fraction`, `split_seed`) and in `data_seed`; everything else is shared.
Inputs are either tokens (int64 `[..., n_positions]`, `vocab_size` set) or bits/reals (float32 `[..., n_inputs]`).
Language tasks (`objective` "causal" or "masked") predict at every position: their targets y have the inputs' shape,
with `IGNORE` where nothing is scored, and each scored token of an evaluation sequence is one example.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

IGNORE = -100  # the target of a position that is not scored (cross entropy's default ignore_index)


@dataclass
class EvalSplit:
    """One evaluation split, shared by all members; `member_mask` says which examples are in it per member."""

    name: str  # "train" | "test"
    example: torch.Tensor  # [N] int64, stable example ids
    x: torch.Tensor  # [N, n_positions] int64 or [N, n_inputs] float32
    y: torch.Tensor  # [N] int64 class ids (cross entropy) or float32 +-1 (hinge)
    member_mask: torch.Tensor | None = None  # [M, N] bool; None: every example is in the split for every member
    subsets: dict[str, torch.Tensor] = field(default_factory=dict)  # subset name -> [N] bool


@dataclass
class TokenSplit(EvalSplit):
    """A language task's held-out sequences: x [S, T] int64, y [S, T] int64 (IGNORE where nothing is scored).

    One example per scored token, numbered in row-major order of `y != IGNORE`; `example` [N] and `subsets` [N] follow
    that order, `words` gives each token id's text for the `tokens` table."""

    words: list[str] = field(default_factory=list)
    keep_logits: int = 0  # the recorder hands the logits of this many leading sequences to the task
    kept_logits: list | None = None  # ... here, as [M, S_i, T, C] chunks, at each evaluation

    def scored(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(sequence [N], position [N]) of every scored token, in example order."""
        return torch.nonzero(self.y != IGNORE, as_tuple=True)


@dataclass
class PairSplit(EvalSplit):
    """Minimal pairs: x [P, T] the grammatical sentence as the model reads it, `bad` [P, T] the ungrammatical one;
    they differ at `site` [P], where the grammatical sentence has `good_token` and the other `bad_token`. For a causal
    LM, y and `bad_y` [P, T] are the sentences' next-token targets and a pair is scored by the sentences' summed
    log-probabilities; for a masked LM, x has the mask token at `site` and the pair is scored by the two tokens'
    logits there (Warstadt et al. 2020, BLiMP; Chen et al. 2024). `subsets` names each pair's construction."""

    bad: torch.Tensor | None = None  # [P, T]
    bad_y: torch.Tensor | None = None  # [P, T]
    site: torch.Tensor | None = None  # [P]
    good_token: torch.Tensor | None = None  # [P]
    bad_token: torch.Tensor | None = None  # [P]


@dataclass
class SequenceSplit(EvalSplit):
    """Whole sequences as examples: x [S, T] int64 as the model reads them, y [S, T] int64 targets (IGNORE where not
    scored); `example` [S], `member_mask` [M, S] and `subsets` [S] are per sequence."""


@dataclass
class Batch:
    """One training step's data for every member, or one batch that all members share (x [B, ...], y [B]): one input
    for all lets a model run a layer as one large product instead of M small ones."""

    x: torch.Tensor  # [M, B, ...] or, shared, [B, ...]
    y: torch.Tensor  # [M, B] or, shared, [B]
    weight: torch.Tensor | None = None  # [M, B] float 0/1 padding mask; None: all examples count

    def member(self, index: int) -> Batch:
        """Member `index`'s own batch: x [B, ...], y [B] (a language task's [B, T]), weight or None."""
        if self.y.dim() == 1 or (self.x.dim() == 2 and self.y.shape == self.x.shape):  # shared by every member
            return self
        return Batch(self.x[index], self.y[index], None if self.weight is None else self.weight[index])


class Task:
    """Base class: subclasses set the attributes and implement `eval_splits` and `batch`."""

    loss: str  # "cross_entropy" | "hinge"
    n_outputs: int  # logits per example (1 for hinge)
    vocab_size: int | None = None  # set for token inputs
    n_positions: int = 0  # token inputs: sequence length
    n_inputs: int = 0  # float inputs: features
    n_members: int
    objective: str | None = None  # language tasks: "causal" or "masked" (outputs at every position)
    pad_token: int | None = None  # language tasks: the padding token (never attended to)

    def measures(self, model) -> dict[str, torch.Tensor]:
        """Task-specific scalars recorded at every checkpoint, {name: [M]} (language tasks: strategy distances and
        attention probes). None by default."""
        return {}

    def eval_splits(self) -> list[EvalSplit]:
        """Return the splits recorded at every checkpoint (fixed for the whole run)."""
        raise NotImplementedError

    def batch(self, step: int) -> Batch:
        """Return the training batch of `step` (0-based). Depends only on each member's seeds and `step`,
        never on earlier calls, so a resumed run sees exactly the data an uninterrupted one would."""
        raise NotImplementedError
