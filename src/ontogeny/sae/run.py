"""`ontogeny sae`: sparse autoencoders (or transcoders) on every member of a run, several SAE seeds each, as a run.

For each requested checkpoint of the source run (its saved weights; step 0 is rebuilt from the init seeds, so the
random-init control needs no saved weights) every model member's activations at a site are read on an evaluation
split, and S SAE seeds per model member train together as one ensemble (members = model member x SAE seed). The new
run holds per SAE member its training curves (`sae/mse`, `sae/fve`, `sae/l0`, `sae/dead`), the model's loss with the
site replaced by the reconstruction (`sae/downstream_loss`, beside `sae/clean_loss`, `sae/zero_loss` and
`sae/loss_recovered`), its weights, and the cross-seed agreement of the decoders: `sae_agreement` (each pair of
seeds of one model member: `shared`, the share of latents whose decoder directions match one to one at cosine
>= 0.7; `shared_both`, Paulo & Belrose's criterion, encoder and decoder each matched above 0.7),
`sae_agreement_curve` (the decoder share over thresholds) and `sae_stability` (per seed, the share of its latents at
each checkpoint matched in its SAE at the last checkpoint). Everything is trained before anything is written, so a
failure leaves no run behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch

from ..analysis.sae import THRESHOLD
from ..members import ensembles, expand
from ..rebuild import run_ensembles, save_member_weights
from ..seeds import generator
from ..store import Run, ShardWriter, check_out, create_run, member_row, members_frame, write_table
from .matching import agreement_curve, match, shared_both_share, shared_share
from .model import KINDS, EnsembleSAE, train_saes
from .sites import collect, default_site, downstream_loss, row_index, site_names

THRESHOLDS = np.round(np.linspace(0.1, 0.95, 18), 2)


def train_run_saes(source: str | Path | Run, out: str | Path, *, at: list[int] | None = None, control: bool = True,
                   site: str | None = None, seeds: int = 8, kind: str = "topk", width: int | None = None, k: int = 8,
                   l1: float = 1.0, steps: int = 2000, batch_size: int = 256, lr: float = 1e-3,
                   split: str | None = None, max_rows: int = 20_000, overwrite: bool = False,
                   progress: Callable[[str], None] | None = None) -> Run:
    """Train `seeds` SAEs of `kind` per member of `source` at the checkpoints `at` (default: the last one with
    saved weights) and, with `control`, at step 0 (random init); write them as the run `out` and return it.

    `site`: see `sites.site_names` (default: an MLP's last hidden layer, a transformer's last residual stream);
    `width`: latents (default 4x the site's width); `split`: the evaluation split whose inputs are read (default
    "train" where the task has one). At most `max_rows` rows (a fixed sample) train each SAE. ValueError (one line)
    for a site, step or split that does not exist, or a run whose models cannot be rebuilt."""
    run = source if isinstance(source, Run) else Run(source)
    steps_at = _steps(run, at, control)
    check_out(out, reads=[run.path])  # before training: --overwrite must never delete the run it reads
    if not overwrite and Path(out).exists() and any(Path(out).iterdir()):
        raise ValueError(f"--out {out}: not empty (give --overwrite to replace an earlier run there)")
    if kind not in KINDS:
        raise ValueError(f"--kind {kind!r}: unknown (known: {', '.join(KINDS)})")
    if seeds < 2:
        raise ValueError(f"--seeds {seeds}: cross-seed agreement needs at least 2 SAE seeds")
    rules = (("--width", width, width is None or width >= 1, "at least 1"), ("--k", k, k >= 1, "at least 1"),
             ("--steps", steps, steps >= 1, "at least 1"), ("--l1", l1, l1 >= 0, ">= 0"), ("--lr", lr, lr > 0, "> 0"))
    for name, value, ok, rule in rules:  # NaN fails every comparison, so it is refused too
        if not ok:
            raise ValueError(f"{name} {value}: must be {rule}")
    tables, members = [], []
    total, started = len(list(ensembles(expand(run.spec)))) * len(steps_at), time.monotonic()
    for ensemble in run_ensembles(run):
        model, task, group = ensemble.model, ensemble.task, ensemble.members
        chosen = site or default_site(model)
        if chosen not in site_names(model):
            raise ValueError(f"--site {chosen!r}: no such site in this {group[0].spec.model.name} (sites: "
                             f"{', '.join(site_names(model))})")
        probe = _split(task, split)
        rows = _row_sample(model, probe.x, chosen, max_rows)
        for step in steps_at:
            try:
                ensemble.load(step)
            except ValueError as err:
                raise ValueError(f"--at {step}: {str(err).split(': ', 1)[1]}") from None
            if progress:
                done, elapsed = len(tables), time.monotonic() - started
                left = f", about {elapsed / done * (total - done):,.0f} s left" if done else ""
                progress(f"step {step} ({done + 1}/{total}): {len(group)} members x {seeds} SAE seeds at {chosen}, "
                         f"{elapsed:,.0f} s so far{left}")
            trained = _train(model, task.loss, probe, chosen, rows, step, group, seeds=seeds, kind=kind, width=width,
                             k=k, l1=l1, steps=steps, batch_size=batch_size, lr=lr)
            tables.append(trained)
            members.append(trained["members"].assign(ensemble=len(members)))
    return _write(run, out, tables, members, overwrite=overwrite,
                  producer={"kind": "sae", "source": str(run.path), "site": site or "default", "sae_kind": kind,
                            "steps": steps, "at": steps_at, "seeds": seeds})


def _steps(run: Run, at: list[int] | None, control: bool) -> list[int]:
    if not run.has_spec:
        raise ValueError(f"{run.path}: made by {run.producer.get('kind', '?')}, not `ontogeny run`: the SAE command "
                         "needs the spec to rebuild the models")
    saved = sorted(set(int(s) for s in run.checkpoints().step))
    if at is None:
        if not saved:
            raise ValueError(f"{run.path}: no saved weights (train with --set record.weights_every=N, or give --at 0 "
                             "for the random-init model)")
        at = [saved[-1]]
    for step in at:
        if step != 0 and step not in saved:
            raise ValueError(f"--at {step}: no saved weights at that step in {run.path} (saved at: "
                             f"{', '.join(map(str, saved)) or 'none'})")
    return sorted(set(at) | ({0} if control else set()))


def _split(task, name: str | None) -> SimpleNamespace:
    """The split's inputs x and targets y; where members have their own examples (member_mask), those in every
    member's split (the same set when the members share a split seed)."""
    splits = {split.name: split for split in task.eval_splits()}
    name = name or ("train" if "train" in splits else next(iter(splits)))
    if name not in splits:
        raise ValueError(f"--split {name!r}: no such split (splits: {', '.join(splits)})")
    split = splits[name]
    if split.member_mask is None:
        return SimpleNamespace(x=split.x, y=split.y)
    keep = split.member_mask.all(0)  # [N]
    if not bool(keep.any()):
        raise ValueError(f"--split {name!r}: no example is in every member's {name} split (give --split)")
    return SimpleNamespace(x=split.x[keep], y=split.y[keep])


