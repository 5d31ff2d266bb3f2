"""Language models: ensemble training speed against a plain per-seed PyTorch loop, and the checkpoint probes' cost.

The ensemble is measured against a plain PyTorch loop that trains one seed at a time; the probes are costed under
each recipe's own checkpoint schedule.

Run by hand, not in CI (the numbers depend on the machine and its load):

    python benchmarks/language_speed.py                           # both recipes, 8 members, 1 and 2 threads
    python benchmarks/language_speed.py --recipe icl-markov --threads 1
    python benchmarks/language_speed.py --profile                 # plus a torch.profiler table of each side
    python benchmarks/language_speed.py --precision bfloat16      # both sides' matmuls in bf16 (autocast)

Recipes: `syntax-drops` (masked LM on the grammar task, 4 layers, d_model 64, 4 heads, d_mlp 256, 64 sentences of
up to 18 tokens per step; 2 layers, d_mlp 128 and 13 tokens before 2026-12-07) and `icl-markov` (causal LM on
in-context Markov chains, k = 3, 64 positions, 2 layers, d_model 32, 1 head, d_mlp 64, 32 sequences per step); both
pre-LN, AdamW at the recipe's lr.

1. Seed-steps/s. The ontogeny side is `EnsembleTrainer(expand(spec)).time_steps(n)`: training steps only, no
   recording. The baseline is how reference code trains: per seed one `nn.Embedding` + learned positions +
   `nn.TransformerEncoder` (pre-LN, ReLU, no dropout) + final LayerNorm + `nn.Linear` unembedding and one
   `torch.optim.AdamW`, one seed after another, with the same causal mask (markov) or key-padding mask (grammar MLM)
   and cross entropy (ignore_index -100) on the same batches, taken from the ontogeny task (`task.batch(step)`, one
   call per seed-step, as a per-seed loop would make it). The baseline drops the attention and unembedding biases
   that PyTorch adds by default, so that both sides have the same parameters (checked: the same count per member).
   Timed blocks alternate between the two sides (swapping which goes first every repeat), at least 5 per side and
   until each side was timed 5 s; the table reports medians (the ratio is the median of the per-repeat ratios), so a
   noisy shared machine hurts both sides alike. Rows with 2 threads mean nothing while other processes keep the
   cores busy (see ensemble_speed.py); each row prints the 1-minute load at its start and end. With `--precision
   bfloat16` the ensemble trains with `precision = "bfloat16"` and the plain loop under the same
   `torch.autocast(dtype=torch.bfloat16)`, float32 weights and AdamW on both sides; the roofline is then the bf16
   GEMM's.

2. Probe cost. At every checkpoint `EnsembleTrainer.train()` calls `CheckpointRows.record`: the evaluator's
   passes over the task's eval splits (per-token losses; minimal pairs for the grammar) and their `examples` rows,
   weight norms, and `task.measures` (strategy distances; attention patterns and their UAS for the grammar). A real
   `train()` of the recipe (same model, members and probe sets) runs PREFIX_STEPS steps under a denser schedule
   into a temporary run through a `ShardWriter`, with those functions wrapped to time each call (as
   recording_overhead.py does); the rest of the run is its training steps, so both sides of the share are timed
   in the same run, under the same load. Share = seconds per checkpoint x the recipe's checkpoints
   (`checkpoint_steps(spec.record, spec.steps)`) / (the recipe's steps x seconds per step). The last column adds
   what a run pays once or per 30 s (commits, the final weights). Not counted: Parquet encoding on the writer's
   thread (these probes write at most ~80k rows per checkpoint) and a checkpoint step's gradient norms and argmax.
   The in-process benchmark keeps glibc's default malloc (`ontogeny run` trains under `reuse_freed_memory`).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import torch
from torch import nn

from ontogeny.models.transformer import TransformerSpec
from ontogeny.evaluation.evaluate import Evaluator
from ontogeny.evaluation.schedule import checkpoint_steps
from ontogeny.spec import load_spec
from ontogeny.store import ShardWriter, create_run
from ontogeny.tasks import IGNORE
from ontogeny.tasks.language import LanguageTask
from ontogeny.train.loop import EnsembleTrainer
from ontogeny.members import ensembles, expand
from ontogeny.train.checkpoint_rows import CheckpointRows
from ontogeny.validation import PRECISIONS
from roofline import matmul_roofline, step_flops

RECIPES = ("syntax-drops", "icl-markov")
PROBE_AIM = 0.15  # probes at every checkpoint should cost at most this share of the training steps
PREFIX_STEPS = 50  # steps of the recorded run; its schedule (every 25, 1 per octave) has 8 checkpoints
MAX_REPEATS = 40  # blocks per side at most, however short the blocks came out
COMMIT_SECONDS = 30.0  # train()'s default: a commit (state and rows) at the first checkpoint past every 30 s


# ---- the ontogeny side ----------------------------------------------------------------------------------------


def ontogeny_trainer(recipe: str, n_members: int, precision: str = "float32") -> EnsembleTrainer:
    """One `EnsembleTrainer` of `n_members` seeds of the recipe (one data order, as the recipes have)."""
    spec = load_spec(recipe, [f"seeds={n_members}", f"precision={precision}"])
    groups = ensembles(expand(spec))
    if len(groups) != 1 or len(groups[0]) != n_members:
        raise SystemExit(f"{recipe}: expected one ensemble of {n_members} members, got {[len(g) for g in groups]}")
    return EnsembleTrainer(groups[0], device=spec.device)


# ---- the baseline: one seed at a time, the obvious way ----------------------------------------------------------


class PlainLM(nn.Module):
    """One pre-LN transformer LM from PyTorch's own layers: logits at every position."""

    def __init__(self, spec: TransformerSpec, vocab_size: int, n_positions: int, n_outputs: int, objective: str,
                 pad_token: int | None):
        super().__init__()
        d = spec.d_model
        self.causal, self.pad_token = objective == "causal", pad_token
        self.embed = nn.Embedding(vocab_size, d)
        self.positions = nn.Parameter(torch.randn(n_positions, d) / d**0.5)
        layer = nn.TransformerEncoderLayer(d, spec.n_heads, dim_feedforward=spec.d_mlp, dropout=0.0,
                                           activation=spec.activation, batch_first=True, norm_first=True)
        # ontogeny's attention has no biases: drop PyTorch's, so both sides have the same parameters
        layer.self_attn = nn.MultiheadAttention(d, spec.n_heads, dropout=0.0, bias=False, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, spec.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.unembed = nn.Linear(d, n_outputs, bias=False)
        self.register_buffer("causal_mask", nn.Transformer.generate_square_subsequent_mask(n_positions))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """tokens [B, T] -> logits [B, T, n_outputs]."""
        positions = x.shape[1]
        resid = self.embed(x) + self.positions[:positions]  # [B, T, d]
        if self.causal:
            resid = self.encoder(resid, mask=self.causal_mask[:positions, :positions], is_causal=True)
        else:  # a masked LM never attends to padding
            resid = self.encoder(resid, src_key_padding_mask=x == self.pad_token)
        return self.unembed(self.norm(resid))  # [B, T, n_outputs]


class PlainLoop:
    """`n_members` PlainLMs, each with its own torch.optim.AdamW, trained one after another on the task's batches."""

    def __init__(self, trainer: EnsembleTrainer):
        task, spec, optim = trainer.task, trainer.spec, trainer.spec.optim
        self.task, self.autocast = task, trainer.autocast  # the ensemble's precision, bf16 autocast or none
        self.seeds = []
        for member in trainer.members:
            torch.manual_seed(member.init_seed)
            model = PlainLM(spec.model, task.vocab_size, task.n_positions, task.n_outputs, task.objective,
                            getattr(task, "pad_token", None))
            optimizer = torch.optim.AdamW(model.parameters(), lr=optim.lr, betas=optim.betas, eps=optim.eps,
                                          weight_decay=optim.weight_decay)
            self.seeds.append([model, optimizer, 0])  # model, optimizer, next step

    def steps(self, n_steps: int) -> None:
        """Train every seed `n_steps` steps, one seed after another."""
        for entry in self.seeds:
            model, optimizer, first = entry
            for step in range(first, first + n_steps):
                batch = self.task.batch(step)
                with self.autocast():
                    logits = model(batch.x).float()  # [B, T, C]
                    loss = nn.functional.cross_entropy(logits.flatten(0, 1), batch.y.flatten(), ignore_index=IGNORE)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            entry[2] = first + n_steps

    def seed_step_flops(self) -> int:
        """Useful FLOPs of one seed's training step (forward and backward; the ensemble does the same math), counted
        on a copy on PyTorch's meta device: torch's FLOP counter sees none in the CPU's fused attention kernel."""
        model = copy.deepcopy(self.seeds[0][0]).to("meta")
        batch = self.task.batch(0)
        x, y = batch.x.to("meta"), batch.y.to("meta")
        return step_flops(lambda: nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten(),
                                                              ignore_index=IGNORE).backward())


