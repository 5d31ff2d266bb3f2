"""The CUDA-graph step (train/graphs.py), held on a CPU to what a replayed graph needs: the captured step reads the
step only through tensors (run at two steps, its operations and their non-tensor arguments are the same), and a
trainer that replays it trains exactly as the eager one. The capture itself needs a GPU (benchmarks/gpu_speed.py)."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import ontogeny as og
from ontogeny.members import expand
from ontogeny.train.graphs import WARMUP_STEPS, StepGraph
from ontogeny.train.loop import EnsembleTrainer

# warmup then decay, clipping and weight decay: every per-step number the update reads (bf16 in the language case)
STEPPED = ["seeds=2", "optim.warmup_steps=4", "optim.schedule=linear", "optim.grad_clip=1.0", "optim.weight_decay=0.1"]
CASES = {
    "grokking": ["task.p=11", "model.width=24", "steps=12", "record.every=6"],
    "grokking-nanda": ["task.p=11", "model.d_model=16", "model.n_heads=2", "model.d_mlp=32", "steps=12",
                       "record.every=6"],
    "syntax-drops": ["task.n_train=200", "task.n_test=20", "task.n_probe=10", "task.n_pairs=10", "model.n_layers=1",
                     "model.d_model=16", "model.n_heads=2", "model.d_mlp=32", "steps=12", "record.every=6",
                     "precision=bfloat16"],
}


class Replayed(StepGraph):
    """A StepGraph on a CPU: the "graph" runs the captured function again with its tensors, and, as a replay runs
    no Python, leaves the host's step count as it was."""

    def _on_side_stream(self, fn):
        fn()

    def _record(self, fn):
        self.captured, trainer, optimizer = fn, self.trainer, self.trainer.optimizer
        # capturing runs the Python (optimizer.steps advances) and no kernel: tensors end as they were
        state = [optimizer.flat, optimizer.count, trainer.active, trainer.diverged_at, *optimizer.state.values()]
        before = [t.clone() for t in state]
        fn()
        for tensor, old in zip(state, before):
            tensor.copy_(old)

        class Graph:
            @staticmethod
            def replay():
                steps = optimizer.steps
                fn()
                optimizer.steps = steps

        return Graph()


