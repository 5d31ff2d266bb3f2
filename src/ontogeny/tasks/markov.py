"""In-context Markov chains (Edelman et al. 2024, "The evolution of statistical induction heads", ICL-MC).

Every sequence comes from its own Markov chain over k states: each row of its transition matrix is drawn from a
symmetric Dirichlet(alpha) prior and its first state from the chain's stationary distribution. A causal LM reads
`length` states and predicts the next one at every position, so it can only do well by estimating the chain's
transitions in context. Training draws fresh chains every step from ("data", data_seed, step); the test chains come
from ("markov-test", split_seed).

References for the strategy distances, each a prediction of state t+1 from states 0..t of the same sequence:
`uniform`; `unigram`, the frequencies of the states seen so far; `bigram`, the frequencies of the transitions out
of the current state seen so far (uniform until there is one); `bayes`, the posterior mean of the current state's
transition row under the Dirichlet prior, (n_ij + alpha) / (n_i + k alpha), the Bayes-optimal prediction. These are
averaged over every position. Edelman et al.'s own strategies are recorded beside them under their names, scored at
the last token only, as their paper does: `edelman_uniform`, `edelman_unigram` and `edelman_bigram`, the unigram and
bigram with add-one smoothing (the rule of succession: (n_j + 1) / (t + 1 + k) and (n_ij + 1) / (n_i + k)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..seeds import stream_seed
from ..spec import TASKS, Check, Sizes, Spec, TaskSpec
from .base import Batch, TokenSplit
from .language import LanguageTask


@TASKS.register("markov_icl")
@dataclass(frozen=True)
class MarkovICLSpec(TaskSpec):
    """Causal LM on sequences from random Markov chains over `k` states (Dirichlet(alpha) transition rows)."""

    name: str = "markov_icl"
    k: int = 3
    length: int = 100  # states the model reads per sequence
    alpha: float = 1.0  # Dirichlet concentration of each transition row
    batch_size: int = 64
    n_test: int = 512  # held-out chains (per-token losses; at most record.max_probe_examples tokens of them)
    n_probe: int = 128  # of those, the chains the strategy distances are measured on
    split_seed: int = 0

    def check(self, check: Check) -> None:
        check(self.k >= 2, "task.k", "must be at least 2: a chain needs two states")
        check(self.length >= 2, "task.length", "must be at least 2")
        check(self.alpha > 0 and np.isfinite(self.alpha), "task.alpha", "must be a positive number")
        check(self.batch_size >= 1, "task.batch_size", "must be at least 1")
        check(self.n_test >= 1, "task.n_test", "must be at least 1")
        check(1 <= self.n_probe <= self.n_test, "task.n_probe", "must be between 1 and task.n_test")

    def sizes(self, spec: Spec) -> Sizes:
        return Sizes(vocab_size=self.k, n_positions=self.length, n_inputs=0, n_outputs=self.k,
                     batch=self.batch_size, n_eval=self.n_test, objective="causal")  # in sequences

    @classmethod
    def build(cls, tasks, data_seeds, max_probe_examples):
        return MarkovICL(tasks[0], data_seeds, max_probe_examples)


def sample_chains(k: int, alpha: float, n: int, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` sequences of `length` + 1 states, each from its own chain: (states [n, length + 1] int64, transition
    matrices [n, k, k]), drawn from the numpy stream `seed`."""
    rng = np.random.default_rng(seed)
    transitions = rng.dirichlet(np.full(k, alpha), size=(n, k))  # [n, k, k], rows sum to 1
    stationary = np.linalg.matrix_power(transitions, 256)[:, 0]  # [n, k]: rows of P^256 all converge to it
    uniforms = rng.random((n, length + 1))  # [n, length + 1]
    states = np.empty((n, length + 1), dtype=np.int64)
    cumulative = np.cumsum(transitions, axis=-1)  # [n, k, k]
    states[:, 0] = _draw(np.cumsum(stationary, axis=-1), uniforms[:, 0])
    rows = np.arange(n)
    for t in range(1, length + 1):  # one vectorised draw per position
        states[:, t] = _draw(cumulative[rows, states[:, t - 1]], uniforms[:, t])
    return states, transitions


def _draw(cumulative: np.ndarray, uniform: np.ndarray) -> np.ndarray:
    """Inverse-CDF draws: cumulative [n, k], uniform [n] -> [n] states (clipped against rounding at the top)."""
    return np.minimum((cumulative < uniform[:, None]).sum(-1), cumulative.shape[-1] - 1)