def parameter_counts(trainer: EnsembleTrainer, plain: PlainLoop) -> tuple[int, int]:
    """Parameters of one member on each side: (ontogeny, plain)."""
    ontogeny = sum(p[0].numel() for p in trainer.model.parameters())
    return ontogeny, sum(p.numel() for p in plain.seeds[0][0].parameters())


@torch.no_grad()
def load_member(ensemble, index: int, model: PlainLM) -> None:
    """Copy member `index` of an EnsembleTransformer into a PlainLM (PyTorch's weights are [out, in])."""
    def put(target: torch.Tensor, source: torch.Tensor) -> None:
        target.copy_(source[index])

    put(model.embed.weight, ensemble.W_E)
    put(model.positions, ensemble.W_pos)
    for block, layer in zip(ensemble.blocks, model.encoder.layers):
        attention = layer.self_attn
        attention.in_proj_weight.copy_(torch.cat([block.W_Q[index], block.W_K[index], block.W_V[index]], 1).T)
        attention.out_proj.weight.copy_(block.W_O[index].T)
        put(layer.norm1.weight, block.ln_attn_gain)
        put(layer.norm1.bias, block.ln_attn_bias)
        put(layer.norm2.weight, block.ln_mlp_gain)
        put(layer.norm2.bias, block.ln_mlp_bias)
        layer.linear1.weight.copy_(block.W_in[index].T)
        put(layer.linear1.bias, block.b_in)
        layer.linear2.weight.copy_(block.W_out[index].T)
        put(layer.linear2.bias, block.b_out)
    put(model.norm.weight, ensemble.ln_final_gain)
    put(model.norm.bias, ensemble.ln_final_bias)
    model.unembed.weight.copy_(ensemble.W_U[index].T)


