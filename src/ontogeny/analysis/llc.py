"""The local learning coefficient (LLC, Lau et al. 2023) of each member at its saved checkpoints, estimated by
devinterp's SGLD sampler (`pip install ontogeny[llc]`), the developmental-interpretability anchor.

devinterp samples around a model's weights with SGLD localized to them, and estimates
LLC = n_beta * (mean sampled loss - loss at the weights). Each member is taken out of its ensemble as a plain model
(`member_module`) and sampled on its own training examples. The estimate depends on the sampler's step size (lr),
inverse temperature (n_beta) and localization (gamma), and every row records the settings it was made with. The
defaults: devinterp's own n_beta (batch_size / ln batch_size), a strong localization (100) that keeps the chains
near the checkpoint, and lr 1e-3, the middle of the range where the estimate moved least on a grokking member
(0.074-0.100 for lr 3e-4..3e-3; 0.05-19 with other n_beta and gamma). Beside each estimate, the diagnostics
devinterp's guides ask for: several chains (their spread),
whether each chain's loss trace has levelled off, a negative estimate (the weights are not a local minimum at
this step size), and at each member's last checkpoint the estimate at a third and three times the step size.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..rebuild import member_models
from ..evaluation.probes import example_losses
from ..store import Run


@dataclass(frozen=True)
class LLCSettings:
    """devinterp's sampler settings (its names), and which step sizes the stability check tries."""

    lr: float = 1e-3  # SGLD step size (epsilon)
    n_beta: float = 0.0  # inverse temperature x examples; 0: devinterp's default, batch_size / ln(batch_size)
    localization: float = 100.0  # gamma: pull towards the checkpoint's weights
    chains: int = 4
    draws: int = 300
    burnin: int = 0
    batch_size: int = 64
    seed: int = 0
    examples: int = 2048  # training examples drawn from the task's batches where it has no fixed training set
    step_size_factors: tuple[float, ...] = (1 / 3, 3.0)  # at the last checkpoint: lr x each

    @classmethod
    def from_options(cls, options: dict[str, object]) -> LLCSettings:
        """Settings from {'lr': '1e-3', ...} (ValueError naming an unknown or malformed key)."""
        known = {f.name: f for f in fields(cls)}
        values = {}
        for key, value in options.items():
            if key not in known:
                raise ValueError(f"llc.{key}: unknown setting (known: {', '.join(known)})")
            kind = float if known[key].type in ("float", float) else int
            try:
                values[key] = (tuple(float(v) for v in str(value).split(",")) if key == "step_size_factors"
                               else kind(value))
            except ValueError:
                raise ValueError(f"llc.{key}: expected a number, got {value!r}") from None
        settings = replace(cls(), **values)
        if settings.n_beta < 0:
            raise ValueError(f"llc.n_beta: must be positive (or 0 for devinterp's default), got {settings.n_beta}")
        for key in ("lr", "chains", "draws", "batch_size", "examples"):
            if getattr(settings, key) <= 0:
                raise ValueError(f"llc.{key}: must be positive, got {getattr(settings, key)}")
        return settings


