"""Component ablation at grokking-transformer scale: 8 members x (4 heads + 512 neurons).

Run by hand, not in CI:

    python benchmarks/components_speed.py                    # 50 checkpoints (about 5 min on 2 cores)
    python benchmarks/components_speed.py --checkpoints 3    # a quick look

What it times is what `ontogeny analyze RUN --what components` does at each checkpoint with saved weights, minus
reading the weights: `component_importance` on the task's probe (p = 113: 10,000 of the 12,769 pairs, the
recipe's probe cap; the train and test splits share one pass), for Nanda et al.'s 1-layer transformer (d 128, 4
heads, d_mlp 512) with 8 members, mean ablation: one forward pass per head and the 512 neurons through their
linear path to the logits. Weights are perturbed between checkpoints so nothing is cached.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from ontogeny.analysis.components import component_importance
from ontogeny.models import make_model
from ontogeny.spec import load_spec
from ontogeny.tasks import make_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoints", type=int, default=50)
    parser.add_argument("--members", type=int, default=8)
    args = parser.parse_args()
    spec = load_spec("grokking-nanda", [f"seeds={args.members}"])
    task = make_task([spec.task] * args.members, [0] * args.members, spec.record.max_probe_examples)
    model = make_model(spec.model, task, list(range(args.members)))
    train, test = task.eval_splits()
    groups = {"train": train.member_mask, "test": test.member_mask}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}; "
          f"{args.members} members, probe {len(train.x)} examples, {args.checkpoints} checkpoints", flush=True)
    start = time.perf_counter()
    for checkpoint in range(args.checkpoints):
        with torch.no_grad():
            for param in model.parameters():
                param.mul_(1.001)
        found, _ = component_importance(model, train.x, train.y, task.loss, groups)
        if checkpoint == 0:
            print(f"  first checkpoint: {time.perf_counter() - start:.1f} s; components per member: "
                  + ", ".join(f"{kind} {next(iter(rises.values())).shape[1]}" for kind, _, rises in found), flush=True)
    total = time.perf_counter() - start
    print(f"{args.checkpoints} checkpoints: {total:.1f} s ({total / args.checkpoints:.2f} s per checkpoint); "
          f"target < 300 s for 50")


if __name__ == "__main__":
    main()
