"""Run a spec: lay out the run directory, train its ensembles one after another, resume a killed run."""

from __future__ import annotations

import json
import platform
import shutil
import time
from pathlib import Path

import pandas as pd
import torch

from .. import __version__
from ..exceptions import ResumeError, SpecError
from ..spec import Spec, load_spec
from ..store import ShardWriter, open_run, write_table
from .loop import EnsembleTrainer
from .members import Member, ensembles, expand, hyperparameters


def run(spec: Spec | str | Path, *, overrides: list[str] | dict | None = None, out: str | Path | None = None,
        resume: bool = False, overwrite: bool = False, device: str | None = None, commit_seconds: float = 30.0,
        progress=None):
    """Train every member of `spec` into the run directory `out` (default `runs/<spec.name>`); return its `Run`.

    With `resume=True`, `out` must hold a killed run: it continues from the last saved state.
    `progress`, if given, gets `start(n_ensembles, steps, members)`, `step(ensemble, step)` and
    `checkpoint(ensemble, step, scalars, trainer)` calls.
    """
    if resume:
        if out is None:
            raise ResumeError("--resume needs the run directory")
        out = Path(out)
        if not (out / "spec.toml").exists():
            raise ResumeError(f"{out}: not a run directory (no spec.toml)")
        if overrides:
            raise ResumeError(f"{out}: a resumed run keeps its spec; drop the overrides")
        spec = load_spec(out / "spec.toml")
    else:
        if not isinstance(spec, Spec):
            spec = load_spec(spec, overrides)
        elif overrides:
            raise SpecError("overrides apply to a spec file or recipe name, not a Spec object")
        if device:
            spec = _with_device(spec, device)
        out = Path(out) if out is not None else Path("runs") / spec.name
        _prepare_dir(out, overwrite)
    members = expand(spec)
    groups = ensembles(members)
    states = _load_states(out, len(groups))
    committed = max((state["committed_seq"] for state in states if state), default=0)
    with ShardWriter(out, committed_seq=committed) as writer:
        diverged = _train_all(out, spec, members, groups, states, writer, resume, commit_seconds, progress)
    _write_members(out, members, diverged, finished=True)
    _write_meta(out, spec, finished=time.time())
    return open_run(out)


def _train_all(out, spec, members, groups, states, writer, resume, commit_seconds, progress) -> dict[int, int]:
    """Train the ensembles one after another; return {member: diverged step}."""
    if not resume:
        (out / "spec.toml").write_text(spec.to_toml())
        _write_meta(out, spec, started=time.time())
    _write_members(out, members, {})
    if progress:
        progress.start(len(groups), spec.steps, members)
    diverged: dict[int, int] = {}
    for index, group in enumerate(groups):
        state = states[index]
        trainer = EnsembleTrainer(group, device=spec.device)
        if state:
            trainer.load_state_dict(state["trainer"])
        if not (state and state["done"]):
            _write_subsets(out, trainer, index)
            trainer.train(writer, out, _state_path(out, index), commit_seconds=commit_seconds,
                          on_step=progress and (lambda step, i=index: progress.step(i, step)),
                          on_checkpoint=progress and (lambda step, s, t, i=index: progress.checkpoint(i, step, s, t)))
        for member, step in zip(group, trainer.diverged_step):
            if step is not None:
                diverged[member.member] = step
    return diverged


def _with_device(spec: Spec, device: str) -> Spec:
    """`spec` with another device (validated)."""
    from ..spec import from_dict

    data = spec.to_dict()
    data["device"] = device
    return from_dict(data)


def _prepare_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise SpecError(f"{out} already holds a run: resume it with --resume, or pass --overwrite or another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _state_path(out: Path, index: int) -> Path:
    return out / "state" / f"ensemble-{index:04d}.pt"


def _load_states(out: Path, n: int) -> list[dict | None]:
    (out / "state").mkdir(parents=True, exist_ok=True)
    states = []
    for index in range(n):
        path = _state_path(out, index)
        states.append(torch.load(path, weights_only=False) if path.exists() else None)
    return states


def _write_meta(out: Path, spec: Spec, *, started: float | None = None, finished: float | None = None) -> None:
    path = out / "meta.json"
    meta = json.loads(path.read_text()) if path.exists() else {}
    if started is not None:
        meta.update(ontogeny=__version__, torch=torch.__version__, python=platform.python_version(),
                    device=spec.device, host=platform.node(), threads=torch.get_num_threads(),
                    started=time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)))
    if finished is not None:
        meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(finished))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(path)


def _write_members(out: Path, members: list[Member], diverged: dict[int, int], finished: bool = False) -> None:
    rows = []
    for m in members:
        status = "diverged" if m.member in diverged else ("ok" if finished else "running")
        rows.append({"member": m.member, "ensemble": m.ensemble, "init_seed": m.init_seed,
                     "data_seed": m.data_seed, "status": status, "diverged_step": diverged.get(m.member),
                     **hyperparameters(m.spec)})
    frame = pd.DataFrame(rows)
    frame["diverged_step"] = frame["diverged_step"].astype("Int64")
    write_table(out, "members", frame)


def _write_subsets(out: Path, trainer: EnsembleTrainer, index: int) -> None:
    """Named eval subsets of the first ensemble (all ensembles of one run share a task family)."""
    if index:
        return
    rows = {"split": [], "example": [], "subset": []}
    for split in trainer.task.eval_splits():
        for subset, mask in split.subsets.items():
            ids = split.example[mask].tolist()
            rows["split"] += [split.name] * len(ids)
            rows["example"] += ids
            rows["subset"] += [subset] * len(ids)
    write_table(out, "subsets", pd.DataFrame(rows))
