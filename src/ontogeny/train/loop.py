"""The training loop of one ensemble: sum of member losses, per-member clipping, divergence guard, checkpoints.

Durability: at a checkpoint, when `commit_seconds` have passed (and at the end), the ensemble's writer commits its
rows together with the full training state and the members' statuses, in one commit. A killed run resumes from
that state; rows written after it are dropped by the writer, so the resumed run ends with exactly the rows of an
uninterrupted one.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pandas as pd
import torch

from ..models import make_model
from ..evaluation import probes
from ..evaluation.schedule import checkpoint_steps, weight_steps
from ..store import Layout
from ..tasks import IGNORE, Batch, make_task
from ..members import Member, member_rows
from ..validation import MIN_EVAL_ROWS
from .graphs import StepGraph
from .optim import EnsembleOptimizer
from .checkpoint_rows import CheckpointRows

EVAL_FLOATS = 1 << 26  # activation floats of one CPU evaluation batch, all members (256 MiB)
EVAL_GPU_SHARE = 8  # a GPU evaluation chunk's activations: at most 1/8 of the device's memory


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
        self.clipping = any(m.spec.optim.grad_clip > 0 for m in members)
        self.active = torch.ones(len(members), dtype=torch.bool, device=self.device)  # [M] not diverged
        self.diverged_at = torch.full((len(members),), -1, device=self.device)  # [M] step a member diverged, or -1
        self.step = 0  # next step to train
        self.recorded_through = -1  # last checkpoint step whose rows were recorded
        self._few_tokens: bool | None = None  # unembed the scored tokens alone (decided on the first batch)
        self.trained_toward = spec.steps  # the total steps of the spec its state was trained under
        self.graph = StepGraph(self) if spec.cuda_graphs and self.device.type == "cuda" else None

    def autocast(self, cache: bool = True) -> contextlib.AbstractContextManager:
        """Where the model runs (training steps, evaluations): in bfloat16 under autocast if the spec asks for it,
        with float32 weights, gradients, losses and optimizer state (mixed precision). A CUDA graph's capture asks
        for no cache of cast weights (`cache=False`): a cached cast would be captured stale."""
        if self.spec.precision == "bfloat16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=cache)
        return contextlib.nullcontext()

    @property
    def sync_free(self) -> bool:
        """Whether a training step must never wait for the device (no .item(), no bool() of a result): on a GPU,
        where waiting idles it; the optimizer then masks frozen members at every step instead of asking whether any
        is frozen. On a CPU asking costs nothing."""
        return self.device.type != "cpu"

    @property
    def diverged_step(self) -> list[int | None]:
        """Per member, the step its loss turned NaN/inf (it is frozen from there), or None."""
        return [None if step < 0 else step for step in self.diverged_at.tolist()]

    # ---- state for resume ----

    def state_dict(self) -> dict:
        """Everything needed to continue: weights, optimizer, progress, and the spec it was trained with."""
        return {"step": self.step, "recorded_through": self.recorded_through, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "active": self.active.cpu(),
                "diverged_step": self.diverged_step, "steps": self.spec.steps, "spec": self.spec.to_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.active = state["active"].to(self.device)
        self.step, self.recorded_through = state["step"], state["recorded_through"]
        self.diverged_at = torch.tensor([-1 if s is None else s for s in state["diverged_step"]], device=self.device)
        self.trained_toward = state["steps"]

    @property
    def finished(self) -> bool:
        """Whether every step is trained and the last one recorded."""
        return self.recorded_through >= self.spec.steps

    def members_table(self) -> pd.DataFrame:
        """The members rows of this ensemble with their current status (running, ok or diverged)."""
        return member_rows(self.members, dict(zip((m.member for m in self.members), self.diverged_step)),
                           finished=self.finished, task=self.task)

    def extend(self, writer) -> list[Path]:
        """After the spec's steps were raised: retire the rows a run of the new length would not have.

        The old last step was recorded (and its weights saved) because it was last; if the longer schedule
        does not record it (or save its weights), those rows are dropped, so the rows equal a run trained this long
        from the start. Returns the weight files to delete once that is committed.
        """
        old, record = self.trained_toward, self.spec.record
        checkpoints = checkpoint_steps(record, self.spec.steps)
        stale: list[Path] = []
        if old not in checkpoints:
            writer.drop("scalars", steps=[old])
            writer.drop("examples", steps=[old])
        if old not in weight_steps(record, checkpoints) and writer.drop("checkpoints", steps=[old]):
            stale = [Layout.weights(m.member, old) for m in self.members]
        self.trained_toward = self.spec.steps
        return stale

    def time_steps(self, n: int) -> None:
        """Train `n` steps from the current state, recording nothing (to time a plan; the trainer is then spent)."""
        for step in range(self.step, self.step + n):
            self.train_step(step, self._to_device(self.task.batch(step)))
            self.step = step + 1

    def train_step(self, step: int, batch: Batch) -> None:
        """One training step off the checkpoints: through the captured CUDA graph when there is one, else eagerly."""
        if self.graph is None or not self.graph.step(step, batch):
            self.eager_step(step, batch)

    def eager_step(self, step: int | torch.Tensor, batch: Batch, lr_factor: float | torch.Tensor | None = None, *,
                   cache: bool = True) -> None:
        """Forward, backward, clipping and update. `step` and `lr_factor` may be 0-d tensors on the device (what a
        CUDA graph captures: it reads the step there), `cache` as `autocast`'s."""
        self._forward_backward(step, batch, cache=cache)
        self._update(step, self.optimizer.grad_norms() if self.clipping else None, lr_factor)

    # ---- the loop ----

    def train(self, writer, run_dir: Path, *, commit_seconds: float = 30.0, on_step=None, on_checkpoint=None) -> None:
        """Train to `spec.steps`, recording at checkpoints and committing/saving state as described above.

        `on_step(step)` is called after every step, `on_checkpoint(step, rows.last, trainer)` at checkpoints.
        """
        steps, record = self.spec.steps, self.spec.record
        checkpoints = set(checkpoint_steps(record, steps))
        save_weights_at = weight_steps(record, sorted(checkpoints))
        rows = CheckpointRows(writer, run_dir, [m.member for m in self.members], self.task.eval_splits(),
                                    self.task.loss, examples=record.examples, device=self.device,
                                    eval_rows=self._eval_rows(), measures=self.task.measures)
        last_commit = time.monotonic()
        while True:
            step = self.step
            batch = self._to_device(self.task.batch(step))
            at_checkpoint = step in checkpoints and step > self.recorded_through
            if not at_checkpoint and step != steps:
                self.train_step(step, batch)  # off the checkpoints: a CUDA graph may replay it
            else:
                loss, correct = self._forward_backward(step, batch, with_correct=at_checkpoint)
                norms = self.optimizer.grad_norms() if at_checkpoint or self.clipping else None
                if at_checkpoint:
                    factor = self.spec.optim.lr_factor(step, steps)
                    with self.autocast():
                        rows.record(step, self.model, batch, loss.detach(), correct, norms, self.optimizer.lr * factor)
                    if step in save_weights_at:
                        rows.save_weights(step, self.model, self.optimizer.preconditioner())
                    self.recorded_through = step
                    if on_checkpoint:
                        on_checkpoint(step, rows.last, self)
                    if step == steps or time.monotonic() - last_commit >= commit_seconds:
                        self.commit(writer)
                        last_commit = time.monotonic()
                if step == steps:
                    return
                self._update(step, norms)
            self.step = step + 1
            if on_step:
                on_step(self.step)

    def _update(self, step: int | torch.Tensor, norms: torch.Tensor | None,
                lr_factor: float | torch.Tensor | None = None) -> None:
        """Clip each member's gradients to its own norm (if any member clips; `norms` [M]) and apply the optimizer
        with the schedule's `lr_factor` at `step` (unless given), leaving frozen (diverged) members as they are."""
        if self.clipping:
            self.optimizer.clip(self.clip, norms)
        frozen = self.active if self.sync_free or not bool(self.active.all()) else None
        factor = self.spec.optim.lr_factor(step, self.spec.steps) if lr_factor is None else lr_factor
        self.optimizer.step(factor, frozen)

    def _eval_rows(self) -> int:
        """Probe examples per evaluation batch: few enough that the activations of all members stay about
        EVAL_FLOATS on a CPU (at 512 members a whole 1,000-example probe is 0.5 GB per activation, and slower), or
        1/EVAL_GPU_SHARE of a GPU's memory (48 `hierarchy-gpu` members: ~128 MB per example by `model.memory`)."""
        sizes = self.spec.task.sizes(self.spec)
        per_example = self.spec.model.memory(sizes)[1] + sizes.n_outputs  # activation floats of one member
        budget = EVAL_FLOATS
        if self.device.type == "cuda":
            budget = torch.cuda.get_device_properties(self.device).total_memory // (4 * EVAL_GPU_SHARE)
        return int(min(4096, max(MIN_EVAL_ROWS, budget // (len(self.members) * per_example))))

    def _forward_backward(self, step: int | torch.Tensor, batch: Batch, with_correct: bool = False, *,
                          cache: bool = True):
        """Loss of every member on its batch; the sum's gradient gives each member exactly its own gradient."""
        self.optimizer.zero_grad()
        with self.autocast(cache):  # the backward runs outside, as autocast asks; it follows the forward's dtypes
            if self._scores_few_tokens(batch):
                loss, correct = self._scored_losses(batch, with_correct)
            else:
                logits = self.model(batch.x)  # [M, B, C]
                loss, correct = probes.example_losses(self.task.loss, logits, batch.y, with_correct)  # [M, B] each
        member_loss = probes.masked_mean(loss, batch.weight)  # [M]
        finite = torch.isfinite(member_loss)  # a member that turns NaN/inf is frozen from here; the others go on
        self.diverged_at.copy_(torch.where(self.active & ~finite, step, self.diverged_at))  # in place: graphs
        self.active &= finite
        torch.where(self.active, member_loss, torch.zeros_like(member_loss)).sum().backward()
        return loss, correct

    def _scores_few_tokens(self, batch: Batch) -> bool:
        """Whether to unembed the scored tokens alone: a transformer LM on the CPU (on a GPU the boolean gather would
        wait for the device every step) whose first batch scores under half of its tokens (counting: 1 in 13)."""
        if self._few_tokens is None:
            self._few_tokens = (self.device.type == "cpu" and hasattr(self.model, "logits_at")
                                and self.model.objective is not None and not self.model.hooked
                                and float(_scored_positions(batch.y).float().mean()) < 0.5)
        return self._few_tokens

    def _scored_losses(self, batch: Batch, with_correct: bool):
        """Loss and correctness [M, B*T] from the logits of the scored tokens alone (0 and False elsewhere, as
        `example_losses` gives an IGNORE target)."""
        scored = _scored_positions(batch.y)  # [B, T]
        logits = self.model.logits_at(batch.x, scored)  # [M, N, C]
        loss_n, correct_n = probes.example_losses(self.task.loss, logits, batch.y[..., scored], with_correct)
        loss = loss_n.new_zeros(logits.shape[0], scored.numel())  # [M, B*T], float32 as loss_n
        loss[:, scored.flatten()] = loss_n
        if correct_n is not None:
            correct = torch.zeros_like(loss, dtype=torch.bool)
            correct[:, scored.flatten()] = correct_n
            return loss, correct
        return loss, None

    def commit(self, writer) -> int:
        """Commit the recorded rows with the training state and the members' statuses, as one commit."""
        writer.put("members", self.members_table())
        state = self.state_dict()
        return writer.commit(save_state=lambda path: torch.save(state, path),
                             info={"step": max(self.recorded_through, 0), "finished": self.finished})

    def _to_device(self, batch: Batch) -> Batch:
        if self.device.type == "cpu":
            return batch
        weight = None if batch.weight is None else batch.weight.to(self.device, non_blocking=True)
        return Batch(batch.x.to(self.device, non_blocking=True), batch.y.to(self.device, non_blocking=True), weight)


def _scored_positions(y: torch.Tensor) -> torch.Tensor:
    """[B, T] bool: the positions any member scores, for targets [B, T] or [M, B, T]."""
    scored = y != IGNORE
    return scored if scored.dim() == 2 else scored.any(0)
