"""A user's own training loop recorded with og.Recorder, run as a process by test_recorder.py.

python recorder_loop.py RUN_DIR SEED STEPS: trains a tiny MLP on data drawn per (seed, step), saves its own
checkpoint every 8 steps (after rec.commit()), and on restart resumes from it: the checkpoint taken at the top of
step s covers the rows through s - 1, so the recorder reopens with resume_step=s - 1 and the loop redoes step s.
"""

import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

import ontogeny as og

torch.set_num_threads(1)
run_dir, seed, steps = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
pause = float(os.environ.get("LOOP_PAUSE", "0"))
checkpoint = run_dir.parent / f"loop-{run_dir.name}-{seed}.pt"

probe_gen = torch.Generator().manual_seed(1234)
x_test = torch.randn(64, 6, generator=probe_gen)
y_test = (x_test[:, :2].sum(1) > 0).long()

torch.manual_seed(seed)
model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 2))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
start = 0
if checkpoint.exists():
    state = torch.load(checkpoint)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    start = state["step"]

rec = og.Recorder(run_dir, member={"member": seed, "seed": seed, "lr": 0.1},
                  probes={"test": og.ProbeSet((x_test, y_test), subsets={"first": range(8)})},
                  every=og.log_spaced(per_octave=2, until=16, then_every=16),
                  resume_step=start - 1 if checkpoint.exists() else None)
for step in range(start, steps + 1):
    if step and step % 8 == 0 and step != start:
        rec.commit()  # the rows so far are durable before the checkpoint that would skip them on resume
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}, f"{checkpoint}.tmp")
        os.replace(f"{checkpoint}.tmp", checkpoint)
    rec.step(step, model)
    if step == steps:
        break
    data = torch.Generator().manual_seed(seed * 100_000 + step)
    x = torch.randn(32, 6, generator=data)
    y = (x[:, :2].sum(1) > 0).long()
    loss = nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    rec.log(step, {"train/loss": loss.item()})
    time.sleep(pause)
rec.close()
