"""A plain PyTorch training loop of your own, recorded with og.Recorder: one process per seed, one run.

    for seed in 0 1 2 3; do python examples/own_loop.py runs/own-loop --seed $seed & done; wait
    ontogeny analyze runs/own-loop && ontogeny report runs/own-loop

Modular addition (a + b mod 59) with a quadratic-activation MLP and weight decay (Gromov 2023), written as anyone
would in plain PyTorch: the seeds memorize the 40% of pairs they train on early and generalize to the rest much
later (grokking), each at its own step.
"""

import argparse

import torch
from torch import nn

import ontogeny as og

parser = argparse.ArgumentParser()
parser.add_argument("run_dir")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--steps", type=int, default=1500)
args = parser.parse_args()
torch.set_num_threads(1)

p = 59
a, b = torch.cartesian_prod(torch.arange(p), torch.arange(p)).T
x, y = torch.stack([a, b], 1), (a + b) % p
split = torch.randperm(p * p, generator=torch.Generator().manual_seed(0))  # the same split for every seed
train, test = split[: int(0.4 * p * p)], split[int(0.4 * p * p):]



class QuadraticMLP(nn.Module):
    """One hidden layer on the one-hot pair (an embedding per operand, summed), squared, then the logits."""

    def __init__(self, width: int = 256):
        super().__init__()
        self.embed_a, self.embed_b = nn.Embedding(p, width), nn.Embedding(p, width)
        self.out = nn.Linear(width, p, bias=False)
        for embed in (self.embed_a, self.embed_b):
            nn.init.normal_(embed.weight, std=(2 * p) ** -0.5)  # as a linear layer on the 2p-dim one-hot input

    def forward(self, x):
        return self.out((self.embed_a(x[:, 0]) + self.embed_b(x[:, 1])) ** 2)


torch.manual_seed(args.seed)
model = QuadraticMLP()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1.0, betas=(0.9, 0.98))
probes = {"train": og.ProbeSet((x[train], y[train]), ids=train.tolist()),
          "test": og.ProbeSet((x[test], y[test]), ids=test.tolist())}
with og.Recorder(args.run_dir, member={"seed": args.seed, "lr": 1e-2, "weight_decay": 1.0}, probes=probes,
                 every=og.log_spaced(per_octave=4, until=50, then_every=50)) as rec:
    for step in range(args.steps + 1):
        rec.step(step, model)  # at scheduled steps: every example's loss on both probe sets
        if step == args.steps:
            break
        loss = nn.functional.cross_entropy(model(x[train]), y[train])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 10 == 0:
            rec.log(step, {"train/batch_loss": loss.item()})