def _row_sample(model, x: torch.Tensor, site: str, max_rows: int) -> torch.Tensor | None:
    """A fixed sorted sample of at most max_rows of collect's rows at `site` (None: all of them)."""
    total = len(row_index(model, x, site)[0])
    if total <= max_rows:
        return None
    return torch.randperm(total, generator=generator("sae-rows", 0))[:max_rows].sort().values


def _train(model, loss: str, probe, site: str, rows, step: int, group, *, seeds: int, kind: str, width: int | None,
           k: int, l1: float, steps: int, batch_size: int, lr: float) -> dict:
    transcoder = kind == "transcoder"
    inputs, targets = collect(model, probe.x, site, transcoder=transcoder)  # [M, R, d_in], [M, R, d_out]
    if rows is not None:
        inputs, targets = inputs[:, rows], (targets[:, rows] if transcoder else None)
        targets = inputs if targets is None else targets
    n_models, d_in, d_out = inputs.shape[0], inputs.shape[2], targets.shape[2]
    sae_seeds = list(range(seeds)) * n_models  # member e = (model e // S, seed e % S)
    sae = EnsembleSAE(d_in, 4 * d_out if width is None else width, sae_seeds, kind=kind, k=k, l1=l1,
                      d_out=d_out if transcoder else None)
    x = inputs[:, None].expand(-1, seeds, -1, -1).flatten(0, 1)  # [E, R, d_in]: each model member's rows, S times
    y = x if targets is inputs else targets[:, None].expand(-1, seeds, -1, -1).flatten(0, 1)
    sae.init_from(y)
    curves = []
    checkpoints = sorted({0, steps, *np.unique(np.geomspace(1, max(steps, 1), 12).astype(int)).tolist()})
    train_saes(sae, x, y, steps=steps, batch_size=batch_size, lr=lr, data_seeds=sae_seeds, checkpoints=checkpoints,
               on_checkpoint=lambda s, values: curves.append((s, values)))
    ids = [(m, s) for m in group for s in range(seeds)]
    scalars = [{"sae_member": e, "step": s, "name": f"sae/{name}", "value": float(values[name][e])}
               for s, values in curves for name in values for e in range(len(ids))]
    for name, value in _downstream(model, loss, probe, site, sae, seeds, transcoder).items():
        scalars += [{"sae_member": e, "step": steps, "name": f"sae/{name}", "value": float(value[e])}
                    for e in range(len(ids))]
    members = pd.DataFrame([{"sae_member": e, "init_seed": s, "data_seed": s, "source_member": m.member,
                             "source_init_seed": m.init_seed, "source_data_seed": m.data_seed, "source_step": step,
                             "site": site, "kind": kind, "width": sae.width, "k": k if kind != "relu-l1" else None,
                             "l1": l1 if kind == "relu-l1" else None, "rows": x.shape[1]}
                            for e, (m, s) in enumerate(ids)])
    decoders = sae.W_dec.detach().view(n_models, seeds, sae.width, d_out)
    encoders = sae.W_enc.detach().transpose(1, 2).reshape(n_models, seeds, sae.width, -1)  # a latent's row
    return {"members": members, "scalars": pd.DataFrame(scalars), "sae": sae, "decoders": decoders,
            "encoders": encoders,
            "source_step": step, "source_members": [m.member for m in group]}


