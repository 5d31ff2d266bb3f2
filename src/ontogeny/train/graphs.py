"""A training step captured once as a CUDA graph and replayed (`cuda_graphs = true` in a spec, on a GPU).

A small model's step on a GPU is bound by how many kernels it launches (~1,200 for a 6-layer transformer ensemble,
a few microseconds each), not by its arithmetic; a replayed graph launches them all at once. What a replay may not
do is read anything from Python: the captured step reads the batch from fixed input tensors, the step number and
the learning-rate factor from 0-d tensors on the device, and AdamW's bias corrections from a step count kept there
(`EnsembleOptimizer.count`), so that every replay is the step it stands for (`tests/test_graphs.py` holds the
captured step to reading nothing else: run at two steps, its operations and their non-tensor arguments are the same).

Written by hand after PyTorch's whole-network capture recipe (torch.cuda.graphs): a few eager steps on a side stream
first, then one capture. Checkpoint steps run eagerly (they record), and so does a batch of another shape. If the
capture fails the run goes on without graphs, with a warning; the training state is as the eager step leaves it.
The graph keeps its own memory (about one step's activations), which an eager checkpoint step needs again beside it.
"""

from __future__ import annotations

import warnings

import torch

from ..tasks import Batch

WARMUP_STEPS = 3  # eager steps on a side stream before the capture, as PyTorch's recipe asks


class StepGraph:
    """One trainer's training step as a CUDA graph: `step(step, batch)` trains that step through it."""

    def __init__(self, trainer):
        self.trainer, device = trainer, trainer.device
        self.graph: torch.cuda.CUDAGraph | None = None
        self.failed = False
        self.warmed = 0
        self.inputs: Batch | None = None  # the captured step reads its batch here
        self.step_now = torch.zeros((), dtype=torch.long, device=device)
        self.lr_factor = torch.ones((), dtype=torch.float64, device=device)

    def step(self, step: int, batch: Batch) -> bool:
        """Train `step` on `batch` (on the device) through the graph, or warm up towards capturing it; False when
        the step must run eagerly instead (the capture failed, or the batch's shapes are not the captured ones)."""
        if self.failed:
            return False
        if self.graph is None:
            return self._warm_up(step, batch) if self.warmed < WARMUP_STEPS else self._capture(step, batch)
        if not _same_shapes(self.inputs, batch):
            return False
        self._load(step, batch)
        self.graph.replay()
        self.trainer.optimizer.steps += 1  # the host's count, which the replay cannot advance
        return True

    def _warm_up(self, step: int, batch: Batch) -> bool:
        self._on_side_stream(lambda: self.trainer.eager_step(step, batch))
        self.warmed += 1
        return True

    def _capture(self, step: int, batch: Batch) -> bool:
        optimizer = self.trainer.optimizer
        self.inputs = Batch(batch.x.clone(), batch.y.clone(), None if batch.weight is None else batch.weight.clone())
        optimizer.count = torch.tensor(float(optimizer.steps), dtype=torch.float64, device=self.trainer.device)
        self._load(step, batch)
        steps_before = optimizer.steps
        try:
            self.graph = self._record(lambda: self.trainer.eager_step(self.step_now, self.inputs, self.lr_factor,
                                                                      cache=False))
        except RuntimeError as err:
            optimizer.steps, optimizer.count, self.failed = steps_before, None, True
            warnings.warn(f"CUDA graph capture failed, training on without graphs: {err}", stacklevel=2)
            return False
        self.graph.replay()  # the step itself (the capture advanced optimizer.steps once already)
        return True

    def _on_side_stream(self, fn) -> None:
        device = self.trainer.device
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            fn()
        torch.cuda.current_stream(device).wait_stream(side)

    @staticmethod
    def _record(fn) -> torch.cuda.CUDAGraph:
        """The graph of `fn`'s kernels (capturing records them without running them)."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        return graph

    def _load(self, step: int, batch: Batch) -> None:
        """Put `step`'s batch, step number and learning-rate factor where the captured step reads them."""
        spec = self.trainer.spec
        self.inputs.x.copy_(batch.x, non_blocking=True)
        self.inputs.y.copy_(batch.y, non_blocking=True)
        if batch.weight is not None:
            self.inputs.weight.copy_(batch.weight, non_blocking=True)
        self.step_now.fill_(step)
        self.lr_factor.fill_(spec.optim.lr_factor(step, spec.steps))


def _same_shapes(captured: Batch, batch: Batch) -> bool:
    """Whether `batch` fits the captured inputs (shapes and dtypes, a weight or none)."""
    def key(t):
        return None if t is None else (tuple(t.shape), t.dtype)

    return all(key(a) == key(b) for a, b in zip((captured.x, captured.y, captured.weight),
                                                   (batch.x, batch.y, batch.weight)))
