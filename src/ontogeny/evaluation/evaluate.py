"""Evaluation at a checkpoint, for every producer: a model adapter gives per-example (or per-token) losses on the
probe sets; the evaluator turns them into `examples` rows and per-split / per-subset scalars.

The trainer's ensembles, a user's own model (`Recorder`) and a checkpoint suite (`ingest`) all go through here; only
the adapter differs. An adapter is `adapter(model, batch) -> (loss [M, B], correct [M, B])` for a batch of B
examples (M members: 1 for a single model); a per-token adapter flattens (sequence, position) into B.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import probes

Adapter = Callable[[Any, Any], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Probe:
    """One probe set: stable example ids [N], the batches that cover them in order, optional masks and subsets.

    `batches()` yields (batch, n_examples) pairs; `member_mask` [M, N] says which examples count for which member
    (None: all); `subsets` maps a name to an [N] bool mask. Probes with the same `data_key` are evaluated once.
    """

    name: str
    example: np.ndarray  # [N] int64
    batches: Callable[[], Iterator[tuple[Any, int]]]
    member_mask: torch.Tensor | None = None  # [M, N] bool
    subsets: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [N] bool
    data_key: object = None
    adapter: Adapter | None = None  # this probe's own adapter (default: the evaluator's)


def tensor_batches(*tensors: torch.Tensor, chunk: int = 4096) -> Callable[[], Iterator[tuple[tuple, int]]]:
    """Batches of `chunk` rows of tensors that share their first axis (e.g. x [N, ...] and y [N])."""
    n = len(tensors[0])

    def batches() -> Iterator[tuple[tuple, int]]:
        for start in range(0, n, chunk):
            part = tuple(t[start:start + chunk] for t in tensors)
            yield part, len(part[0])

    return batches


def ensemble_adapter(loss_kind: str) -> Adapter:
    """The adapter of ontogeny's ensembles: logits [M, B, C] of a shared batch (x, y) -> loss, correct [M, B]."""
    def adapter(model, batch):
        x, y = batch
        return probes.example_losses(loss_kind, model(x), y)
    return adapter


class Evaluator:
    """Evaluates a model on probe sets at a step: writes `examples` rows, returns the scalars of each split."""

    def __init__(self, writer, member_ids, probes_: list[Probe], adapter: Adapter | None = None, *,
                 examples: bool = True):
        self.writer, self.adapter, self.examples = writer, adapter, examples
        self.member_ids = np.asarray(member_ids, dtype=np.int32)  # [M]
        self.probes = probes_

    @torch.no_grad()
    def evaluate(self, step: int, model) -> dict[str, torch.Tensor]:
        """Evaluate `model` on every probe; write its example rows at `step`; return {scalar name: [M]}."""
        scalars: dict[str, torch.Tensor] = {}
        cache: dict[object, tuple[torch.Tensor, torch.Tensor]] = {}
        for probe in self.probes:
            key = probe.data_key if probe.data_key is not None else id(probe)
            if key not in cache:  # probes over the same examples (train/test masks of one table) share a pass
                cache[key] = self.losses(model, probe)
            loss, correct = cache[key]  # [M, N]
            scalars[f"{probe.name}/loss"] = probes.masked_mean(loss, probe.member_mask)
            scalars[f"{probe.name}/acc"] = probes.masked_mean(correct, probe.member_mask)
            for subset, in_subset in probe.subsets.items():
                in_subset = in_subset.to(loss.device)
                mask = in_subset[None] if probe.member_mask is None else probe.member_mask & in_subset[None]
                scalars[f"{probe.name}/{subset}/loss"] = probes.masked_mean(loss, mask)
                scalars[f"{probe.name}/{subset}/acc"] = probes.masked_mean(correct, mask)
            if self.examples:
                self._example_rows(step, probe, loss, correct)
        return scalars

    def losses(self, model, probe: Probe) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and correctness of every member on every example of `probe`: ([M, N], [M, N])."""
        losses, corrects = [], []
        adapter = probe.adapter or self.adapter
        for batch, n in probe.batches():
            loss, correct = adapter(model, batch)
            if loss.shape[-1] != n:
                raise ValueError(f"probe {probe.name!r}: the loss function returned {loss.shape[-1]} values for a "
                                 f"batch of {n} examples")
            losses.append(loss.detach().float())
            corrects.append(correct.detach())
        return torch.cat(losses, -1), torch.cat(corrects, -1)

    def _example_rows(self, step: int, probe: Probe, loss: torch.Tensor, correct: torch.Tensor) -> None:
        n_members, n_examples = loss.shape
        if probe.member_mask is None:
            member_index = np.repeat(np.arange(n_members), n_examples)
            example_index = np.tile(np.arange(n_examples), n_members)
            loss, correct = loss.reshape(-1), correct.reshape(-1)
        else:
            mask = probe.member_mask.to(loss.device)
            member_index, example_index = (t.cpu().numpy() for t in torch.nonzero(mask, as_tuple=True))
            loss, correct = loss[mask], correct[mask]
        self.writer.append("examples", {
            "member": self.member_ids[member_index],
            "step": step,
            "split": probe.name,
            "example": probe.example[example_index],
            "loss": loss.cpu().numpy().astype(np.float32),
            "correct": correct.cpu().numpy().astype(bool),
        })


def scalar_rows(writer, member_ids, step: int, scalars: dict[str, torch.Tensor | np.ndarray | float]) -> dict:
    """Write `scalars` ({name: [M] values}) as `scalars` rows at `step`; return them as numpy arrays."""
    member_ids = np.asarray(member_ids, dtype=np.int32)
    values = {name: np.broadcast_to(np.asarray(_numpy(v), dtype=np.float64), member_ids.shape)
              for name, v in scalars.items()}
    if values:
        writer.append("scalars", {
            "member": np.tile(member_ids, len(values)),
            "step": step,
            "name": np.repeat(np.array(list(values), dtype=object), len(member_ids)),
            "value": np.concatenate(list(values.values())),
        })
    return values


def _numpy(value):
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