@torch.no_grad()
def _downstream(model, loss: str, probe, site: str, sae: EnsembleSAE, seeds: int, transcoder: bool) -> dict:
    """Per SAE member [E]: the model's loss with the site replaced by that SAE's output, the clean and the
    zero-ablated loss of its model member, and the share of the zero ablation's loss increase the SAE recovers."""
    clean = downstream_loss(model, loss, probe.x, probe.y, site, transcoder=transcoder)  # [M]
    def zeros(rows):  # the site's rows (a transcoder's output) zeroed
        return rows.new_zeros(*rows.shape[:-1], sae.d_out)

    zero = downstream_loss(model, loss, probe.x, probe.y, site, zeros, transcoder=transcoder)
    spliced = torch.empty(sae.n_members)
    for s in range(seeds):
        one = _members(sae, list(range(s, sae.n_members, seeds)))  # seed s of every model member

        def replace(rows, one=one):  # rows [M, R, d_in] (a transcoder's: the layer's input) -> its output [M, R, d_out]
            return one(rows.float())[0]

        spliced[s::seeds] = downstream_loss(model, loss, probe.x, probe.y, site, replace, transcoder=transcoder)
    clean, zero = clean.repeat_interleave(seeds), zero.repeat_interleave(seeds)
    recovered = (zero - spliced) / (zero - clean)
    return {"downstream_loss": spliced, "clean_loss": clean, "zero_loss": zero, "loss_recovered": recovered}