def in_context_references(x: np.ndarray, k: int, alpha: float) -> dict[str, np.ndarray]:
    """The module docstring's references at every position of x [S, T]: {name: [S, T, k]} probabilities of the
    state after position t given x[:, :t + 1]."""
    n_seq, positions = x.shape
    one_hot = np.eye(k)[x]  # [S, T, k]
    unigram = np.cumsum(one_hot, axis=1)  # [S, T, k]: counts of states 0..t
    # transitions seen so far: counts[s, t, i, j] = #{u < t: x_u = i, x_{u+1} = j}
    pair = one_hot[:, :-1, :, None] * one_hot[:, 1:, None, :]  # [S, T-1, k, k]
    counts = np.concatenate([np.zeros((n_seq, 1, k, k)), np.cumsum(pair, axis=1)], axis=1)  # [S, T, k, k]
    row = counts[np.arange(n_seq)[:, None], np.arange(positions)[None], x]  # [S, T, k]: out of the current state
    seen = row.sum(-1, keepdims=True)
    uniform = np.full((n_seq, positions, k), 1.0 / k)
    return {
        "uniform": uniform,
        "unigram": unigram / unigram.sum(-1, keepdims=True),
        "bigram": np.where(seen > 0, row / np.maximum(seen, 1), 1.0 / k),
        "bayes": (row + alpha) / (seen + k * alpha),
        "edelman_uniform": uniform,  # scored at the last token only (MarkovICL.reference_rows)
        "edelman_unigram": (unigram + 1) / (unigram.sum(-1, keepdims=True) + k),
        "edelman_bigram": (row + 1) / (seen + k),
    }


EDELMAN = ("edelman_uniform", "edelman_unigram", "edelman_bigram")


class MarkovICL(LanguageTask):
    """ICL-MC for an ensemble: members share the test chains and differ in their training chains by data seed."""

    objective = "causal"

    def __init__(self, spec: MarkovICLSpec, data_seeds: list[int], max_probe_examples: int):
        self.spec, self.data_seeds, self.n_members = spec, list(data_seeds), len(data_seeds)
        self.vocab_size = self.n_outputs = spec.k
        self.n_positions = spec.length
        n_test = min(spec.n_test, max(spec.n_probe, max_probe_examples // spec.length))  # whole chains
        states, _ = sample_chains(spec.k, spec.alpha, n_test, spec.length, stream_seed("markov-test", spec.split_seed))
        x, y = torch.from_numpy(states[:, :-1]), torch.from_numpy(states[:, 1:])  # [S, T] each
        n_tokens = x.numel()
        position = torch.arange(spec.length).repeat(n_test)  # [N]
        self._splits = [TokenSplit("test", torch.arange(n_tokens), x, y, words=[str(s) for s in range(spec.k)],
                                   subsets={"first_half": position < spec.length // 2,
                                            "second_half": position >= spec.length // 2}, keep_logits=spec.n_probe)]
        self.probe_x, self.probe_y = x[:spec.n_probe], y[:spec.n_probe]
        self.references = {name: torch.from_numpy(p.reshape(-1, spec.k)).float()
                           for name, p in in_context_references(self.probe_x.numpy(), spec.k, spec.alpha).items()}
        last = (torch.arange(spec.length) == spec.length - 1).repeat(len(self.probe_x))  # [N]: each chain's last token
        self.reference_rows = dict.fromkeys(EDELMAN, last)

    def eval_splits(self) -> list[TokenSplit]:
        """[test]: the held-out chains, every position scored; subsets first_half / second_half of the context."""
        return self._splits

    def batch(self, step: int) -> Batch:
        """Fresh chains: x, y [B, T] when every member has one data seed, else [M, B, T]; weight [1 or M, B*T] = 1."""
        seeds = sorted(set(self.data_seeds)) if len(set(self.data_seeds)) == 1 else self.data_seeds
        states = np.stack([sample_chains(self.spec.k, self.spec.alpha, self.spec.batch_size, self.spec.length,
                                         stream_seed("data", seed, step))[0] for seed in seeds])  # [M or 1, B, T+1]
        states = torch.from_numpy(states)
        x, y = states[..., :-1], states[..., 1:]
        weight = torch.ones(len(seeds), y[0].numel())
        if len(seeds) == 1:
            return Batch(x[0], y[0], weight)
        return Batch(x, y, weight)