@torch.no_grad()
def same_function(trainer: EnsembleTrainer, plain: PlainLoop) -> float:
    """Largest |logit difference| between ensemble member 1 and a PlainLM holding its weights, on one training batch
    (every position a query reads; for the masked LM, the non-padding ones)."""
    model = plain.seeds[0][0]
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    index = min(1, len(trainer.members) - 1)
    load_member(trainer.model, index, model)
    x = trainer.task.batch(0).x  # [B, T]
    ours, theirs = trainer.model(x)[index], model(x)  # [B, T, C] each
    model.load_state_dict(state)  # leave the baseline's own initialisation in place
    keep = x != trainer.task.pad_token if trainer.task.objective == "masked" else torch.ones_like(x, dtype=torch.bool)
    return float((ours - theirs)[keep].abs().max())


# ---- timing ---------------------------------------------------------------------------------------------------


def timed(fn: Callable[[int], None], n_steps: int) -> float:
    start = time.perf_counter()
    fn(n_steps)
    return time.perf_counter() - start


def block_steps(fn: Callable[[int], None], seconds: float) -> int:
    """Warm `fn` up (allocator, first calls, optimizer state) and return how many steps take about `seconds`."""
    fn(3)
    n_steps, elapsed = 1, timed(fn, 1)
    while elapsed < 0.2 * seconds:  # grow until one timing is long enough to extrapolate from
        n_steps *= 4
        elapsed = timed(fn, n_steps)
    return max(1, round(n_steps * seconds / elapsed))


