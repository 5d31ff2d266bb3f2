"""A LightningModule recorded with ontogeny's Lightning callback: one process per seed, one run.

    for seed in 0 1 2 3; do python examples/lightning_module.py runs/lightning --seed $seed & done; wait
    ontogeny analyze runs/lightning && ontogeny report runs/lightning

The modular-addition MLP of examples/own_loop.py (a + b mod 59, quadratic activation, weight decay: Gromov 2023) as a
`lightning.LightningModule`. The callback evaluates every example of the probe sets at log-spaced steps, records the
numbers the module logs (`self.log`), and commits whenever Lightning saves a checkpoint.
"""

import argparse

import lightning
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ontogeny as og
from ontogeny.integrations.lightning import OntogenyCallback

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


class QuadraticMLP(lightning.LightningModule):
    """One hidden layer on the one-hot pair (an embedding per operand, summed), squared, then the logits."""

    def __init__(self, width: int = 256):
        super().__init__()
        self.embed_a, self.embed_b = nn.Embedding(p, width), nn.Embedding(p, width)
        self.out = nn.Linear(width, p, bias=False)
        for embed in (self.embed_a, self.embed_b):
            nn.init.normal_(embed.weight, std=(2 * p) ** -0.5)

    def forward(self, x):
        return self.out((self.embed_a(x[:, 0]) + self.embed_b(x[:, 1])) ** 2)

    def training_step(self, batch, batch_idx):
        inputs, targets = batch
        loss = nn.functional.cross_entropy(self(inputs), targets)
        self.log("batch_loss", loss)  # recorded as the scalar "batch_loss"
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-2, weight_decay=1.0, betas=(0.9, 0.98))


torch.manual_seed(args.seed)
model = QuadraticMLP()
full_batch = DataLoader(TensorDataset(x[train], y[train]), batch_size=len(train))  # one step per epoch
probes = {"train": og.ProbeSet((x[train], y[train]), ids=train.tolist()),
          "test": og.ProbeSet((x[test], y[test]), ids=test.tolist())}
callback = OntogenyCallback(args.run_dir, member={"seed": args.seed, "lr": 1e-2, "weight_decay": 1.0}, probes=probes,
                            every=og.log_spaced(per_octave=4, until=50, then_every=50))
trainer = lightning.Trainer(max_steps=args.steps, callbacks=[callback], accelerator="cpu", logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
trainer.fit(model, full_batch)