def _members(sae: EnsembleSAE, index: list[int]) -> EnsembleSAE:
    """The SAE members `index` as an ensemble of their own (same weights)."""
    part = EnsembleSAE(sae.d_in, sae.width, [sae.seeds[i] for i in index], kind=sae.kind, k=sae.k, l1=sae.l1,
                       d_out=sae.d_out if sae.kind == "transcoder" else None)
    part.load_state_dict({name: value[index] for name, value in sae.state_dict().items()})
    return part


TABLES = ("sae_agreement", "sae_agreement_curve", "sae_stability")  # what an SAE run holds beside the recorded ones


def agreement_tables(trained: list[dict]) -> dict[str, pd.DataFrame]:
    """Cross-seed agreement per model member and checkpoint, and each seed's stability toward the last checkpoint."""
    pairs, curves, stability = [], [], []
    last = max(t["source_step"] for t in trained)
    final = {(m, t["source_step"]): t["decoders"][i] for t in trained for i, m in enumerate(t["source_members"])}
    for t in trained:
        decoders, encoders = t["decoders"], t["encoders"]  # [M, S, W, d_out], [M, S, W, d_in]
        for i, member in enumerate(t["source_members"]):
            cosines = []
            for a in range(decoders.shape[1]):
                for b in range(a + 1, decoders.shape[1]):
                    matched = match(decoders[i, a], decoders[i, b]).numpy()
                    cosines.append(matched)
                    both = shared_both_share((encoders[i, a], encoders[i, b]), (decoders[i, a], decoders[i, b]),
                                             THRESHOLD)
                    pairs.append({"source_member": member, "source_step": t["source_step"], "seed_a": a,
                                  "seed_b": b, "shared": shared_share(matched, THRESHOLD), "shared_both": both,
                                  "mean_cosine": float(matched.mean())})
            curve = np.mean([agreement_curve(c, THRESHOLDS) for c in cosines], axis=0)
            curves += [{"source_member": member, "source_step": t["source_step"], "threshold": float(h),
                        "shared": float(v)} for h, v in zip(THRESHOLDS, curve)]
            for seed in range(decoders.shape[1]):
                matched = match(decoders[i, seed], final[member, last][seed]).numpy()
                stability.append({"source_member": member, "source_step": t["source_step"], "seed": seed,
                                  "shared_with_last": shared_share(matched, THRESHOLD)})
    return {"sae_agreement": pd.DataFrame(pairs), "sae_agreement_curve": pd.DataFrame(curves),
            "sae_stability": pd.DataFrame(stability)}


def _write(run: Run, out: str | Path, trained: list[dict], members: list[pd.DataFrame], *, overwrite: bool,
           producer: dict) -> Run:
    settings = pd.concat(members, ignore_index=True).drop(columns="sae_member").to_dict("records")
    table = members_frame([member_row(member, "ok", **row) for member, row in enumerate(settings)])
    offsets = np.cumsum([0] + [len(t["members"]) for t in trained])  # ensemble i's SAE member e is offsets[i] + e
    agreement = agreement_tables(trained)
    lock = create_run(out, producer, overwrite=overwrite, reads=[run.path])
    try:
        root = Path(out)
        with ShardWriter(root, background=False) as writer:
            writer.put("members", table)
            for offset, t in zip(offsets, trained):
                for (e, name), rows in t["scalars"].groupby(["sae_member", "name"]):
                    writer.append("scalars", {"member": int(offset + e), "step": rows.step.to_numpy(), "name": name,
                                              "value": rows.value.to_numpy()})
                params = {name: p.detach().cpu() for name, p in t["sae"].named_parameters()}
                save_member_weights(writer, root, [int(offset + e) for e in range(len(t["members"]))],
                                    int(t["scalars"].step.max()), params)
            writer.commit()
        for name, frame in agreement.items():
            write_table(root, name, frame)
    finally:
        lock.release()
    return Run(out)
