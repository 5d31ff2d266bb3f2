"""At a checkpoint of the trainer: training-step quantities (train metrics, norms, lr) beside the shared evaluation
of the probe sets (evaluation/evaluate.py), and the members' weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..rebuild import save_member_weights
from ..evaluation import probes
from ..evaluation.evaluate import Evaluator, Probe, ensemble_adapter, scalar_rows, tensor_batches
from ..tasks import IGNORE, Batch, EvalSplit, PairSplit, SequenceSplit, TokenSplit


class CheckpointRows:
    """Turns one ensemble's measurements into `scalars`, `examples` and `checkpoints` rows."""

    def __init__(self, writer, run_dir: Path, member_ids: list[int], splits: list[EvalSplit], loss_kind: str,
                 *, examples: bool, device: torch.device, eval_rows: int = 4096, measures=None):
        self.writer, self.run_dir, self.measures = writer, run_dir, measures
        self.member_ids = np.asarray(member_ids, dtype=np.int32)  # [M]
        self.has_train_split = any(split.name == "train" for split in splits)
        self.evaluator = Evaluator(writer, member_ids, _probes(splits, device, eval_rows), ensemble_adapter(loss_kind),
                                   examples=examples)
        self.last: dict[str, np.ndarray] = {}  # latest scalars, for the progress display

    def record(self, step: int, model, batch: Batch, batch_loss, batch_correct, grad_norm, lr) -> None:
        """Record everything measured at `step` (the batch metrics come from the training forward pass)."""
        scalars: dict[str, torch.Tensor] = {"grad_norm": grad_norm, "lr": lr}
        for name, norm in probes.weight_norms(model).items():
            scalars["weight_norm" if name == "total" else f"weight_norm/{name}"] = norm
        if not self.has_train_split:  # online tasks: train metrics from the batch
            scalars["train/loss"] = probes.masked_mean(batch_loss, batch.weight)
            scalars["train/acc"] = probes.masked_mean(batch_correct, batch.weight)
        scalars.update(self.evaluator.evaluate(step, model))
        if self.measures is not None:
            with torch.no_grad():
                scalars.update(self.measures(model))
        self.last = scalar_rows(self.writer, self.member_ids, step, scalars)

    def save_weights(self, step: int, model, preconditioner: list[torch.Tensor] | None = None) -> None:
        """Save each member's weights as its own safetensors file and add a `checkpoints` row for it. AdamW's
        preconditioner goes in the same file as `preconditioner.<name>` (for the preconditioned sharpness)."""
        params = {name: p.detach().cpu() for name, p in model.named_parameters()}
        if preconditioner is not None:
            names = list(params)
            params.update({f"preconditioner.{name}": p.cpu() for name, p in zip(names, preconditioner)})
        save_member_weights(self.writer, self.run_dir, self.member_ids, step, params)


def _probes(splits: list[EvalSplit], device: torch.device, rows: int) -> list[Probe]:
    """The task's eval splits as probes on `device`; splits sharing x and y keep sharing them (one forward pass)."""
    moved: dict[int, tuple] = {}
    result = []
    for split in splits:
        if isinstance(split, TokenSplit | PairSplit):
            result.append(_language_probe(split, device, rows))
            continue
        if isinstance(split, SequenceSplit):
            result.append(sequence_probe(split, device, rows))
            continue
        key = id(split.x)
        if key not in moved:
            moved[key] = (split.x.to(device), split.y.to(device))
        x, y = moved[key]
        mask = None if split.member_mask is None else split.member_mask.to(device)
        result.append(Probe(split.name, split.example.cpu().numpy(), tensor_batches(x, y, chunk=rows), mask,
                            {k: v.to(device) for k, v in split.subsets.items()}, data_key=key))
    return result


