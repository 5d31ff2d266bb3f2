"""The training loop of one ensemble: sum of member losses, per-member clipping, divergence guard, checkpoints.

Durability: at a checkpoint, when `commit_seconds` have passed (and at the end), the shard writer commits its
rows and the full training state is saved with that commit's number, atomically. A killed run resumes from
that state; rows written after it are dropped by the writer, so the resumed run ends with exactly the rows of an
uninterrupted one.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from ..models import make_model
from ..record import probes
from ..record.schedule import checkpoint_steps, weight_steps
from ..tasks import Batch, make_task
from .members import Member
from .optim import EnsembleOptimizer, clip_grads, grad_norms, lr_factor
from .recorder import Recorder


class EnsembleTrainer:
    """Trains the members of one ensemble (they share every shape) together."""

    def __init__(self, members: list[Member], *, device: str = "cpu"):
        self.members, self.device = members, torch.device(device)
        self.spec = spec = members[0].spec
        self.task = make_task([m.spec.task for m in members], [m.data_seed for m in members],
                              spec.record.max_probe_examples)
        self.model = make_model(spec.model, self.task, [m.init_seed for m in members],
                                [m.spec.model.init_scale for m in members]).to(self.device)
        self.params = list(self.model.parameters())
        self.optimizer = EnsembleOptimizer(self.params, spec.optim, lr=[m.spec.optim.lr for m in members],
                                           weight_decay=[m.spec.optim.weight_decay for m in members])
        self.clip = torch.tensor([m.spec.optim.grad_clip for m in members], device=self.device)  # [M]
        self.active = torch.ones(len(members), dtype=torch.bool, device=self.device)  # [M] not diverged
        self.diverged_step = [None] * len(members)
        self.step = 0  # next step to train
        self.recorded_through = -1  # last checkpoint step whose rows were recorded

    # ---- state for resume ----

    def state_dict(self) -> dict:
        return {"step": self.step, "recorded_through": self.recorded_through, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "active": self.active.cpu(),
                "diverged_step": self.diverged_step}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.active = state["active"].to(self.device)
        self.step, self.recorded_through = state["step"], state["recorded_through"]
        self.diverged_step = list(state["diverged_step"])

    # ---- the loop ----

    def train(self, writer, run_dir: Path, state_path: Path, *, commit_seconds: float = 30.0,
              on_step=None, on_checkpoint=None) -> None:
        """Train to `spec.steps`, recording at checkpoints and committing/saving state as described above.

        `on_step(step)` is called after every step, `on_checkpoint(step, recorder.last, trainer)` at checkpoints.
        """
        steps, record = self.spec.steps, self.spec.record
        checkpoints = set(checkpoint_steps(record, steps))
        save_weights_at = weight_steps(record, sorted(checkpoints))
        recorder = Recorder(writer, run_dir, [m.member for m in self.members], self.task.eval_splits(),
                            self.task.loss, examples=record.examples, device=self.device)
        last_commit = time.monotonic()
        while True:
            step = self.step
            batch = self._to_device(self.task.batch(step))
            loss, correct = self._forward_backward(step, batch)
            at_checkpoint = step in checkpoints and step > self.recorded_through
            norms = grad_norms(self.params) if at_checkpoint or bool((self.clip > 0).any()) else None
            if at_checkpoint:
                factor = lr_factor(self.spec.optim, step, steps)
                recorder.record(step, self.model, batch, loss.detach(), correct, norms,
                                self.optimizer.lr * factor)
                if step in save_weights_at:
                    recorder.save_weights(step, self.model)
                self.recorded_through = step
                if on_checkpoint:
                    on_checkpoint(step, recorder.last, self)
                if step == steps or time.monotonic() - last_commit >= commit_seconds:
                    self._commit(writer, state_path, done=step == steps)
                    last_commit = time.monotonic()
            if step == steps:
                return
            if norms is not None and bool((self.clip > 0).any()):
                clip_grads(self.params, self.clip, norms)
            all_active = bool(self.active.all())
            self.optimizer.step(lr_factor(self.spec.optim, step, steps), None if all_active else self.active)
            self.step = step + 1
            if on_step:
                on_step(self.step)

    def _forward_backward(self, step: int, batch: Batch):
        """Loss of every member on its batch; the sum's gradient gives each member exactly its own gradient."""
        self.optimizer.zero_grad()
        logits = self.model(batch.x)  # [M, B, C]
        loss, correct = probes.example_losses(self.task.loss, logits, batch.y)  # [M, B]
        member_loss = probes.masked_mean(loss, batch.weight)  # [M]
        finite = torch.isfinite(member_loss)
        if not bool(finite.all()):
            for index in torch.nonzero(self.active & ~finite).flatten().tolist():
                self.diverged_step[index] = step  # frozen from here on; the others go on untouched
            self.active &= finite
        torch.where(self.active, member_loss, torch.zeros_like(member_loss)).sum().backward()
        return loss, correct

    def _commit(self, writer, state_path: Path, *, done: bool) -> None:
        seq = writer.commit()
        state = {"committed_seq": seq, "done": done, "trainer": self.state_dict()}
        tmp = state_path.with_suffix(".tmp")
        torch.save(state, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, state_path)

    def _to_device(self, batch: Batch) -> Batch:
        if self.device.type == "cpu":
            return batch
        weight = None if batch.weight is None else batch.weight.to(self.device, non_blocking=True)
        return Batch(batch.x.to(self.device, non_blocking=True), batch.y.to(self.device, non_blocking=True), weight)