def training_speed(recipe: str, trainer: EnsembleTrainer, plain: PlainLoop, block_seconds: float,
                   repeats: int, min_seconds: float) -> dict:
    """Interleaved timed blocks of both sides, at least `repeats` and until each side was timed `min_seconds` (a
    block size measured during a burst of load can be too small): median seed-steps/s of each, median paired ratio,
    and the ensemble's median seconds per step."""
    n_members = len(trainer.members)
    sides = {"ontogeny": trainer.time_steps, "plain": plain.steps}
    # both sides train every seed the same number of steps per block: as many as the slower side takes in about
    # `block_seconds`
    n_steps = min(block_steps(fn, block_seconds) for fn in sides.values())
    rates = {name: [] for name in sides}
    spent = dict.fromkeys(sides, 0.0)
    ratios = []
    repeat = 0
    while repeat < repeats or (min(spent.values()) < min_seconds and repeat < MAX_REPEATS):
        order = list(sides) if repeat % 2 == 0 else list(sides)[::-1]
        this = {}
        for name in order:
            seconds = timed(sides[name], n_steps)
            spent[name] += seconds
            this[name] = n_members * n_steps / seconds
        for name in sides:
            rates[name].append(this[name])
        ratios.append(this["ontogeny"] / this["plain"])  # paired: both sides saw about the same load
        repeat += 1
        print(f"  {recipe} {torch.get_num_threads()}t repeat {repeat}: ontogeny "
              f"{this['ontogeny']:8.1f}  plain {this['plain']:8.1f} seed-steps/s  ratio {ratios[-1]:.2f}  "
              f"({n_steps} steps per block)", flush=True)
    ontogeny = statistics.median(rates["ontogeny"])
    return {"ontogeny": ontogeny, "plain": statistics.median(rates["plain"]), "ratio": statistics.median(ratios),
            "ratio_min": min(ratios), "ratio_max": max(ratios), "step_seconds": n_members / ontogeny,
            "repeats": repeat, "seconds": min(spent.values())}


@contextmanager
def attribution(seconds: dict[str, list[float]]):
    """Append the wall seconds of every call of the recording parts of `train()` to `seconds[part]`, by wrapping the
    functions (as recording_overhead.py does), not by editing them."""
    def wall(name: str, function: Callable) -> Callable:
        def timed_call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[name].append(time.perf_counter() - start)
        return timed_call

    with mock.patch.object(CheckpointRows, "record", wall("record", CheckpointRows.record)), \
            mock.patch.object(LanguageTask, "measures", wall("measures", LanguageTask.measures)), \
            mock.patch.object(Evaluator, "losses", wall("evaluate", Evaluator.losses)), \
            mock.patch.object(CheckpointRows, "save_weights", wall("save_weights", CheckpointRows.save_weights)), \
            mock.patch.object(EnsembleTrainer, "commit", wall("commit", EnsembleTrainer.commit)):
        yield


