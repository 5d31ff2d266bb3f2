"""Checkpoint-suite ingest speed: tokens scored per second on a Pythia-14m-sized model, ontogeny's path beside a plain
Hugging Face loop, and the wall time of ingesting a whole suite.

    python benchmarks/ingest_speed.py                      # scoring speed, and a 154-checkpoint ingest
    python benchmarks/ingest_speed.py --checkpoints 8      # a shorter suite (the per-revision time scales linearly)

The model is GPT-NeoX with Pythia-14m's configuration and random weights (the hub is not reachable here). The suite
on disk holds two real checkpoints; the other revision folders link to them, so a 154-revision ingest needs only
two checkpoints of disk while every revision is loaded, hashed and scored for real.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

PYTHIA_14M = dict(vocab_size=50304, hidden_size=128, num_hidden_layers=6, num_attention_heads=4, intermediate_size=512,
                  rotary_pct=0.25, max_position_embeddings=2048, use_parallel_residual=True, layer_norm_eps=1e-5)


def flops_per_token(model, context: int) -> float:
    """Matmul FLOPs of scoring one token: 2 x every weight matrix it passes (not the input embedding lookup),
    plus attention's scores and weighted sum over an average context / 2 positions."""
    config = model.config
    d, layers = config.hidden_size, config.num_hidden_layers
    per_layer = 4 * d * d + 2 * d * config.intermediate_size
    attention = 2 * 2 * d * (context / 2)
    return 2 * (layers * per_layer + d * config.vocab_size) + layers * attention


def plain_scores(model, tokens: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The baseline: what one would write by hand, per-token cross entropy and top-1 correctness of batches of
    sequences (the same two numbers ontogeny records per token)."""
    losses, corrects = [], []
    with torch.inference_mode():
        for start in range(0, len(tokens), batch):
            part = tokens[start:start + batch]
            logits = model(part).logits[:, :-1]
            target = part[:, 1:]
            losses.append(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                                            reduction="none"))
            corrects.append((logits.argmax(-1) == target).reshape(-1))
    return torch.cat(losses), torch.cat(corrects)


def ontogeny_scores(model, tokens: torch.Tensor, batch: int):
    from ontogeny.evaluation.evaluate import Evaluator, Probe
    from ontogeny.probe_sets import ProbeSet, causal_lm

    class NullWriter:
        def append(self, table, columns):
            pass

    probe = ProbeSet.tokens(tokens, batch_size=batch, name="probe")
    adapter = lambda m, b: tuple(t.reshape(1, -1) for t in causal_lm(m, b))  # noqa: E731
    evaluator = Evaluator(NullWriter(), [0], [Probe("probe", probe.ids, probe.batches(torch.device("cpu")), None,
                                                    probe.subsets, adapter=adapter)])
    with torch.inference_mode():
        return evaluator.evaluate(0, model)


def check_same_scores(model, tokens: torch.Tensor, batch: int) -> None:
    """Both paths give the same losses and correctness (to float tolerance)."""
    from ontogeny.probe_sets import causal_lm

    loss, correct = plain_scores(model, tokens, batch)
    with torch.inference_mode():
        ours = [causal_lm(model, tokens[i:i + batch]) for i in range(0, len(tokens), batch)]
    torch.testing.assert_close(torch.cat([o[0] for o in ours]), loss, rtol=1e-5, atol=1e-5)
    assert torch.equal(torch.cat([o[1] for o in ours]), correct)


def timed(function, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=16_384, help="probe size in tokens")
    parser.add_argument("--context", type=int, default=128, help="tokens per probe sequence")
    parser.add_argument("--batch", type=int, default=8, help="sequences per forward pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpoints", type=int, default=154, help="revisions in the suite ingest (0: skip it)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(**PYTHIA_14M)).eval()
    tokens = torch.randint(0, PYTHIA_14M["vocab_size"], (args.tokens // args.context, args.context))
    scored = tokens.shape[0] * (tokens.shape[1] - 1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}")
    print(f"model: GPT-NeoX, Pythia-14m's config, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters; "
          f"probe {tokens.shape[0]} x {tokens.shape[1]} tokens ({scored} scored)")
    plain_scores(model, tokens[: args.batch], args.batch)  # warm up
    check_same_scores(model, tokens[: 2 * args.batch], args.batch)
    base = timed(lambda: plain_scores(model, tokens, args.batch), args.repeats)
    ours = timed(lambda: ontogeny_scores(model, tokens, args.batch), args.repeats)
    flops = flops_per_token(model, args.context)
    for name, seconds in (("plain loop", base), ("ontogeny", ours)):
        print(f"  {name:<10} {scored / seconds:8,.0f} tokens/s  {scored * flops / seconds / 1e9:6.1f} GFLOP/s "
              f"({flops / 1e6:.1f} MFLOP per token)")
    print(f"  ontogeny / plain: {base / ours:.2f}x (best of {args.repeats})")
    if args.checkpoints:
        ingest_suite(model, tokens, args)


def ingest_suite(model, tokens: torch.Tensor, args) -> None:
    import numpy as np
    from transformers import GPTNeoXForCausalLM

    import ontogeny as og
    from ontogeny.suites.sources import PYTHIA_REVISIONS

    with tempfile.TemporaryDirectory(prefix="ontogeny-ingest-") as root:
        suite = Path(root) / "suite"
        names = PYTHIA_REVISIONS[: args.checkpoints]
        for index in range(2):  # two real checkpoints; the revision folders link to them
            torch.manual_seed(index)
            GPTNeoXForCausalLM(model.config).save_pretrained(suite / f"real{index}")
        for i, name in enumerate(names):
            (suite / name).symlink_to(suite / f"real{i % 2}", target_is_directory=True)
        probe = Path(root) / "probe.npy"
        np.save(probe, tokens.numpy())
        start = time.perf_counter()
        og.ingest(str(suite), probe, out=Path(root) / "run", revisions=names, batch_size=args.batch)
        seconds = time.perf_counter() - start
        print(f"suite ingest: {len(names)} revisions x {tokens.numel()} probe tokens: {seconds:.0f} s "
              f"({seconds / len(names):.2f} s per revision: load, hash, score, write, commit)")


if __name__ == "__main__":
    main()
