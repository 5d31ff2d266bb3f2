"""How long `ontogeny serve` takes to show the page of a run with many members (a seed x learning-rate sweep).

Run by hand, not in CI (about a minute):

    python benchmarks/serve_run_page.py                   # 10,000 members
    python benchmarks/serve_run_page.py --members 1000

The run is written straight to the store, as a loop of one's own would write it: `--members` members in 10 grid
points (optim.lr), 40 log-spaced checkpoints, train and test loss and accuracy plus two test subsets (3.2M scalar
rows at 10,000 members). Timed: the report page the first time it is asked for (made from the tables) and a
second time (from the server's cache), through the real server over HTTP. Target: under 2 s at 10,000 members.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

from ontogeny.report.serve import make_server
from ontogeny.store import ShardWriter
from ontogeny.store.create import create_run, update_meta

NAMES = ("train/loss", "train/acc", "test/loss", "test/acc", "test/even/acc", "test/odd/acc")


def write_run(path: Path, n_members: int, n_steps: int = 40, seed: int = 0) -> int:
    """A finished run of `n_members` sigmoid-shaped accuracy curves in 10 lr grid points; returns its scalar rows."""
    rng = np.random.default_rng(seed)
    create_run(path, {"kind": "synthetic"}).release()
    steps = np.unique(np.geomspace(1, 10_000, n_steps).astype(int))
    members = np.arange(n_members)
    lr = np.array([1e-3 * 2 ** (i % 10) for i in members])
    table = pd.DataFrame({"member": members, "ensemble": members // 1000, "init_seed": members // 10, "data_seed": 0,
                          "status": "ok", "diverged_step": None, "optim.lr": lr})
    onset = rng.uniform(2, 3.5, n_members)  # log10 of each member's transition step
    rows = 0
    with ShardWriter(path, background=False) as writer:
        writer.put("members", table)
        for name in NAMES:
            rise = 1 / (1 + np.exp(-(np.log10(steps)[None] - onset[:, None]) * 6))  # [members, steps]
            value = rise if name.endswith("acc") else 3 * (1 - rise) + 0.01
            value = value + rng.normal(0, 0.01, value.shape)
            writer.append("scalars", {"member": np.repeat(members, len(steps)), "step": np.tile(steps, n_members),
                                      "name": name, "value": value.ravel()})
            rows += value.size
        writer.commit()
    update_meta(path, finished="now")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        runs = Path(scratch)
        started = time.perf_counter()
        rows = write_run(runs / "sweep", args.members)
        print(f"wrote {args.members:,} members, {rows:,} scalar rows in {time.perf_counter() - started:.1f} s",
              flush=True)
        server = make_server(runs, port=0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/run/sweep/"
        try:
            for attempt in ("first (made from the tables)", "second (cached)"):
                started = time.perf_counter()
                with urllib.request.urlopen(url, timeout=600) as response:
                    size = len(response.read())
                print(f"run page of {args.members:,} members, {attempt}: {time.perf_counter() - started:.2f} s, "
                      f"{size / 1e6:.1f} MB", flush=True)
        finally:
            server.shutdown()
            server.server_close()


if __name__ == "__main__":
    main()