def run_llc(run: Run, settings: LLCSettings = LLCSettings(), *, members: list[int] | None = None,
            steps: list[int] | None = None,
            progress: Callable[[int, int], None] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Estimate every member's LLC at every saved checkpoint (or `steps`).

    Returns (`llc`: member, step, llc, llc_std over chains, init_loss, levelled, negative, the settings;
    `llc_step_sizes`: member, step, lr, llc at each member's last checkpoint, the chosen lr included).
    `progress(member, step)` after each estimate."""
    rows, checks = [], []
    for ensemble, step in member_models(run, steps):
        for index, member in enumerate(ensemble.ids):
            if members is not None and member not in members:
                continue
            x, y = training_examples(ensemble.task, index, settings.examples)
            model = ensemble.model.member_module(index)
            estimate = estimate_llc(model, x, y, ensemble.task.loss, settings)
            rows.append({"member": member, "step": step, **estimate, **_recorded(settings)})
            if progress:
                progress(member, step)
    table = pd.DataFrame(rows)
    if table.empty:
        return table, pd.DataFrame(columns=["member", "step", "lr", "llc"])
    last = table.loc[table.groupby("member").step.idxmax()]
    for ensemble, step in member_models(run, sorted(set(last.step))):
        for index, member in enumerate(ensemble.ids):
            if member not in set(last[last.step == step].member):
                continue
            x, y = training_examples(ensemble.task, index, settings.examples)
            model = ensemble.model.member_module(index)
            chosen = float(last[last.member == member].llc.iloc[0])
            checks.append({"member": member, "step": step, "lr": settings.lr, "llc": chosen})
            for factor in settings.step_size_factors:
                other = replace(settings, lr=settings.lr * factor)
                estimate = estimate_llc(model, x, y, ensemble.task.loss, other)
                checks.append({"member": member, "step": step, "lr": other.lr, "llc": estimate["llc"]})
    return table, pd.DataFrame(checks).sort_values(["member", "lr"]).reset_index(drop=True)


def training_examples(task, index: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Member `index`'s training examples (x, y): its `train` evaluation split where the task has a fixed training
    set, else the task's first training batches until `n` examples (a language task draws fresh sequences)."""
    train = [split for split in task.eval_splits() if split.name == "train"]
    if train:
        mask = train[0].member_mask[index] if train[0].member_mask is not None else slice(None)
        return train[0].x[mask], train[0].y[mask]
    xs, ys, step = [], [], 0
    while sum(len(x) for x in xs) < n:
        batch = task.batch(step).member(index)
        weight = batch.weight
        # examples with weight 0 are padding, not data (a language task's weights are per token: its targets say)
        keep = weight.reshape(-1) > 0 if weight is not None and weight.numel() == len(batch.x) else slice(None)
        xs.append(batch.x[keep])
        ys.append(batch.y[keep])
        step += 1
    return torch.cat(xs)[:n], torch.cat(ys)[:n]


def _recorded(settings: LLCSettings) -> dict[str, object]:
    recorded = asdict(settings)
    recorded.pop("step_size_factors")
    return recorded


def estimate_llc(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_kind: str,
                 settings: LLCSettings) -> dict[str, float | bool]:
    """One model's LLC on examples (x, y) with devinterp: {llc, llc_std, init_loss, levelled, negative}.

    devinterp samples language models: it takes rows of `input_ids` and a per-token loss [batch, length - 1]. Here a
    row is an example's inputs followed by its targets, and every position of the row carries that example's loss,
    so devinterp's mean over positions and rows is the mean loss over examples."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # devinterp's dependencies warn on import
        from datasets import Dataset
        from devinterp.slt.llc import llc
        from devinterp.utils import default_nbeta

    if len(x) < settings.batch_size:
        raise ValueError(f"llc: {len(x)} training examples, fewer than llc.batch_size = {settings.batch_size}")
    width = x.shape[1]
    floats = x.dtype.is_floating_point or y.dtype.is_floating_point
    rows = torch.cat([x.double() if floats else x, (y.double() if floats else y).reshape(len(y), -1)], dim=1)

    def per_token_loss(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
        inputs, targets = input_ids[:, :width], input_ids[:, width:]
        inputs = inputs.float() if x.dtype.is_floating_point else inputs.long()
        targets = targets.float() if y.dtype.is_floating_point else targets.long()
        logits = model(inputs)
        if targets.shape[1] == 1:  # one class (or one +-1 label) per example
            loss = example_losses(loss_kind, logits[None], targets[None, :, 0], with_correct=False)[0][0]
        else:  # a language task: the mean over the example's scored tokens
            token = example_losses(loss_kind, logits[None], targets[None], with_correct=False)[0][0]
            token = token.view(targets.shape)
            loss = token.sum(1) / (targets != -100).sum(1).clamp(min=1)
        return loss[:, None].expand(len(loss), input_ids.shape[1] - 1)

    n_beta = settings.n_beta or default_nbeta(settings.batch_size)
    with tempfile.TemporaryDirectory() as scratch, _quiet_progress():
        result = llc(model, Dataset.from_dict({"input_ids": rows.tolist()}).with_format("torch"), {},
                     lr=settings.lr, n_beta=n_beta, localization=settings.localization,
                     num_chains=settings.chains, num_draws=settings.draws, num_burnin_steps=settings.burnin,
                     batch_size=settings.batch_size, init_seed=settings.seed, device="cpu", loss_fn=per_token_loss,
                     output_path=os.path.join(scratch, "samples.zarr"))
        trace = np.asarray(result.loss_trace.values, dtype=float)  # [chain, step]
        init_loss = float(result.init_loss)
        value, spread = float(result.llc_mean), float(result.llc_std)
    return {"llc": value, "llc_std": spread, "init_loss": init_loss, "n_beta_used": n_beta,
            "levelled": levelled(trace, init_loss), "negative": value < 0}


def levelled(trace: np.ndarray, init_loss: float, tolerance: float = 0.1) -> bool:
    """Whether every chain's loss trace [chain, step] has levelled off (a trace still climbing has not reached the
    equilibrium the estimate assumes): the mean of its last quarter differs from the quarter before by at most
    `tolerance` x (that mean - init_loss), or by no more than three standard errors of the minibatch noise."""
    if not np.isfinite(trace).all() or trace.shape[1] < 8:
        return False
    quarter = trace.shape[1] // 4
    last, before = trace[:, -quarter:], trace[:, -2 * quarter:-quarter]
    change = np.abs(last.mean(1) - before.mean(1))
    noise = 3 * np.sqrt((last.var(1, ddof=1) + before.var(1, ddof=1)) / quarter)
    return bool((change <= np.maximum(tolerance * np.abs(last.mean(1) - init_loss), noise)).all())


@contextlib.contextmanager
def _quiet_progress():
    """devinterp draws a tqdm bar per chain (ontogeny prints its own progress) and warns about its cache."""
    from devinterp.slt import sampler
    from tqdm import trange

    drawn = sampler.trange
    sampler.trange = functools.partial(trange, disable=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        sampler.trange = drawn
