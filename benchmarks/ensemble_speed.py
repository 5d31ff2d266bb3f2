"""Training speed of an ontogeny ensemble against a plain PyTorch loop that trains one seed at a time.

Run by hand, not in CI (the numbers depend on the machine and its load):

    python benchmarks/ensemble_speed.py                 # both cases
    python benchmarks/ensemble_speed.py parity --quick  # one case, shorter blocks, fewer repeats
    python benchmarks/ensemble_speed.py --threads 1     # on a shared, loaded machine
    python benchmarks/ensemble_speed.py transformer --profile  # plus a torch.profiler table of the ontogeny step

Both sides run in this one process on the same model and data. Timed blocks alternate between the two sides
(swapping which goes first every repeat); in a block each side trains every seed the same number of steps, as many
as the slower side takes in about --block-seconds. The table reports medians over the repeats (the ratio is the
median of the per-repeat ratios), so that a noisy shared machine hurts both sides alike. On a machine loaded past
its core count, use --threads 1: two OpenMP threads that keep losing their core make every op many times slower.

Cases:
  parity       (40, 3) sparse parity, width-256 ReLU MLP, 32 fresh samples per step, SGD lr 0.1, hinge loss,
               32 seeds (Barak et al. 2022). Target: ontogeny >= 8x the baseline.
  transformer  modular addition p = 59, 30% train, full batch, Nanda et al. 2023's 1-layer transformer
               (d 128, 4 heads, d_mlp 512, no LayerNorm), AdamW lr 1e-3 wd 1 betas (0.9, 0.98), 8 seeds.
               Target: ontogeny >= 3x the baseline.

The ontogeny side is the real training machinery: a spec from `load_spec(recipe, overrides)`, members from
`expand`, one `EnsembleTrainer`, and the same per-step calls `EnsembleTrainer.train()` makes between checkpoints
(task batch, forward, loss, backward, optimizer step); checkpoints and recording are left out (see
recording_overhead.py for those). The baseline is how reference code trains: one `nn.Module` and one
`torch.optim` optimizer per seed, one seed after another.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ontogeny.spec import load_spec
from ontogeny.train.loop import EnsembleTrainer
from ontogeny.members import ensembles, expand

LONG_RUN = 10**7  # the spec's `steps`: far beyond what is timed, so no step is the last (no lr decay either)


# ---- the ontogeny side ----------------------------------------------------------------------------------------


class OntogenySide:
    """One `EnsembleTrainer` built from a recipe, stepped exactly as `EnsembleTrainer.train()` steps it."""

    def __init__(self, recipe: str, overrides: list[str]):
        spec = load_spec(recipe, [*overrides, f"steps={LONG_RUN}"])
        groups = ensembles(expand(spec))
        if len(groups) != 1:
            raise SystemExit(f"expected one ensemble, got {len(groups)}")
        self.trainer = EnsembleTrainer(groups[0], device=spec.device)
        self.n_seeds = len(groups[0])

    def steps(self, n_steps: int) -> None:
        """Take `n_steps` training steps: the body of `EnsembleTrainer.train()` off checkpoints."""
        trainer = self.trainer
        for _ in range(n_steps):
            step = trainer.step
            trainer.train_step(step, trainer._to_device(trainer.task.batch(step)))
            trainer.step = step + 1


# ---- the baselines: one seed at a time, the obvious way ---------------------------------------------------------


class ParityBaseline:
    """Barak et al.'s setup as reference code trains it: nn.Sequential MLP + torch.optim.SGD per seed."""

    def __init__(self, n_seeds: int, n: int = 40, k: int = 3, width: int = 256, batch_size: int = 32,
                 lr: float = 0.1):
        self.n, self.batch_size = n, batch_size
        self.secret = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:k]  # [k]
        self.seeds = []
        for seed in range(n_seeds):
            torch.manual_seed(seed)
            model = nn.Sequential(nn.Linear(n, width), nn.ReLU(), nn.Linear(width, 1))
            optimizer = torch.optim.SGD(model.parameters(), lr=lr)
            self.seeds.append((model, optimizer, torch.Generator().manual_seed(10_000 + seed)))

    def steps(self, n_steps: int) -> None:
        """Train every seed `n_steps` steps on fresh samples, one seed after another."""
        for model, optimizer, gen in self.seeds:
            for _ in range(n_steps):
                x = torch.randint(0, 2, (self.batch_size, self.n), generator=gen).float() * 2 - 1  # [B, n] +-1
                y = x[:, self.secret].prod(-1)  # [B] parity of the secret bits
                out = model(x).squeeze(-1)  # [B]
                loss = torch.relu(1 - y * out).mean()  # hinge
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()