def sequence_adapter(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sequence of batch (x [S, T], y [S, T]): (loss [M, S], the mean cross entropy of its scored tokens;
    correct [M, S], every scored token's argmax right)."""
    x, y = batch
    token_loss, token_correct = probes.example_losses("cross_entropy", model(x), y)  # [M, S*T], 0 / False at IGNORE
    n_members = token_loss.shape[0]
    scored = y != IGNORE  # [S, T]
    loss = token_loss.view(n_members, *y.shape).sum(-1) / scored.sum(-1)  # [M, S]
    correct = (token_correct.view(n_members, *y.shape) | ~scored).all(-1)  # [M, S]
    return loss, correct


def sequence_probe(split: SequenceSplit, device: torch.device, rows: int) -> Probe:
    """A `SequenceSplit` as a probe on `device`: `rows` sequences per batch (the trainer sizes `rows` by the model's
    activations per sequence)."""
    sequences = max(1, rows)
    mask = None if split.member_mask is None else split.member_mask.to(device)
    return Probe(split.name, split.example.cpu().numpy(),
                 tensor_batches(split.x.to(device), split.y.to(device), chunk=sequences), mask,
                 {k: v.to(device) for k, v in split.subsets.items()}, adapter=sequence_adapter)


def _language_probe(split: TokenSplit | PairSplit, device: torch.device, rows: int) -> Probe:
    """A language task's split as a probe: `rows` sequences per batch (the trainer sizes `rows` by the model's
    activations per sequence), each scored token (or minimal pair) one example."""
    sequences = max(1, rows)
    if isinstance(split, TokenSplit):
        tensors, adapter = (split.x, split.y), _token_adapter(split)
    else:
        tensors, adapter = (split.x, split.y, split.bad, split.bad_y, split.site, split.good_token,
                            split.bad_token), _pair_adapter
    tensors = tuple(t.to(device) for t in tensors)

    def batches():
        for start in range(0, len(split.x), sequences):
            part = tuple(t[start:start + sequences] for t in tensors)
            yield part, int((part[1] != IGNORE).sum()) if isinstance(split, TokenSplit) else len(part[0])

    return Probe(split.name, split.example.cpu().numpy(), batches, split.member_mask,
                 {k: v.to(device) for k, v in split.subsets.items()}, adapter=adapter)


def _token_adapter(split: TokenSplit):
    """Loss and top-1 correctness of every scored token, ([M, n], [M, n]); the logits of the split's first
    `split.keep_logits` sequences are handed to the task on the way (its checkpoint probes read the same tokens)."""
    seen = 0

    def adapter(model, batch):
        nonlocal seen
        x, y = batch
        scored = (y != IGNORE).flatten()  # [S*T]; the loss only where scored (one token of 13 when counting)
        if not split.keep_logits and hasattr(model, "logits_at") and not model.hooked:  # unembed those alone
            return probes.example_losses("cross_entropy", model.logits_at(x, y != IGNORE), y.flatten()[scored])
        logits = model(x)  # [M, S, T, C]
        if split.keep_logits:
            if seen == 0 or seen >= len(split.x):  # a new evaluation starts at the split's first sequence
                seen, split.kept_logits = 0, []
            if seen < split.keep_logits:
                split.kept_logits.append(logits[:, : split.keep_logits - seen])
            seen += len(x)
        return probes.example_losses("cross_entropy", logits.flatten(1, 2)[:, scored], y.flatten()[scored])

    return adapter


def _pair_adapter(model, batch):
    """Minimal pairs: loss = -log of the grammatical sentence's share of the pair's probability, correct = it gets
    the higher probability. A causal LM compares summed log-probabilities (y is not None); a masked LM the two
    tokens' logits at the masked site."""
    good, good_y, bad, bad_y, site, good_token, bad_token = batch
    if model.objective == "causal":
        margin = _sequence_logprob(model, good, good_y) - _sequence_logprob(model, bad, bad_y)  # [M, P]
    else:
        logits = model(good)[:, torch.arange(len(site), device=site.device), site]  # [M, P, C]
        margin = logits.gather(-1, good_token[None, :, None].expand(len(logits), -1, 1))[..., 0] - \
            logits.gather(-1, bad_token[None, :, None].expand(len(logits), -1, 1))[..., 0]  # [M, P]
    return torch.nn.functional.softplus(-margin), margin > 0


def _sequence_logprob(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed log-probability of each sequence's scored targets: [M, S]."""
    loss, _ = probes.example_losses("cross_entropy", model(x), y, with_correct=False)  # [M, S*T], 0 where IGNORE
    return -loss.view(len(loss), *y.shape).sum(-1)
