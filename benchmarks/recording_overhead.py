"""What recording costs: per-example loss/correct of every probe example at every checkpoint, streamed to Parquet.

Run by hand, not in CI (the numbers depend on the machine and its load):

    python benchmarks/recording_overhead.py            # 32 members x 10,000 probe examples x ~200 checkpoints
    python benchmarks/recording_overhead.py --quick    # ~50 checkpoints, a smoke test
    python benchmarks/recording_overhead.py --every 100 --checkpoints 60   # longer intervals between checkpoints

The same `EnsembleTrainer.train()` run (modular addition p = 101, whose 10,201 examples are probed on a fixed
sample of 10,000, a small full-batch MLP, 32 seeds, a checkpoint every `--every` steps) is timed three ways, each
in a fresh Python process (so each starts from the same allocator state and has its own peak RSS) and into a fresh
temporary run directory through a `ShardWriter`:

  examples   record.examples = true: every checkpoint runs the probes and writes one `examples` row per member
             and probe example (32 x 10,000 rows per checkpoint), plus the scalars.
  scalars    record.examples = false, same checkpoints: the probes' forward pass and the scalars, no example rows.
  train      only two checkpoints (step 0 and the last): as close to pure training as `train()` gets.

Inside each run the main thread's time is split (by wrapping the functions, not by editing them) into training
steps, the probes' forward pass (`Evaluator.losses`), the per-example rows (`Evaluator._example_rows`, which includes
any wait for the shard writer), the rest of `CheckpointRows.record`, and commits; the shard writer's worker thread is
charged with the CPU seconds it spends encoding Parquet. This split, within one run, is the robust number on a
shared machine; the differences between the three runs (what a user sees end to end) are printed too, but the
machine's load can change a lot between runs. Resident memory is sampled at every checkpoint, and the process's
peak RSS is reported, to show that memory stays flat however many rows are written.

The overhead is per checkpoint interval: what one checkpoint costs against `every` training steps, so the script
also prints from how many training steps per checkpoint on it stays under 10%. The design target (DESIGN.md,
"Scale") is 32 members x 10k probe examples x 200 checkpoints written with under 10% training overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from unittest import mock

import pyarrow.parquet as pq
import torch

from ontogeny.evaluation.schedule import checkpoint_steps
from ontogeny.spec import RecordSpec, load_spec
from ontogeny.store import ShardWriter
from ontogeny.store.create import create_run
from ontogeny.store import writer as writer_module
from ontogeny.train import loop
from ontogeny.train.loop import EnsembleTrainer
from ontogeny.members import ensembles, expand
from ontogeny.evaluation.evaluate import Evaluator
from ontogeny.train.checkpoint_rows import CheckpointRows

PAGE = os.sysconf("SC_PAGE_SIZE")
VARIANTS = ("train", "scalars", "examples")
PARTS = ("record", "probes", "example_rows", "save_weights", "commit", "encode_cpu")


def rss_mib() -> float:
    """Resident memory of this process now, in MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # Linux reports KiB


def steps_for(every: int, per_octave: int, n_checkpoints: int) -> int:
    """The smallest step count whose schedule has at least `n_checkpoints` checkpoints."""
    record, steps = RecordSpec(every=every, per_octave=per_octave), every
    while len(checkpoint_steps(record, steps)) < n_checkpoints:
        steps += every
    return steps


@contextmanager
def only_end_checkpoints():
    """Make `train()` record at step 0 and the last step only (its schedule always adds log-spaced early steps)."""
    with mock.patch.object(loop, "checkpoint_steps", lambda record, steps: [0, steps]):
        yield


@contextmanager
def attribution(seconds: dict[str, float]):
    """Add the wall seconds the main thread spends in each part of recording to `seconds`, and the CPU seconds the
    shard writer's worker thread spends encoding Parquet to `seconds["encode_cpu"]`."""

    def wall(name, function):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[name] += time.perf_counter() - start
        return timed

    def cpu(function):
        def timed(*args, **kwargs):
            start = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                seconds["encode_cpu"] += time.thread_time() - start  # float += is atomic enough under the GIL
        return timed

    with mock.patch.object(CheckpointRows, "record", wall("record", CheckpointRows.record)), \
            mock.patch.object(Evaluator, "_example_rows", wall("example_rows", Evaluator._example_rows)), \
            mock.patch.object(CheckpointRows, "save_weights", wall("save_weights", CheckpointRows.save_weights)), \
            mock.patch.object(Evaluator, "losses", wall("probes", Evaluator.losses)), \
            mock.patch.object(EnsembleTrainer, "commit", wall("commit", EnsembleTrainer.commit)), \
            mock.patch.object(writer_module, "write_parquet", cpu(writer_module.write_parquet)):
        yield