class OpLog(TorchDispatchMode):
    """Every operation and its non-tensor arguments."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops.append((str(func), _values([*args, *kwargs.values()])))
        return func(*args, **kwargs)


def _values(arg):
    """`arg` with every tensor in it (lists of tensors too) replaced by its shape and dtype."""
    if isinstance(arg, torch.Tensor):
        return ("tensor", tuple(arg.shape), arg.dtype)
    if isinstance(arg, (list, tuple)):
        return [_values(a) for a in arg]
    return arg


def gpu_like(recipe: str) -> EnsembleTrainer:
    trainer = EnsembleTrainer(expand(og.load_spec(recipe, [*STEPPED, *CASES[recipe]])))
    trainer._few_tokens = False  # the GPU's path: every token unembedded, no boolean gather
    return trainer


@pytest.mark.parametrize("recipe", sorted(CASES))
def test_the_captured_step_reads_the_step_only_from_tensors(recipe, monkeypatch):
    monkeypatch.setattr(EnsembleTrainer, "sync_free", True)
    trainer = gpu_like(recipe)
    trainer.graph = Replayed(trainer)
    trainer.time_steps(WARMUP_STEPS + 1)  # the warm-up, then the capture
    captured = trainer.graph.captured

    def logged(step):
        trainer.graph._load(step, trainer.task.batch(step))
        with OpLog() as log:
            captured()
        return log.ops

    def logged_eager(step):
        with OpLog() as log:
            trainer.eager_step(step, trainer.task.batch(step))
        return log.ops

    # what the step changes it changes in place: a replay writes into the tensors it captured, nowhere else
    held = [trainer.active, trainer.diverged_at, trainer.optimizer.flat, trainer.optimizer.count,
            *trainer.optimizer.state.values()]
    assert logged(2) == logged(7)  # in the warmup, then in the decay: the factor differs, the operations do not
    assert all(now is then for now, then in zip([trainer.active, trainer.diverged_at, trainer.optimizer.flat,
                                                  trainer.optimizer.count, *trainer.optimizer.state.values()], held))
    assert logged_eager(2) != logged_eager(7)  # the eager step bakes the step's numbers in (the log can see it)


@pytest.mark.parametrize("recipe", sorted(CASES))
def test_a_replayed_step_trains_exactly_as_the_eager_one(recipe, monkeypatch, tmp_path):
    monkeypatch.setattr(EnsembleTrainer, "sync_free", True)
    eager = gpu_like(recipe)
    replayed = gpu_like(recipe)
    replayed.graph = Replayed(replayed)
    for trainer in (eager, replayed):
        trainer.time_steps(10)
    assert replayed.graph.graph is not None and replayed.graph.warmed == WARMUP_STEPS
    assert replayed.optimizer.steps == eager.optimizer.steps == 10 and float(replayed.optimizer.count) == 10
    for a, b in zip(eager.params, replayed.params):
        assert torch.equal(a, b)
    assert eager.optimizer.state_dict()["steps"] == replayed.optimizer.state_dict()["steps"]

    # a whole run, its checkpoint steps eager between replays: the same rows as without graphs
    original, graphs = EnsembleTrainer.__init__, []

    def gpu_path(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self._few_tokens = False
        if graphs:
            self.graph = Replayed(self)

    monkeypatch.setattr(EnsembleTrainer, "__init__", gpu_path)
    plain = og.run(recipe, overrides=[*STEPPED, *CASES[recipe]], out=tmp_path / "plain")
    graphs.append(True)
    graphed = og.run(recipe, overrides=[*STEPPED, *CASES[recipe]], out=tmp_path / "graphed")
    key = ["member", "step", "name"]
    assert plain.scalars().sort_values(key).reset_index(drop=True).equals(
        graphed.scalars().sort_values(key).reset_index(drop=True))


def test_a_failed_capture_leaves_the_step_to_the_eager_path(monkeypatch):
    monkeypatch.setattr(EnsembleTrainer, "sync_free", True)
    eager, failing = gpu_like("grokking"), gpu_like("grokking")

    class Failing(Replayed):
        @staticmethod
        def _record(fn):
            raise RuntimeError("operation not permitted when stream is capturing")

    failing.graph = Failing(failing)
    with pytest.warns(UserWarning, match="CUDA graph capture failed"):
        for trainer in (eager, failing):
            trainer.time_steps(6)
    assert failing.graph.failed and failing.optimizer.count is None and failing.optimizer.steps == 6
    for a, b in zip(eager.params, failing.params):
        assert torch.equal(a, b)


def test_the_memory_estimate_counts_the_graphs_own_step():
    """A captured graph keeps one step's activations in its own pool, beside an eager checkpoint step's."""
    from ontogeny.validation import estimate_memory

    spec = og.load_spec("syntax-gpu", ["seeds=2", "device=cuda"], check_machine=False)  # planned for a GPU
    sizes = spec.task.sizes(spec)
    step_activations = 4 * 2 * 3 * sizes.batch * (spec.model.memory(sizes)[1] + sizes.n_outputs)
    with_graphs = og.load_spec("syntax-gpu", ["seeds=2", "device=cuda", "cuda_graphs=true"], check_machine=False)
    assert estimate_memory(with_graphs) - estimate_memory(spec) == step_activations
    on_cpu = [og.load_spec("syntax-gpu", ["seeds=2", "device=cpu", *graphs]) for graphs in ([], ["cuda_graphs=true"])]
    assert estimate_memory(on_cpu[1]) == estimate_memory(on_cpu[0])  # a CPU ignores the setting