class NandaTransformer(nn.Module):
    """One 1-layer transformer as in Nanda et al.'s grokking notebook: einsum attention over every position with
    a causal mask, ReLU MLP, no LayerNorm, logits at every position (the loss reads the last)."""

    def __init__(self, d_vocab: int, d_vocab_out: int, n_ctx: int, d_model: int, n_heads: int, d_mlp: int):
        super().__init__()
        d_head = d_model // n_heads
        self.d_head = d_head
        self.W_E = nn.Parameter(torch.randn(d_model, d_vocab) / math.sqrt(d_model))
        self.W_pos = nn.Parameter(torch.randn(n_ctx, d_model) / math.sqrt(d_model))
        self.W_K = nn.Parameter(torch.randn(n_heads, d_head, d_model) / math.sqrt(d_model))
        self.W_Q = nn.Parameter(torch.randn(n_heads, d_head, d_model) / math.sqrt(d_model))
        self.W_V = nn.Parameter(torch.randn(n_heads, d_head, d_model) / math.sqrt(d_model))
        self.W_O = nn.Parameter(torch.randn(d_model, d_head * n_heads) / math.sqrt(d_model))
        self.W_in = nn.Parameter(torch.randn(d_mlp, d_model) / math.sqrt(d_model))
        self.b_in = nn.Parameter(torch.zeros(d_mlp))
        self.W_out = nn.Parameter(torch.randn(d_model, d_mlp) / math.sqrt(d_model))
        self.b_out = nn.Parameter(torch.zeros(d_model))
        self.W_U = nn.Parameter(torch.randn(d_model, d_vocab_out) / math.sqrt(d_vocab))
        self.register_buffer("mask", torch.tril(torch.ones(n_ctx, n_ctx)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """tokens [B, T] -> logits [B, T, d_vocab_out]."""
        resid = torch.einsum("dbp->bpd", self.W_E[:, x]) + self.W_pos[: x.shape[-1]]  # [B, T, d]
        k = torch.einsum("ihd,bpd->biph", self.W_K, resid)  # [B, H, T, dh]
        q = torch.einsum("ihd,bpd->biph", self.W_Q, resid)
        v = torch.einsum("ihd,bpd->biph", self.W_V, resid)
        scores = torch.einsum("biph,biqh->biqp", k, q)  # [B, H, Tq, Tk]
        positions = x.shape[-1]
        mask = self.mask[:positions, :positions]
        scores = torch.tril(scores) - 1e10 * (1 - mask)
        pattern = torch.softmax(scores / math.sqrt(self.d_head), dim=-1)
        z = torch.einsum("biph,biqp->biqh", v, pattern)  # [B, H, T, dh]
        z = z.transpose(1, 2).reshape(x.shape[0], positions, -1)  # [B, T, H*dh]
        resid = resid + torch.einsum("df,bqf->bqd", self.W_O, z)
        hidden = torch.relu(torch.einsum("md,bpd->bpm", self.W_in, resid) + self.b_in)  # [B, T, d_mlp]
        resid = resid + torch.einsum("dm,bpm->bpd", self.W_out, hidden) + self.b_out
        return resid @ self.W_U  # [B, T, d_vocab_out]


class TransformerBaseline:
    """Full-batch modular addition, one NandaTransformer + torch.optim.AdamW per seed, one seed after another."""

    def __init__(self, n_seeds: int, p: int, train_fraction: float):
        a, b = torch.cartesian_prod(torch.arange(p), torch.arange(p)).unbind(1)
        x, y = torch.stack([a, b, torch.full_like(a, p)], 1), (a + b) % p  # [N, 3], [N]
        train = torch.randperm(p * p, generator=torch.Generator().manual_seed(0))[: round(train_fraction * p * p)]
        self.x, self.y = x[train], y[train]  # [n_train, 3], [n_train]
        self.seeds = []
        for seed in range(n_seeds):
            torch.manual_seed(seed)
            model = NandaTransformer(p + 1, p, 3, d_model=128, n_heads=4, d_mlp=512)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1.0, betas=(0.9, 0.98))
            self.seeds.append((model, optimizer))

    def steps(self, n_steps: int) -> None:
        for model, optimizer in self.seeds:
            for _ in range(n_steps):
                logits = model(self.x)[:, -1]  # [B, p]
                loss = nn.functional.cross_entropy(logits, self.y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()


# ---- the cases ---------------------------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    ontogeny: Callable[[], OntogenySide]
    baseline: Callable[[], object]
    n_seeds: int
    target: float


CASES = {
    "parity": Case(
        "parity",
        lambda: OntogenySide("sparse-parity", ["seeds=32", "model.width=256", "task.n=40", "task.k=3",
                                               "task.batch_size=32", "task.n_train=0", "optim.lr=0.1"]),
        lambda: ParityBaseline(32),
        n_seeds=32, target=8.0),
    "transformer": Case(
        "transformer",
        lambda: OntogenySide("grokking-nanda", ["seeds=8", "task.p=59", "task.train_fraction=0.3",
                                                "task.batch_size=0", "optim.warmup_steps=0"]),
        lambda: TransformerBaseline(8, p=59, train_fraction=0.3),
        n_seeds=8, target=3.0),
}


def timed(fn: Callable[[int], None], n_steps: int) -> float:
    start = time.perf_counter()
    fn(n_steps)
    return time.perf_counter() - start


def block_steps(fn: Callable[[int], None], seconds: float) -> int:
    """Warm `fn` up (allocator, first calls, optimizer state) and return how many steps take about `seconds`."""
    n_steps, elapsed = 1, timed(fn, 1)
    while elapsed < 0.2 * seconds:  # grow until one timing is long enough to extrapolate from
        n_steps *= 4
        elapsed = timed(fn, n_steps)
    return max(1, round(n_steps * seconds / elapsed))


def measure(case: Case, block_seconds: float, repeats: int) -> dict:
    """Interleaved timed blocks of both sides; returns median seed-steps/s of each and the median paired ratio."""
    ontogeny, baseline = case.ontogeny(), case.baseline()
    assert ontogeny.n_seeds == case.n_seeds
    # both sides train every seed the same number of steps per block: as many as the slower side takes in
    # about `block_seconds`
    n_steps = min(block_steps(ontogeny.steps, block_seconds), block_steps(baseline.steps, block_seconds))
    steps = {"ontogeny": n_steps, "baseline": n_steps}
    rates = {"ontogeny": [], "baseline": []}
    ratios = []
    for repeat in range(repeats):
        sides = [("ontogeny", ontogeny), ("baseline", baseline)]
        if repeat % 2:
            sides.reverse()
        this = {}
        for name, side in sides:
            this[name] = case.n_seeds * steps[name] / timed(side.steps, steps[name])
            rates[name].append(this[name])
        ratios.append(this["ontogeny"] / this["baseline"])  # paired: both sides saw about the same load
        print(f"  {case.name} repeat {repeat + 1}/{repeats}: ontogeny {this['ontogeny']:9.1f}  "
              f"baseline {this['baseline']:9.1f} seed-steps/s  ratio {ratios[-1]:.2f}  "
              f"({n_steps} steps per block)", flush=True)
    return {"ontogeny": statistics.median(rates["ontogeny"]), "baseline": statistics.median(rates["baseline"]),
            "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios)}


def profile(case: Case, block_seconds: float) -> None:
    """Print where the ontogeny step spends its time (torch.profiler, CPU self time)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    side = case.ontogeny()
    steps = block_steps(side.steps, block_seconds)
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        side.steps(steps)
    print(f"\n{case.name}: ontogeny step profile over {steps} steps")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cases", nargs="*", metavar="case", help=f"one of {', '.join(CASES)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="shorter blocks and fewer repeats (a smoke test)")
    parser.add_argument("--repeats", type=int, help="timed blocks per side (default 7, --quick 3)")
    parser.add_argument("--block-seconds", type=float, help="about how long one timed block lasts (default 2, "
                        "--quick 0.5)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own)")
    parser.add_argument("--profile", action="store_true", help="also print a torch.profiler table of ontogeny")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.cases or list(CASES)
    unknown = [name for name in names if name not in CASES]
    if unknown:
        parser.error(f"unknown case {', '.join(unknown)} (known: {', '.join(CASES)})")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    block_seconds = args.block_seconds or (0.5 if args.quick else 2.0)
    repeats = args.repeats or (3 if args.quick else 7)
    results = {}
    for name in names:
        results[name] = measure(CASES[name], block_seconds, repeats)
        if args.profile:
            profile(CASES[name], block_seconds)
    print(f"\nload average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"{'case':<12} {'seeds':>5} {'ontogeny':>12} {'baseline':>12} {'ratio':>7} {'(min-max)':>12} "
          f"{'target':>7}  threads")
    print(f"{'':<12} {'':>5} {'seed-steps/s':>12} {'seed-steps/s':>12}")
    for name, r in results.items():
        case = CASES[name]
        met = "met" if r["ratio"] >= case.target else "MISSED"
        print(f"{name:<12} {case.n_seeds:>5} {r['ontogeny']:>12.1f} {r['baseline']:>12.1f} {r['ratio']:>6.2f}x "
              f"{r['ratio_min']:>5.2f}-{r['ratio_max']:<5.2f} {case.target:>5.1f}x {met:>6}  "
              f"{torch.get_num_threads()}")


if __name__ == "__main__":
    main()
