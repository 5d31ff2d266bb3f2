"""One ensemble trained through its own writer, continuing from its last commit: what `ontogeny run` does for each
ensemble in this process, and what a Ray task does on a worker (train/ray_backend.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from ..exceptions import ResumeError
from ..members import Member
from ..probe_sets import subset_rows
from ..store import ShardWriter
from ..tasks.base import TokenSplit
from .loop import EnsembleTrainer

WORKER_EXIT_SECONDS = 120.0  # how long a writer held by a stopping worker is waited for


def writer_name(index: int) -> str:
    return f"ensemble-{index:04d}"


def train_ensemble(out: Path, index: int, group: list[Member], commit_seconds: float, progress, *,
                   wait_seconds: float = 0.0) -> None:
    """Train one ensemble through its writer, continuing from its last commit (nothing if it finished)."""
    with ShardWriter(out, writer_name(index), wait_seconds=wait_seconds) as writer:
        trainer = EnsembleTrainer(group, device=group[0].spec.device)
        if writer.state_path is not None:
            trainer.load_state_dict(load_state(writer.state_path))
            if trainer.trained_toward < trainer.spec.steps:  # the run was extended
                stale = trainer.extend(writer)
                trainer.commit(writer)
                for path in stale:
                    (out / path).unlink(missing_ok=True)
        if trainer.finished:
            return
        if not writer.has_table("subsets"):
            writer.put("subsets", subset_rows([(split.name, split.example, split.subsets)
                                               for split in trainer.task.eval_splits()]))
            if any(isinstance(split, TokenSplit) for split in trainer.task.eval_splits()):
                writer.put("tokens", _tokens(trainer))
        trainer.train(writer, out, commit_seconds=commit_seconds,
                      on_step=progress and (lambda step: progress.step(index, step)),
                      on_checkpoint=progress and (lambda step, s, t: progress.checkpoint(index, step, s, t)))


def load_state(path: Path) -> dict:
    """A writer's saved training state (ResumeError, one line, if it is damaged)."""
    try:
        return torch.load(path, weights_only=False)
    except Exception as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ResumeError(f"{path}: damaged training state ({reason}); run `ontogeny check`") from None


def _tokens(trainer: EnsembleTrainer) -> pd.DataFrame:
    """Which token each example of a language task's per-token splits is: split, example, sequence, position,
    token, text."""
    frames = []
    for split in trainer.task.eval_splits():
        if isinstance(split, TokenSplit):
            sequence, position = split.scored()
            token = split.y[sequence, position]
            frames.append(pd.DataFrame({"split": split.name, "example": split.example.numpy(),
                                        "sequence": sequence.numpy(), "position": position.numpy().astype("int32"),
                                        "token": token.numpy(), "text": [split.words[t] for t in token.tolist()]}))
    return pd.concat(frames, ignore_index=True)
