"""A Hugging Face Trainer run recorded with ontogeny's callback: per-token losses of a held-out probe.

    python examples/hf_trainer.py runs/hf-trainer && ontogeny analyze runs/hf-trainer && ontogeny report runs/hf-trainer

A tiny Llama learns sequences of 12 random tokens repeated once: the first half cannot be predicted, the second
half only by copying from the first (an induction head, Olsson et al. 2022). The callback scores every token of 16
held-out sequences at log-spaced steps; the `repeat` and `random` subsets tell the two halves apart.
"""

import argparse
import math

import torch
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

import ontogeny as og
from ontogeny.integrations.hf import OntogenyCallback

parser = argparse.ArgumentParser()
parser.add_argument("run_dir")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--steps", type=int, default=600)
args = parser.parse_args()
VOCAB, HALF = 64, 12
LENGTH = 2 * HALF


def repeated(n: int, seed: int) -> torch.Tensor:
    first = torch.randint(0, VOCAB, (n, HALF), generator=torch.Generator().manual_seed(seed))
    return torch.cat([first, first], 1)  # [n, 24]


torch.manual_seed(args.seed)
model = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     num_key_value_heads=4, intermediate_size=128, max_position_embeddings=LENGTH))
tokens = repeated(4096, seed=1)
train = Dataset.from_dict({"input_ids": tokens.tolist(), "labels": tokens.tolist()})
callback = OntogenyCallback(args.run_dir, member={"seed": args.seed}, every=og.log_spaced(per_octave=4, until=100,
                                                                                         then_every=50),
                            chance_loss=math.log(VOCAB),  # a uniform guess: the floor of age of acquisition
                            probes={"heldout": og.ProbeSet.tokens(repeated(16, seed=2), subsets={
                                # example id = sequence * 24 + position (position >= 1 is predicted)
                                "random": [s * LENGTH + q for s in range(16) for q in range(1, HALF)],
                                "repeat": [s * LENGTH + q for s in range(16) for q in range(HALF, LENGTH)]})})
trainer = Trainer(model=model, args=TrainingArguments(output_dir=f"{args.run_dir}-trainer", max_steps=args.steps,
                                                      per_device_train_batch_size=32, learning_rate=2e-3,
                                                      logging_steps=25, save_strategy="no", report_to=[],
                                                      seed=args.seed, use_cpu=True, disable_tqdm=True),
                  train_dataset=train, callbacks=[callback])
trainer.train()