def run_variant(variant: str, overrides: list[str], root: Path | None) -> dict:
    """Build a trainer (not timed), then time one `train()` into a fresh run directory; return the measurements."""
    examples = "true" if variant == "examples" else "false"
    spec = load_spec("grokking", [*overrides, f"record.examples={examples}"])
    (group,) = ensembles(expand(spec))
    trainer = EnsembleTrainer(group, device=spec.device)
    run_dir = Path(tempfile.mkdtemp(prefix=f"{variant}-", dir=root))
    create_run(run_dir, {"kind": "benchmark"}).release()
    rss = []  # (step, MiB) at every checkpoint
    parts = dict.fromkeys(PARTS, 0.0)
    with ShardWriter(run_dir, "ensemble-0000") as writer, attribution(parts), \
            (only_end_checkpoints() if variant == "train" else nullcontext()):
        start = time.perf_counter()
        trainer.train(writer, run_dir, commit_seconds=30.0,
                      on_checkpoint=lambda step, scalars, _: rss.append((step, rss_mib())))
        seconds = time.perf_counter() - start
    files = list(run_dir.glob("writers/*/examples/part-*.parquet"))
    return {
        "seconds": seconds, "checkpoints": len(rss), **parts,
        "steps": seconds - parts["record"] - parts["save_weights"] - parts["commit"],
        "rows_written": sum(pq.read_metadata(f).num_rows for f in files),
        "bytes": sum(f.stat().st_size for f in run_dir.rglob("*") if f.is_file()),
        "rss": rss, "peak_rss": peak_rss_mib(),
    }


def run_in_child(variant: str, root: str) -> dict:
    """Run one variant in a fresh Python process (same arguments), so that every run starts from the same allocator
    state and its peak RSS is its own; return its measurements."""
    argv = list(sys.argv[1:])
    if "--dir" in argv:  # the child writes under this run's temporary directory instead
        index = argv.index("--dir")
        del argv[index:index + 2]
    argv = [arg for arg in argv if not arg.startswith("--dir=")]
    out = subprocess.run([sys.executable, __file__, *argv, "--child", variant, "--dir", root],
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="~50 checkpoints instead of ~200")
    parser.add_argument("--members", type=int, default=32)
    parser.add_argument("--p", type=int, default=101, help="modular addition mod p: p*p examples")
    parser.add_argument("--probe", type=int, default=10_000, help="record.max_probe_examples")
    parser.add_argument("--width", type=int, default=32, help="MLP width (small, so that the run takes minutes)")
    parser.add_argument("--every", type=int, default=2, help="record.every: training steps between checkpoints")
    parser.add_argument("--checkpoints", type=int, help="about how many checkpoints (default 200, --quick 50)")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved repeats of the three runs (medians)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                        help="which runs (default all three)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own)")
    parser.add_argument("--dir", type=Path, help="where the temporary run directories go (default: system temp)")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n_checkpoints = args.checkpoints or (50 if args.quick else 200)
    per_octave = 1  # few log-spaced early checkpoints, so that (nearly) all intervals are `every` steps long
    steps = steps_for(args.every, per_octave, n_checkpoints)
    overrides = [f"seeds={args.members}", f"task.p={args.p}", "task.train_fraction=0.3", "task.batch_size=0",
                 f"model.width={args.width}", f"steps={steps}", f"record.every={args.every}",
                 f"record.per_octave={per_octave}", "record.weights_every=0", f"record.max_probe_examples={args.probe}"]
    if args.child:  # one run in this fresh process; the parent reads the JSON line
        print(json.dumps(run_variant(args.child, overrides, args.dir)))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    print("spec: grokking " + " ".join(overrides), flush=True)

    results = {variant: [] for variant in args.variants}
    with tempfile.TemporaryDirectory(prefix="ontogeny-bench-", dir=args.dir) as root:
        for repeat in range(args.repeats):
            order = args.variants if repeat % 2 == 0 else args.variants[::-1]
            for variant in order:
                r = run_in_child(variant, root)
                results[variant].append(r)
                print(f"  {variant:<8} {r['seconds']:6.1f} s: steps {r['steps']:6.1f}, record {r['record']:5.1f} "
                      f"(probes {r['probes']:5.1f}, example rows {r['example_rows']:5.1f}), commit "
                      f"{r['commit']:4.1f}, encoder CPU {r['encode_cpu']:4.1f} | {r['checkpoints']} checkpoints, "
                      f"{r['rows_written'] / 1e6:.1f}M rows, {r['bytes'] / 2**20:.0f} MiB, RSS {r['rss'][0][1]:.0f} -> "
                      f"{r['rss'][-1][1]:.0f} MiB (peak {r['peak_rss']:.0f})", flush=True)
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    report(results, args, steps)


