"""Training speed on a GPU: the ensemble engine against a plain per-seed loop on the same GPU, in the same precision,
with useful TFLOP/s and their share of the chip's dense peak. The one script a GPU session runs for issue 25.

Run by hand on a machine with CUDA (not in CI):

    python benchmarks/gpu_speed.py --quick --out gpu_speed.md      # every case, both precisions: a GPU session's run
    python benchmarks/gpu_speed.py --out gpu_speed.md              # the same with 2 s blocks x 5 repeats (~3x longer)
    python benchmarks/gpu_speed.py syntax hierarchy --precision bfloat16 --members 64 256 1024
    python benchmarks/gpu_speed.py --quick                         # short blocks, 3 repeats
    python benchmarks/gpu_speed.py --profile syntax                # plus the top CUDA kernels of one ontogeny step
    python benchmarks/gpu_speed.py --graphs syntax hierarchy       # plus the ontogeny step replayed as a CUDA graph
    python benchmarks/gpu_speed.py --device cpu --quick --members 4 --baseline-seeds 2   # a dry run of the script

Cases (ontogeny side: the real `EnsembleTrainer` step, `train_step` as `train()` takes it off checkpoints, and with
`--graphs` the same with `cuda_graphs = true`, captured once and replayed (train/graphs.py); baseline: one
`nn.Module` + `torch.optim` per seed, one seed after another, on the same GPU):
  parity       (40, 3) sparse parity, width-256 ReLU MLP, 32 fresh samples per step, SGD, hinge loss
  transformer  Nanda et al.'s 1-layer transformer on p = 113 modular addition, 30% of pairs, full batch
  syntax       the `syntax-drops` recipe's masked LM (4 layers, d 64) on its grammar
  hierarchy    the `hierarchy-objective` recipe's LM (2 layers, d 64) on question formation
  recording    what `train()`'s checkpoint probes cost beside its steps, under each language recipe's schedule
Each training case runs at every `--members` size that fits (default 64, 256, 1024; parity also 4096) against a
per-seed loop of `--baseline-seeds` seeds (a per-seed loop's seed-steps/s do not depend on how many seeds it has).
With `--precision bfloat16` the ensemble's spec says `precision = "bfloat16"` and the loop runs under the same
`torch.autocast(dtype=torch.bfloat16)`; both keep float32 weights and optimizer state.

FLOPs of one step of each side are counted by torch.utils.flop_counter (matmuls and attention, forward and
backward) and divided by the measured time; timings end with torch.cuda.synchronize(). The per-seed loop of the
transformer case does 2.3x the ensemble's FLOPs (logits and attention at every position; ontogeny computes the last
position only), so its TFLOP/s overstate its useful work. Peak: the chip's dense rate for the precision (H100/H200
SXM: 989 TFLOP/s bf16, 67 float32 without TF32; `--peak` to give another).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from ensemble_speed import NandaTransformer, OntogenySide  # same dir
from language_speed import PlainLM, probe_cost
from roofline import step_flops
from ontogeny.tasks import IGNORE
from ontogeny.train.plan import H100_DENSE_PEAK

DENSE_PEAK = {"H100": H100_DENSE_PEAK, "H200": H100_DENSE_PEAK}  # the H200 has the H100's compute
RECIPE = {"syntax": "syntax-drops", "hierarchy": "hierarchy-objective"}


def autocast(device: str, precision: str):
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bfloat16")


class ParityLoop:
    """One nn.Sequential + SGD per seed, batches drawn on the device, one seed after another."""

    def __init__(self, n_seeds: int, device: str, precision: str, n: int = 40, k: int = 3, width: int = 256,
                 batch: int = 32):
        self.n, self.batch, self.device, self.precision = n, batch, device, precision
        self.secret = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:k].to(device)
        self.seeds = []
        for seed in range(n_seeds):
            torch.manual_seed(seed)
            model = nn.Sequential(nn.Linear(n, width), nn.ReLU(), nn.Linear(width, 1)).to(device)
            self.seeds.append((model, torch.optim.SGD(model.parameters(), lr=0.1)))

    def steps(self, n_steps: int) -> None:
        for model, optimizer in self.seeds:
            for _ in range(n_steps):
                x = torch.randint(0, 2, (self.batch, self.n), device=self.device).float() * 2 - 1
                y = x[:, self.secret].prod(-1)
                with autocast(self.device, self.precision):
                    out = model(x).squeeze(-1).float()
                loss = torch.relu(1 - y * out).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()


class ModularLoop:
    """Nanda et al.'s transformer + AdamW per seed on the full training set."""

    def __init__(self, n_seeds: int, device: str, precision: str, p: int = 113, train_fraction: float = 0.3):
        a, b = torch.cartesian_prod(torch.arange(p), torch.arange(p)).unbind(1)
        x, y = torch.stack([a, b, torch.full_like(a, p)], 1), (a + b) % p
        train = torch.randperm(p * p, generator=torch.Generator().manual_seed(0))[: round(train_fraction * p * p)]
        self.x, self.y, self.device, self.precision = x[train].to(device), y[train].to(device), device, precision
        self.seeds = []
        for seed in range(n_seeds):
            torch.manual_seed(seed)
            model = NandaTransformer(p + 1, p, 3, d_model=128, n_heads=4, d_mlp=512).to(device)
            self.seeds.append((model, torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1.0,
                                                        betas=(0.9, 0.98))))

    def steps(self, n_steps: int) -> None:
        for model, optimizer in self.seeds:
            for _ in range(n_steps):
                with autocast(self.device, self.precision):
                    logits = model(self.x)[:, -1].float()
                loss = nn.functional.cross_entropy(logits, self.y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()


class LanguageLoop:
    """Per seed one PyTorch pre-LN transformer LM (language_speed.PlainLM) + AdamW on the recipe's own batches."""

    def __init__(self, side: OntogenySide, n_seeds: int, device: str, precision: str):
        trainer = side.trainer
        task, spec, optim = trainer.task, trainer.spec, trainer.spec.optim
        self.task, self.device, self.precision = task, device, precision
        self.seeds = []
        for seed in range(n_seeds):
            torch.manual_seed(seed)
            model = PlainLM(spec.model, task.vocab_size, task.n_positions, task.n_outputs, task.objective,
                            getattr(task, "pad_token", None)).to(device)
            optimizer = torch.optim.AdamW(model.parameters(), lr=optim.lr, betas=optim.betas, eps=optim.eps,
                                          weight_decay=optim.weight_decay)
            self.seeds.append([model, optimizer, 0])

    def steps(self, n_steps: int) -> None:
        for entry in self.seeds:
            model, optimizer, first = entry
            for step in range(first, first + n_steps):
                batch = self.task.batch(step)
                x, y = batch.x.to(self.device, non_blocking=True), batch.y.to(self.device, non_blocking=True)
                with autocast(self.device, self.precision):
                    logits = model(x).float()  # [B, T, C]
                loss = nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            entry[2] = first + n_steps


def ontogeny_side(case: str, members: int, device: str, precision: str, graphs: bool = False) -> OntogenySide:
    common = [f"seeds={members}", f"device={device}", f"precision={precision}", f"cuda_graphs={str(graphs).lower()}"]
    if case == "parity":
        return OntogenySide("sparse-parity", [*common, "model.width=256", "task.n=40", "task.k=3",
                                              "task.batch_size=32", "task.n_train=0", "optim.lr=0.1"])
    if case == "transformer":
        return OntogenySide("grokking-nanda", [*common, "task.batch_size=0", "optim.warmup_steps=0"])
    one_arm = ['sweep.task.loss_on=["all"]'] if case == "hierarchy" else []  # the LM arm: one ensemble
    return OntogenySide(RECIPE[case], [*common, "data_orders=1", *one_arm])


def baseline(case: str, side: OntogenySide, n_seeds: int, device: str, precision: str):
    if case == "parity":
        return ParityLoop(n_seeds, device, precision)
    if case == "transformer":
        return ModularLoop(n_seeds, device, precision)
    return LanguageLoop(side, n_seeds, device, precision)


def synced(fn, n_steps: int) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn(n_steps)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def block_steps(fn, seconds: float) -> int:
    """Warm up, then how many steps of `fn` take about `seconds`."""
    fn(3)
    n_steps, elapsed = 1, synced(fn, 1)
    while elapsed < 0.2 * seconds:
        n_steps *= 4
        elapsed = synced(fn, n_steps)
    return max(1, round(n_steps * seconds / elapsed))


def flops_per_step(fn) -> float:
    return float(step_flops(lambda: fn(1)))


def profile_step(side: OntogenySide, device: str) -> None:
    """The top kernels (and the CPU time that launched them) of 10 ontogeny steps."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    side.steps(3)
    with profile(activities=activities) as prof:
        synced(side.steps, 10)
    key = "self_cuda_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=15), flush=True)


def graphs_check(case: str, members: int, device: str, precision: str, n_steps: int = 8) -> float:
    """Largest weight difference after `n_steps` between the eager step and the replayed graph (0: the same)."""
    eager, graphed = (ontogeny_side(case, members, device, precision, graphs=g) for g in (False, True))
    eager.steps(n_steps)
    graphed.steps(n_steps)
    return max(float((a - b).abs().max()) for a, b in zip(eager.trainer.optimizer.flat, graphed.trainer.optimizer.flat))


def measure(case: str, members: int, args, precision: str, peak: float | None) -> dict | None:
    """One row of the table, or None if the ensemble does not fit the GPU's memory."""
    try:
        return _measure(case, members, args, precision, peak)
    except torch.OutOfMemoryError:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return None


def _measure(case: str, members: int, args, precision: str, peak: float | None) -> dict:
    side = ontogeny_side(case, members, args.device, precision)
    loop = baseline(case, side, args.baseline_seeds, args.device, precision)
    flops = {"ontogeny": flops_per_step(side.steps) / members, "loop": flops_per_step(loop.steps) / args.baseline_seeds}
    block, repeats = (0.5, 3) if args.quick else (2.0, 5)
    sides = {"ontogeny": (side.steps, members), "loop": (loop.steps, args.baseline_seeds)}
    if args.graphs:
        sides["graphs"] = (ontogeny_side(case, members, args.device, precision, graphs=True).steps, members)
        flops["graphs"] = flops["ontogeny"]
    n_steps = {name: block_steps(fn, block) for name, (fn, _) in sides.items()}
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for repeat in range(repeats):
        for name in (list(sides) if repeat % 2 == 0 else list(sides)[::-1]):
            fn, seeds = sides[name]
            rates[name].append(seeds * n_steps[name] / synced(fn, n_steps[name]))  # seed-steps/s
    row = {"case": case, "members": members, "precision": precision, "seeds_loop": args.baseline_seeds}
    for name in sides:
        rate = statistics.median(rates[name])
        row[name] = rate
        row[f"{name}_tflops"] = rate * flops[name] / 1e12
        row[f"{name}_peak"] = row[f"{name}_tflops"] * 1e12 / peak if peak else float("nan")
    row["ratio"] = row["ontogeny"] / row["loop"]
    row["graph_ratio"] = row["graphs"] / row["loop"] if args.graphs else float("nan")
    row["mflop"] = flops["ontogeny"] / 1e6
    if torch.cuda.is_available():
        row["memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
    if args.profile:
        print(f"profile: {case}, {members} members, {precision}")
        profile_step(side, args.device)
    del side, loop
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return row


def chip_peak(device: str, precision: str, given: float | None) -> float | None:
    if given:
        return given * 1e12
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(torch.device(device))
    return next((peaks[precision] for chip, peaks in DENSE_PEAK.items() if chip in name), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cases", nargs="*", default=["parity", "transformer", "syntax", "hierarchy", "recording"])
    parser.add_argument("--members", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--baseline-seeds", type=int, default=8)
    parser.add_argument("--precision", choices=["float32", "bfloat16", "both"], default="both")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--graphs", action="store_true", help="also the ontogeny step as a CUDA graph")
    parser.add_argument("--peak", type=float, help="the chip's dense TFLOP/s for the precision (default: known chips)")
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = parser.parse_args()
    precisions = ["float32", "bfloat16"] if args.precision == "both" else [args.precision]
    chip = torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda") else "cpu"
    header = f"torch {torch.__version__}, {chip}, {time.strftime('%Y-%m-%d')}"
    print(header, flush=True)
    rows, lines = [], []
    for case in [c for c in args.cases if c != "recording"]:
        sizes = sorted({*args.members, 4096}) if case == "parity" and not args.quick else args.members
        for precision in precisions:
            peak = chip_peak(args.device, precision, args.peak)
            if args.graphs:
                print(f"{case} {precision}: the graph's weights after 8 steps differ from eager ones by at most "
                      f"{graphs_check(case, min(sizes), args.device, precision):.3g}", flush=True)
            for members in sizes:
                row = measure(case, members, args, precision, peak)
                if row is None:
                    print(f"{case} {members} members {precision}: out of memory", flush=True)
                    break
                rows.append(row)
                print(f"{case:<11} {precision:<8} {members:>5} members: {row['ontogeny']:>12,.0f} seed-steps/s "
                      f"({row['ontogeny_tflops']:.2f} TFLOP/s, {row['ontogeny_peak']:.1%} of peak) | loop "
                      f"{row['loop']:>9,.0f} ({row['loop_tflops']:.2f} TFLOP/s) | {row['ratio']:.1f}x"
                      + (f" | graphs {row['graphs']:,.0f} ({row['graphs_peak']:.1%}) {row['graph_ratio']:.1f}x"
                         if args.graphs else ""), flush=True)
    if rows:
        lines += [f"### gpu_speed.py ({header})", "",
                  "| case | precision | members | MFLOP per seed-step | ontogeny seed-steps/s | TFLOP/s (% of peak) "
                  "| per-seed loop seed-steps/s | TFLOP/s | ratio | GPU memory "
                  "| CUDA graph: seed-steps/s (% of peak), ratio |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in rows:
            graphs = (f"{r['graphs']:,.0f} ({r['graphs_peak']:.1%}), {r['graph_ratio']:.1f}x" if "graphs" in r
                      else "-")
            lines.append(f"| {r['case']} | {r['precision']} | {r['members']} | {r['mflop']:.2f} "
                         f"| {r['ontogeny']:,.0f} | {r['ontogeny_tflops']:.2f} ({r['ontogeny_peak']:.1%}) "
                         f"| {r['loop']:,.0f} | {r['loop_tflops']:.2f} | {r['ratio']:.1f}x "
                         f"| {r.get('memory_gib', 0):.1f} GiB | {graphs} |")
    if "recording" in args.cases:
        lines += ["", "| recipe | members | checkpoints | ms per step | recording per checkpoint | share of training |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for case, recipe in RECIPE.items():
            members = max(args.members)
            cost = probe_cost(recipe, members, precisions[-1], device=args.device)
            lines.append(f"| {recipe} ({precisions[-1]}) | {members} | {cost['checkpoints']} "
                         f"| {1e3 * cost['step_seconds']:.1f} | {1e3 * cost['record']:.0f} ms "
                         f"| {cost['all_share']:.1%} |")
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"written to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
