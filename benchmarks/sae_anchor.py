"""ontogeny's ensemble SAE beside sae-lens on real activations: FVE, L0 and wall time of each.

A short grokking run (MLP, p = 59, 300 steps, weights saved at step 300) gives the hidden activations of its 8
members on all p^2 = 3,481 pairs (the site `hidden`). For each member, an SAE is trained on that member's rows by
sae-lens's own `SAETrainer` (one SAE at a time, as sae-lens trains), and by `ontogeny.sae.train_saes` with all
members as one ensemble; both start from the same weights (ours, copied into sae-lens's SAEs) and see the same
batches with the same Adam settings, per-SAE gradient clipping at 1.0 and dead-latent window.

    python benchmarks/sae_anchor.py                          # topk, width 512, k 16, 2,000 steps of 256 rows
    python benchmarks/sae_anchor.py --kind relu-l1 --l1 1.0  # sae-lens's standard SAE
    python benchmarks/sae_anchor.py --threads 1              # on a shared machine loaded past its core count

Needs sae-lens (`pip install sae-lens`) next to ontogeny.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
import warnings
from pathlib import Path

import torch

import ontogeny as og
from ontogeny.analysis.sharpness import load_member_weights
from ontogeny.models import make_model
from ontogeny.sae.model import EnsembleSAE, MemberBatches, measure, train_saes
from ontogeny.tasks import make_task
from ontogeny.members import ensembles, expand


def grokking_activations(out: Path, model_steps: int) -> torch.Tensor:
    """Hidden activations [M, p^2, width] of a short grokking run's members at its last step."""
    og.run("grokking", overrides=[f"steps={model_steps}", f"record.weights_every={model_steps}"], out=out)
    run = og.open(out)
    group = ensembles(expand(run.spec))[0]
    task = make_task([m.spec.task for m in group], [m.data_seed for m in group], run.spec.record.max_probe_examples)
    model = make_model(run.spec.model, task, [m.init_seed for m in group], [m.spec.model.init_scale for m in group])
    files = run.checkpoints()
    files = files[files.step == model_steps].set_index("member").path
    load_member_weights(model, [run.path / files[m.member] for m in group])
    with torch.no_grad():
        return model.read(task.x, ["hidden"])["hidden"].float()  # task.x: every (a, b, '=') pair


def their_sae(kind: str, ours: EnsembleSAE, member: int, l1: float):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # transformer_lens warns when sae_lens imports it
        from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
        from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    if kind == "topk":
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=ours.d_in, d_sae=ours.width, k=ours.k))
    else:
        sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=ours.d_in, d_sae=ours.width, l1_coefficient=l1))
    with torch.no_grad():
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(sae, name).copy_(getattr(ours, name)[member])
    return sae


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=["topk", "relu-l1"], default="topk")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--l1", type=float, default=1.0, help="relu-l1's coefficient (sae-lens's default 1.0)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=3e-4, help="sae-lens's default")
    parser.add_argument("--dead-window", type=int, default=1000, help="sae-lens's default")
    parser.add_argument("--model-steps", type=int, default=300)
    parser.add_argument("--members", type=int, default=8, help="how many of the run's 8 members get an SAE")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from sae_lens.config import LoggingConfig, SAETrainerConfig
        from sae_lens.training.sae_trainer import SAETrainer

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        acts = grokking_activations(Path(tmp) / "grokking", args.model_steps)[:args.members]  # [M, N, d]
        print(f"grokking run ({args.model_steps} steps) and activations {list(acts.shape)}: "
              f"{time.perf_counter() - start:.1f} s")
    n_members, n_rows, d_in = acts.shape
    seeds, data_seeds = list(range(n_members)), [100 + m for m in range(n_members)]

    ours = EnsembleSAE(d_in, args.width, seeds, kind=args.kind, k=args.k, l1=args.l1)
    ours.init_from(acts)
    theirs = [their_sae(args.kind, ours, m, args.l1) for m in range(n_members)]  # the same init

    start = time.perf_counter()
    train_saes(ours, acts, acts, steps=args.steps, batch_size=args.batch, lr=args.lr, data_seeds=data_seeds,
               dead_window=args.dead_window)
    our_time = time.perf_counter() - start

    start = time.perf_counter()
    for member, sae in enumerate(theirs):
        batches = MemberBatches(n_rows, args.batch, [data_seeds[member]])  # the batches our member drew
        config = SAETrainerConfig(total_training_samples=args.steps * args.batch, train_batch_size_samples=args.batch,
                                  lr=args.lr, lr_end=args.lr, adam_beta1=0.9, adam_beta2=0.999,
                                  dead_feature_window=args.dead_window, feature_sampling_window=10 * args.steps,
                                  logger=LoggingConfig(log_to_wandb=False))
        SAETrainer(config, sae, (acts[member][batches.next()[0]] for _ in itertools.count())).fit()
    their_time = time.perf_counter() - start

    # measure both with the same code: sae-lens's trained weights copied back into one ensemble
    copied = EnsembleSAE(d_in, args.width, seeds, kind=args.kind, k=args.k, l1=args.l1)
    with torch.no_grad():
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(copied, name).copy_(torch.stack([getattr(sae, name) for sae in theirs]))
    ours_m, theirs_m = measure(ours, acts, acts), measure(copied, acts, acts)
    print(f"\n{args.kind} SAE, width {args.width}" + (f", k {args.k}" if args.kind == "topk" else f", l1 {args.l1}")
          + f", {args.steps} steps of {args.batch} rows, lr {args.lr}, on {n_rows} rows of d = {d_in}")
    print(f"{'member':>6} {'FVE ours':>9} {'FVE sae-lens':>13} {'L0 ours':>8} {'L0 sae-lens':>12} "
          f"{'dead ours':>9} {'dead sae-lens':>13}")
    for m in range(n_members):
        print(f"{m:>6} {ours_m['fve'][m]:>9.4f} {theirs_m['fve'][m]:>13.4f} {ours_m['l0'][m]:>8.2f} "
              f"{theirs_m['l0'][m]:>12.2f} {ours_m['dead'][m]:>9.3f} {theirs_m['dead'][m]:>13.3f}")
    print(f"time: ontogeny {our_time:.1f} s for all {n_members} SAEs as one ensemble; "
          f"sae-lens {their_time:.1f} s for {n_members} SAEs one after another "
          f"({torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
