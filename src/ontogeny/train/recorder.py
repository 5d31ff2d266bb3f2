"""At a checkpoint: measure the ensemble with the probes and hand the rows to the store's shard writer."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save

from ..record import probes
from ..store.create import write_bytes
from ..store.layout import Layout
from ..tasks import Batch, EvalSplit


class Recorder:
    """Turns one ensemble's measurements into `scalars`, `examples` and `checkpoints` rows."""

    def __init__(self, writer, run_dir: Path, member_ids: list[int], splits: list[EvalSplit], loss_kind: str,
                 *, examples: bool, device: torch.device):
        self.writer, self.run_dir, self.loss_kind, self.examples = writer, run_dir, loss_kind, examples
        self.member_ids = np.asarray(member_ids, dtype=np.int32)  # [M]
        moved: dict[int, tuple] = {}  # splits sharing x and y keep sharing them on the device
        self.splits = [_to(split, device, moved) for split in splits]
        self.last: dict[str, np.ndarray] = {}  # latest scalars, for the progress display

    def record(self, step: int, model, batch: Batch, batch_loss, batch_correct, grad_norm, lr) -> None:
        """Record everything measured at `step` (the batch metrics come from the training forward pass)."""
        scalars: dict[str, torch.Tensor] = {"grad_norm": grad_norm, "lr": lr}
        for name, norm in probes.weight_norms(model).items():
            scalars["weight_norm" if name == "total" else f"weight_norm/{name}"] = norm
        if not any(split.name == "train" for split in self.splits):  # online tasks: train metrics from the batch
            scalars["train/loss"] = probes.masked_mean(batch_loss, batch.weight)
            scalars["train/acc"] = probes.masked_mean(batch_correct, batch.weight)
        cache: dict[int, tuple] = {}
        for split in self.splits:
            key = id(split.x)  # splits over the same examples share one forward pass
            if key not in cache:
                cache[key] = probes.evaluate(model, self.loss_kind, split.x, split.y)
            loss, correct = cache[key]  # [M, N]
            scalars[f"{split.name}/loss"] = probes.masked_mean(loss, split.member_mask)
            scalars[f"{split.name}/acc"] = probes.masked_mean(correct, split.member_mask)
            for subset, in_subset in split.subsets.items():
                mask = in_subset[None] if split.member_mask is None else split.member_mask & in_subset[None]
                scalars[f"{split.name}/{subset}/loss"] = probes.masked_mean(loss, mask)
                scalars[f"{split.name}/{subset}/acc"] = probes.masked_mean(correct, mask)
            if self.examples:
                self._example_rows(step, split, loss, correct)
        self._scalar_rows(step, scalars)

    def _scalar_rows(self, step: int, scalars: dict[str, torch.Tensor]) -> None:
        self.last = {name: value.detach().cpu().numpy() for name, value in scalars.items()}
        n = len(self.member_ids)
        self.writer.append("scalars", {
            "member": np.tile(self.member_ids, len(self.last)),
            "step": step,
            "name": np.repeat(np.array(list(self.last), dtype=object), n),
            "value": np.concatenate([v.astype(np.float64) for v in self.last.values()]),
        })

    def _example_rows(self, step: int, split: EvalSplit, loss: torch.Tensor, correct: torch.Tensor) -> None:
        n_members, n_examples = loss.shape
        if split.member_mask is None:
            member_index = np.repeat(np.arange(n_members), n_examples)
            example_index = np.tile(np.arange(n_examples), n_members)
            loss, correct = loss.reshape(-1), correct.reshape(-1)
        else:
            member_index, example_index = (t.cpu().numpy() for t in torch.nonzero(split.member_mask, as_tuple=True))
            loss, correct = loss[split.member_mask], correct[split.member_mask]
        self.writer.append("examples", {
            "member": self.member_ids[member_index],
            "step": step,
            "split": split.name,
            "example": split.example.cpu().numpy()[example_index],
            "loss": loss.cpu().numpy().astype(np.float32),
            "correct": correct.cpu().numpy(),
        })

    def save_weights(self, step: int, model) -> None:
        """Save each member's weights as its own safetensors file and add a `checkpoints` row for it."""
        params = {name: p.detach().cpu() for name, p in model.named_parameters()}
        rows = {"member": [], "step": [], "path": [], "sha256": []}
        for index, member in enumerate(self.member_ids):
            relative = Layout.weights(int(member), step)
            path = self.run_dir / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            # Serialized in memory and written by Python, so a full disk is an OSError like any other write.
            data = save({name: p[index].contiguous() for name, p in params.items()})
            write_bytes(path, data)
            rows["member"].append(int(member))
            rows["step"].append(step)
            rows["path"].append(relative.as_posix())
            rows["sha256"].append(hashlib.sha256(data).hexdigest())
        self.writer.append("checkpoints", rows)


def _to(split: EvalSplit, device: torch.device, moved: dict[int, tuple]) -> EvalSplit:
    """Move a split's tensors to `device`; x and y shared between splits stay shared (see Recorder.record)."""
    if id(split.x) not in moved:
        moved[id(split.x)] = (split.x.to(device), split.y.to(device))
    x, y = moved[id(split.x)]
    mask = None if split.member_mask is None else split.member_mask.to(device)
    return EvalSplit(split.name, split.example, x, y, mask, {k: v.to(device) for k, v in split.subsets.items()})