def probe_cost(recipe: str, n_members: int, precision: str = "float32", device: str = "cpu") -> dict:
    """What recording costs in a real `EnsembleTrainer.train()` into a temporary run over PREFIX_STEPS steps with a
    denser schedule, scaled to the recipe's own steps and checkpoints.

    Returns seconds per checkpoint of `measures` alone, of the evaluator's passes and of all of
    `CheckpointRows.record` (measures and evaluation included); seconds per training step (the rest of the run);
    and each part's share of the recipe's training time. Commits and the final weights are charged once per
    COMMIT_SECONDS of training and once, as `train()` pays them."""
    spec = load_spec(recipe, [f"seeds={n_members}"])
    prefix = load_spec(recipe, [f"seeds={n_members}", f"steps={PREFIX_STEPS}", f"record.every={PREFIX_STEPS // 2}",
                                "record.per_octave=1", f"precision={precision}", f"device={device}"])
    n_checkpoints = len(checkpoint_steps(spec.record, spec.steps))
    group = ensembles(expand(prefix))[0]
    EnsembleTrainer(group, device=prefix.device).time_steps(3)  # warm the training path up
    trainer = EnsembleTrainer(group, device=prefix.device)
    seconds = {part: [] for part in ("record", "measures", "evaluate", "save_weights", "commit")}
    with tempfile.TemporaryDirectory(prefix="language-speed-") as root, attribution(seconds):
        run_dir = Path(root) / "run"
        create_run(run_dir, {"kind": "benchmark"}).release()
        with ShardWriter(run_dir, "ensemble-0000") as writer:
            total = timed(lambda _: trainer.train(writer, run_dir), 0)
    recorded = len(seconds["record"])
    assert recorded == len(checkpoint_steps(prefix.record, prefix.steps))
    step_seconds = (total - sum(seconds["record"]) - sum(seconds["commit"]) - sum(seconds["save_weights"])) / (
        PREFIX_STEPS + 1)  # train() runs a forward and backward pass at the last step too
    training = spec.steps * step_seconds
    once = statistics.mean(seconds["commit"]) * (1 + training / COMMIT_SECONDS) + sum(seconds["save_weights"])
    result = {"checkpoints": n_checkpoints, "steps": spec.steps, "step_seconds": step_seconds, "training": training,
              "prefix_checkpoints": recorded, "once": once}
    for part in ("measures", "evaluate", "record"):
        result[part] = sum(seconds[part]) / recorded  # per checkpoint
        result[f"{part}_share"] = result[part] * n_checkpoints / training
    result["all_share"] = (result["record"] * n_checkpoints + once) / training
    return result