def report(results: dict[str, list[dict]], args, steps: int) -> None:
    def median(variant: str, key: str) -> float:
        return statistics.median(r[key] for r in results[variant])

    main_variant = "examples" if "examples" in results else next(iter(results))
    last = results[main_variant][-1]
    n_ckpt = last["checkpoints"]
    print(f"\n{args.members} members x {args.probe} probe examples x {n_ckpt} checkpoints = "
          f"{last['rows_written'] / 1e6:.1f}M example rows ({last['bytes'] / 2**20:.0f} MiB on disk); "
          f"{steps} full-batch steps, a checkpoint every {args.every}")

    # Within one run: the parts share the machine's load at every moment, so this split resists noise best.
    train = median(main_variant, "steps")
    parts = [("probes' forward pass (Evaluator.losses)", median(main_variant, "probes")),
             ("per-example rows, main thread", median(main_variant, "example_rows")),
             ("rest of CheckpointRows.record (scalars)", median(main_variant, "record") - median(main_variant, "probes")
              - median(main_variant, "example_rows")),
             ("commits and weights", median(main_variant, "commit") + median(main_variant, "save_weights")),
             ("Parquet encoding, worker thread CPU", median(main_variant, "encode_cpu"))]
    print(f"\nwithin the {main_variant!r} run (median of {len(results[main_variant])}):")
    print(f"  {'':<40} {'seconds':>8} {'% of training':>14} {'ms / checkpoint':>16}")
    print(f"  {'training steps':<40} {train:8.1f}")
    for label, seconds in parts:
        print(f"  {label:<40} {seconds:8.1f} {100 * seconds / train:13.1f}% {1e3 * seconds / n_ckpt:16.1f}")
    per_step = train / steps
    rows_cost = median(main_variant, "example_rows") + median(main_variant, "encode_cpu")
    record_cost = sum(seconds for _, seconds in parts)
    for label, seconds in (("all recording", record_cost), ("per-example rows (main + worker)", rows_cost)):
        needed = seconds / n_ckpt / (0.10 * per_step)
        print(f"  {label} stays under 10% of training from {needed:.1f} training steps per checkpoint on "
              f"(one step here: {1e3 * per_step:.0f} ms)")

    if set(VARIANTS) <= set(results):  # between runs: what a user sees end to end, but exposed to load drift
        total = {variant: median(variant, "seconds") for variant in VARIANTS}
        base = total["train"]
        print("\nbetween runs (end to end, exposed to the machine's load changing from run to run):")
        print(f"  {'training (2 checkpoints)':<40} {base:8.1f}")
        for label, seconds in (("recording, all (examples - train)", total["examples"] - base),
                               ("  probes + scalars (scalars - train)", total["scalars"] - base),
                               ("  per-example rows (examples - scalars)", total["examples"] - total["scalars"])):
            print(f"  {label:<40} {seconds:8.1f} {100 * seconds / base:13.1f}%")

    rss = [mib for _, mib in last["rss"]]
    tenth = max(1, len(rss) // 10)
    middle = len(rss) // 2
    peaks = ", ".join(f"{variant} {max(r['peak_rss'] for r in runs):.0f}" for variant, runs in results.items())
    print(f"\nRSS at checkpoints of the {main_variant!r} run (MiB): first tenth {statistics.median(rss[:tenth]):.0f}, "
          f"middle {statistics.median(rss[middle:middle + tenth]):.0f}, "
          f"last tenth {statistics.median(rss[-tenth:]):.0f}, max {max(rss):.0f}; peak RSS per run: {peaks}")
    share = rows_cost / train
    print(f"target (per-example rows, main thread + encoder CPU, <= 10% of training): "
          f"{'met' if share <= 0.10 else 'MISSED'} ({100 * share:.1f}%); "
          f"all recording {100 * record_cost / train:.1f}%")


if __name__ == "__main__":
    main()
