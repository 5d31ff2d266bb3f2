"""Training speed on a GPU: the ensemble engine against a plain per-seed loop, both on the GPU, with achieved TFLOP/s.

Run by hand on a machine with CUDA (not in CI):

    python benchmarks/gpu_speed.py            # both cases, 7 repeats of ~2 s blocks
    python benchmarks/gpu_speed.py --quick    # 3 repeats of ~0.5 s blocks

Cases (the CPU benchmark's, at GPU scale):
  parity       (40, 3) sparse parity, width-256 ReLU MLP, 32 fresh samples per step, SGD, hinge loss: 256 seeds
  transformer  Nanda et al.'s 1-layer transformer on p = 113 modular addition, 30% of pairs, full batch: 64 seeds

Both sides are those of ensemble_speed.py (the real `EnsembleTrainer` step; one nn.Module + torch.optim per seed),
moved to the GPU; timings end with torch.cuda.synchronize(). FLOPs of one step of each side are counted by
torch.utils.flop_counter (matmuls, forward and backward) and divided by the measured time.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from ensemble_speed import NandaTransformer, OntogenySide, block_steps  # noqa: F401 (same dir)


class ParityBaselineGPU:
    """One nn.Sequential + SGD per seed, batches drawn on the GPU, one seed after another."""

    def __init__(self, n_seeds: int, device: str, n: int = 40, k: int = 3, width: int = 256, batch: int = 32):
        self.n, self.batch, self.device = n, batch, device
        self.secret = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:k].to(device)
        self.seeds = []
        for seed in range(n_seeds):
            torch.manual_seed(seed)
            model = torch.nn.Sequential(torch.nn.Linear(n, width), torch.nn.ReLU(), torch.nn.Linear(width, 1)).to(device)
            self.seeds.append((model, torch.optim.SGD(model.parameters(), lr=0.1)))

    def steps(self, n_steps: int) -> None:
        for model, optimizer in self.seeds:
            for _ in range(n_steps):
                x = torch.randint(0, 2, (self.batch, self.n), device=self.device).float() * 2 - 1
                y = x[:, self.secret].prod(-1)
                loss = torch.relu(1 - y * model(x).squeeze(-1)).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()


class TransformerBaselineGPU:
    def __init__(self, n_seeds: int, device: str, p: int = 113, train_fraction: float = 0.3):
        a, b = torch.cartesian_prod(torch.arange(p), torch.arange(p)).unbind(1)
        x, y = torch.stack([a, b, torch.full_like(a, p)], 1), (a + b) % p
        train = torch.randperm(p * p, generator=torch.Generator().manual_seed(0))[: round(train_fraction * p * p)]
        self.x, self.y = x[train].to(device), y[train].to(device)
        self.seeds = []
        for seed in range(n_seeds):
            torch.manual_seed(seed)
            model = NandaTransformer(p + 1, p, 3, d_model=128, n_heads=4, d_mlp=512).to(device)
            self.seeds.append((model, torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1.0,
                                                        betas=(0.9, 0.98))))

    def steps(self, n_steps: int) -> None:
        for model, optimizer in self.seeds:
            for _ in range(n_steps):
                loss = torch.nn.functional.cross_entropy(model(self.x)[:, -1], self.y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()


CASES = {
    "parity": (256, lambda d: OntogenySide("sparse-parity", ["seeds=256", "model.width=256", "task.n=40", "task.k=3",
                                                             "task.batch_size=32", "task.n_train=0", "optim.lr=0.1",
                                                             f"device={d}"]),
               lambda d: ParityBaselineGPU(256, d)),
    "transformer": (64, lambda d: OntogenySide("grokking-nanda", ["seeds=64", "task.batch_size=0",
                                                                  "optim.warmup_steps=0", f"device={d}"]),
                    lambda d: TransformerBaselineGPU(64, d)),
}


def synced(fn, n_steps: int) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn(n_steps)
    torch.cuda.synchronize()
    return time.perf_counter() - start


def flops_per_step(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn(1)
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cases", nargs="*", default=list(CASES))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    block, repeats = (0.5, 3) if args.quick else (2.0, 7)
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
    for name in args.cases:
        n_seeds, make_ontogeny, make_baseline = CASES[name]
        sides = {"ontogeny": make_ontogeny(args.device), "baseline": make_baseline(args.device)}
        flops = {side: flops_per_step(obj.steps) for side, obj in sides.items()}
        n_steps = min(block_steps(lambda k, s=s: synced(s.steps, k), block) for s in sides.values())
        rates = {side: [] for side in sides}
        for repeat in range(repeats):
            for side, obj in (sides.items() if repeat % 2 == 0 else reversed(sides.items())):
                rates[side].append(n_steps / synced(obj.steps, n_steps))  # steps/s, every seed once per step
        for side in sides:
            steps_per_second = statistics.median(rates[side])
            print(f"{name:<12} {side:<9} {n_seeds} seeds: {n_seeds * steps_per_second:12,.0f} seed-steps/s  "
                  f"{flops[side] * steps_per_second / 1e12:8.3f} TFLOP/s ({flops[side] / n_seeds / 1e6:.2f} MFLOP "
                  f"per seed-step)")
        ratio = statistics.median(rates["ontogeny"]) / statistics.median(rates["baseline"])
        print(f"{name:<12} ontogeny / per-seed loop: {ratio:.1f}x ({n_steps} steps per block)")


if __name__ == "__main__":
    main()