def profile(name: str, fn: Callable[[int], None], n_steps: int) -> None:
    """Print where a side spends its time (torch.profiler, CPU self time)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    fn(2)
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        fn(n_steps)
    print(f"\n{name}: profile over {n_steps} steps ({torch.get_num_threads()} threads)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


# ---- main -------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", choices=RECIPES, action="append", help="one recipe (repeatable; default both)")
    parser.add_argument("--members", type=int, default=8, help="seeds trained (default 8)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="torch.set_num_threads values to measure (default: 1 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed blocks per side, at least (default 5)")
    parser.add_argument("--block-seconds", type=float, default=1.0,
                        help="about how long one timed block of the slower side lasts (default 1.0)")
    parser.add_argument("--min-seconds", type=float, default=5.0,
                        help="more blocks until each side was timed this long (default 5)")
    parser.add_argument("--profile", action="store_true", help="also print a torch.profiler table of each side")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="the ensemble's spec precision; the plain loop runs under the same autocast")
    args = parser.parse_args()
    if args.members < 1 or any(t < 1 for t in args.threads):
        parser.error("--members and --threads must be at least 1")
    recipes = args.recipe or list(RECIPES)
    start_load = os.getloadavg()[0]  # before this process adds its own threads to it
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {args.members} members, "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    speeds, costs = {}, {}
    for recipe in recipes:
        for threads in args.threads:
            torch.set_num_threads(threads)
            row_load = os.getloadavg()[0]  # this process's own share is at most the previous row's threads
            trainer = ontogeny_trainer(recipe, args.members, args.precision)
            plain = PlainLoop(trainer)
            ours, theirs = parameter_counts(trainer, plain)
            if ours != theirs:
                raise SystemExit(f"{recipe}: the plain model has {theirs} parameters per member, ontogeny {ours}")
            difference = same_function(trainer, plain)
            if threads == args.threads[0]:
                print(f"{recipe}: {ours:,} parameters per member on both sides; with the same weights the logits "
                      f"differ by at most {difference:.1e}", flush=True)
            if difference > (1e-4 if args.precision == "float32" else 0.25):  # bf16 logits: ~1e-2 relative
                raise SystemExit(f"{recipe}: the plain model computes something else (logits differ by {difference})")
            speeds[recipe, threads] = speed = training_speed(recipe, trainer, plain, args.block_seconds,
                                                             args.repeats, args.min_seconds)
            speed["parameters"], speed["load"] = ours, (row_load, os.getloadavg()[0])
            speed["gflop"] = plain.seed_step_flops() / 1e9
            speed["roofline"] = matmul_roofline(getattr(torch, args.precision))
            costs[recipe, threads] = probe_cost(recipe, args.members, args.precision)
            if args.profile:
                n_steps = max(5, round(2.0 / speed["step_seconds"]))
                profile(f"{recipe} ontogeny", trainer.time_steps, n_steps)
                profile(f"{recipe} plain", plain.steps, max(1, n_steps // args.members))

    load = os.getloadavg()
    print(f"\nload average at the end: {' '.join(f'{v:.2f}' for v in load)}")
    busy = [key for key, s in speeds.items() if key[1] > 1 and max(s["load"]) - key[1] > (os.cpu_count() or 1) - 1]
    if max(args.threads) > 1 and (start_load > (os.cpu_count() or 1) or busy):
        print("other processes kept the cores busy: do not trust the rows with more than one thread (OpenMP threads "
              "that keep losing their core make every op many times slower)")
    print(f"\n{'recipe':<13} {'threads':>7} {'params':>7} {'ontogeny':>12} {'plain':>12} {'ratio':>6} "
          f"{'(min-max)':>11} {'ms/step':>8} {'blocks':>6} {'timed':>6}  load")
    print(f"{'':<13} {'':>7} {'/member':>7} {'seed-steps/s':>12} {'seed-steps/s':>12}")
    for (recipe, threads), s in speeds.items():
        print(f"{recipe:<13} {threads:>7} {s['parameters']:>7,} {s['ontogeny']:>12.1f} {s['plain']:>12.1f} "
              f"{s['ratio']:>5.2f}x {s['ratio_min']:>5.2f}-{s['ratio_max']:<5.2f} "
              f"{1e3 * s['step_seconds']:>8.1f} {s['repeats']:>6} {s['seconds']:>5.1f}s  "
              f"{s['load'][0]:.1f} -> {s['load'][1]:.1f}")
    print("\nuseful training FLOPs (torch's counter on one plain seed-step: matmuls and attention, forward and "
          f"backward) over wall time, against this process's {args.precision} GEMM rate at the same threads")
    print(f"{'recipe':<13} {'threads':>7} {'MFLOP/seed-step':>15} {'roofline':>9} {'ontogeny':>16} {'plain':>16}")
    for (recipe, threads), s in speeds.items():
        share = {side: s[side] * s["gflop"] for side in ("ontogeny", "plain")}  # GFLOP/s
        print(f"{recipe:<13} {threads:>7} {1e3 * s['gflop']:>15.2f} {s['roofline']:>8.1f}G "
              + " ".join(f"{share[side]:>6.2f}G ({share[side] / s['roofline']:>5.1%})" for side in share))
    print(f"\nrecording, per checkpoint inside a {PREFIX_STEPS}-step train(); share = per checkpoint x the recipe's "
          f"checkpoints / (its steps x ms per step in that run); aim: all recording <= {PROBE_AIM:.0%}")
    print(f"{'recipe':<13} {'threads':>7} {'ckpts':>5} {'steps':>5} {'ms/step':>7} {'measures':>9} {'share':>6} "
          f"{'evaluate':>9} {'share':>6} {'record':>8} {'share':>6} {'+commits':>8}  aim")
    for (recipe, threads), c in costs.items():
        verdict = "met" if c["all_share"] <= PROBE_AIM else "missed"
        print(f"{recipe:<13} {threads:>7} {c['checkpoints']:>5} {c['steps']:>5} {1e3 * c['step_seconds']:>7.1f} "
              f"{1e3 * c['measures']:>7.0f}ms {c['measures_share']:>6.1%} {1e3 * c['evaluate']:>7.0f}ms "
              f"{c['evaluate_share']:>6.1%} {1e3 * c['record']:>6.0f}ms {c['record_share']:>6.1%} "
              f"{c['all_share']:>8.1%}  <= {PROBE_AIM:.0%} {verdict}")


if __name__ == "__main__":
    main()
