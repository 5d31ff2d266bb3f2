"""Run a spec: make the run directory, train its ensembles one after another, resume or extend a stopped run.

Each ensemble writes through its own writer (`ensemble-0000`, ...), which commits its rows, the members' statuses
and the training state together. The whole run is held under the run lock while `ontogeny run` works on it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

from ..exceptions import ResumeError, SpecError
from ..spec import Spec, from_dict, load_spec, spec_hash, trained_under
from ..store import (TEMP_SUFFIX, WEIGHTS, FileLock, Layout, ShardWriter, create_run, now, one_line_when_disk_full,
                     open_run, read_commits, update_meta, write_file)
from .ensemble import WORKER_EXIT_SECONDS, load_state, train_ensemble, writer_name
from ..members import Member, ensembles, expand, member_rows
from .plan import Plan, make_plan, time_plan, worker_memory


def run(spec: Spec | str | Path | None = None, *, overrides: list[str] | dict | None = None,
        out: str | Path | None = None, resume: bool = False, overwrite: bool = False, extend_to: int | None = None,
        device: str | None = None, commit_seconds: float = 30.0, backend: str = "sequential",
        address: str | None = None, max_parallel: int | None = None, max_members: int | None = None,
        gpus_per_task: float | None = None, progress=None, trackers: list[str] | tuple[str, ...] = ()):
    """Train every member of `spec` into the run directory `out` (default `runs/<spec.name>`); return its `Run`.

    With `resume=True`, `out` must hold a stopped run: it continues from each ensemble's last commit, with the spec
    it started with (an edited spec.toml is refused). `extend_to=N` (with `resume`) trains a run on to N steps,
    as if it had been given N steps from the start (constant learning-rate schedules only).
    `backend="ray"` trains the ensembles as Ray tasks (`address`: an existing cluster, else a local one;
    `max_parallel` tasks at once; `gpus_per_task` of a GPU each with device cuda). `max_members` caps an ensemble's
    members (default: as many as fit a worker's memory; see train/plan.py).
    `progress`, if given, gets `start(n_ensembles, steps, members)`, then `step(ensemble, step)` and
    `checkpoint(ensemble, step, scalars, trainer)` calls (sequential) or `overall(steps_done, running, failed)`
    calls (Ray). `trackers` ("tensorboard", "mlflow", "wandb") get the committed curves while the run trains, one
    tracker run per member, beside the run (`RUN-tensorboard`; see integrations/trackers.py).
    """
    if commit_seconds < 0:
        raise SpecError(f"--commit-seconds must be >= 0 (got {commit_seconds})")
    if backend not in ("sequential", "ray"):
        raise SpecError(f"--backend must be 'sequential' or 'ray' (got {backend!r})")
    if (address or max_parallel or gpus_per_task) and backend != "ray":
        raise SpecError("--address, --max-parallel and --gpus-per-task go with --backend ray")
    if address and out is not None and not Path(out).is_absolute():
        raise SpecError(f"{out}: on a Ray cluster the run directory must be an absolute path that every worker sees")
    if out is not None and backend == "ray":
        out = Path(out).absolute()  # the workers' working directory may differ from ours
    if extend_to is not None and not resume:
        raise ResumeError("--extend-to continues a run: use it with --resume DIR")
    if trackers:
        from ..integrations.trackers import check_trackers

        check_trackers(trackers)
    with one_line_when_disk_full(out or "the run directory", "run the same command again"):
        if resume:
            out, spec, lock = _reopen(spec, out, overrides, device, extend_to, backend)
        else:
            spec, out, lock = _create(spec, out, overrides, device, overwrite, backend)
    try:
        with one_line_when_disk_full(out, f"continue with `ontogeny run --resume {out}`"):
            members = expand(spec)
            parallel = (max_parallel or os.cpu_count() or 1) if backend == "ray" else 1
            plan = _plan(out, spec, members, max_members, parallel)
            _list_members(out, plan.groups)
            if progress:
                progress.start(len(plan.groups), spec.steps, members)
            with _following(out, trackers):
                if backend == "ray":
                    from .ray_backend import train_on_ray

                    train_on_ray(out, plan, commit_seconds=commit_seconds, address=address,
                                 max_parallel=max_parallel, gpus_per_task=gpus_per_task if gpus_per_task is not None
                                 else float(spec.device.startswith("cuda")), progress=progress)
                else:
                    for index, group in enumerate(plan.groups):
                        train_ensemble(out, index, group, commit_seconds, progress)
            update_meta(out, finished=now())
    finally:
        lock.release()
    return open_run(out)


def _following(out: Path, trackers):
    """Tracker followers of the run for the length of the training (none without trackers: no import)."""
    if not trackers:
        return contextlib.nullcontext()
    from ..integrations.trackers import following

    return following(out, list(trackers))


def plan_run(spec: Spec | str | Path, *, overrides: list[str] | dict | None = None, max_members: int | None = None,
             max_parallel: int = 1, time_it: bool = True,
             device: str | None = None) -> tuple[Plan, list[float] | None, list[float] | None]:
    """The plan `run` would follow for `spec` (ensembles, members and memory each, tasks) on `device` (default: the
    spec's) and, with `time_it`, each ensemble's estimated training seconds from a few timed steps (None when this
    machine lacks that GPU) and its training FLOPs. Nothing is written."""
    if not isinstance(spec, Spec):
        spec = load_spec(spec, overrides, check_machine=not device)
    if device:  # planning for a GPU this machine may lack: its memory is then unknown, so nothing is split
        spec = _with(spec, check_machine=False, device=device)
    plan = make_plan(expand(spec), max_members=max_members, memory_budget=worker_memory(spec.device),
                     parallel=max_parallel)
    return (plan, *time_plan(plan)) if time_it else (plan, None, None)


# ---- starting, resuming, extending ----------------------------------------------------------------------------


def _create(spec, out, overrides, device, overwrite, backend) -> tuple[Spec, Path, FileLock]:
    if spec is None:
        raise SpecError("give a spec file or recipe name, or --resume DIR")
    here = backend != "ray"  # on Ray, the cluster's GPUs count (checked by the backend), not this machine's
    if not isinstance(spec, Spec):
        spec = load_spec(spec, overrides, check_machine=here)
    elif overrides:
        raise SpecError("overrides apply to a spec file or recipe name, not a Spec object")
    if device:
        spec = _with(spec, check_machine=here, device=device)
    out = Path(out) if out is not None else Path("runs") / spec.name
    if backend == "ray":
        out = out.absolute()
    lock = create_run(out, {"kind": "ontogeny", "spec_sha256": spec_hash(spec)}, overwrite=overwrite)
    try:
        write_file(Layout(out).spec, spec.to_toml())
        update_meta(out, device=spec.device, threads=torch.get_num_threads(), started=now())
    except BaseException:
        lock.release()
        raise
    return spec, out, lock


def _reopen(spec, out, overrides, device, extend_to, backend) -> tuple[Path, Spec, FileLock]:
    if out is None:
        raise ResumeError("--resume needs the run directory")
    if spec is not None:
        raise ResumeError(f"--resume {out} continues that run with its own spec; drop the spec argument")
    if overrides or device:
        raise ResumeError(f"{out}: a resumed run keeps its spec; drop --set and --device")
    layout = Layout(out)
    meta = layout.read_meta()
    if meta.get("producer", {}).get("kind") != "ontogeny":
        raise ResumeError(f"{out}: not a run made by `ontogeny run` (nothing to resume)")
    if not layout.spec.is_file():
        raise ResumeError(f"{out}: stopped before its spec was written, so nothing was trained; start it again with "
                          "the same spec and --overwrite")
    lock = FileLock(layout.run_lock, f"run {out}").acquire()
    try:
        for orphan in layout.root.glob(f"{WEIGHTS}/*/.*{TEMP_SUFFIX}"):  # a weights file a killed process left half
            orphan.unlink(missing_ok=True)
        spec = load_spec(layout.spec, check_machine=False)
        if not trained_under(layout.spec, spec, meta["producer"].get("spec_sha256", "")):
            raise ResumeError(f"{layout.spec}: edited since the run started{_what_changed(layout, spec)}; "
                              "restore it (a run keeps its spec), or start a new run; to train longer use "
                              "--resume with --extend-to STEPS")
        if backend != "ray":  # on Ray the cluster's resources count, checked by the backend
            load_spec(layout.spec)  # now check it against this machine (memory, CUDA)
        if extend_to is not None:
            spec = _extend(layout, spec, extend_to)
        update_meta(out, finished=None)
    except BaseException:
        lock.release()
        raise
    return Path(out), spec, lock


def _extend(layout: Layout, spec: Spec, steps: int) -> Spec:
    """Raise the run's steps to `steps`: refuse what cannot equal a run that long from the start; save the spec."""
    if steps <= spec.steps:
        raise ResumeError(f"--extend-to {steps}: the run already has {spec.steps} steps (give more)")
    if spec.optim.schedule != "constant":
        raise ResumeError(f"--extend-to: optim.schedule = {spec.optim.schedule!r} sets each step's learning rate "
                          "from the total steps, so a longer run differs from the start; only 'constant' extends")
    longer = _with(spec, steps=steps)
    write_file(layout.spec, longer.to_toml())
    meta = layout.read_meta()
    extended = [*meta.get("extended", []), {"from": spec.steps, "to": steps, "at": now()}]
    update_meta(layout.root, producer={**meta["producer"], "spec_sha256": spec_hash(longer)}, extended=extended)
    return longer


def _what_changed(layout: Layout, spec: Spec) -> str:
    """' (steps: 400 -> 300)' from the spec saved with a training state, or '' if no state was saved yet.

    A state holds its ensemble's own spec (a sweep's grid point), so it is compared with that ensemble's spec
    resolved from the edited file, not with the file itself (which would list the sweep as a change)."""
    groups = ensembles(expand(spec))
    for index, group in enumerate(groups):
        name = writer_name(index)
        state = read_commits(layout.writer(name))[0].state if name in layout.writer_names() else None
        if state is None:
            continue
        old = load_state(layout.writer(name) / state.file)["spec"]
        new = group[0].spec.to_dict()
        changes = [f"{key}: {old_value!r} -> {new_value!r}" for key, old_value, new_value in _diff(old, new)]
        return f" ({'; '.join(changes)})" if changes else ""
    return ""


def _diff(old, new, prefix: str = ""):
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            yield from _diff(a, b, f"{prefix}{key}.")
        elif a != b:
            yield f"{prefix}{key}", a, b


def _with(spec: Spec, *, check_machine: bool = True, **fields) -> Spec:
    """`spec` with other top-level values (validated)."""
    data = spec.to_dict()
    data.update(fields)
    return from_dict(data, check_machine=check_machine)


# ---- training ---------------------------------------------------------------------------------------------------


def _plan(out: Path, spec: Spec, members: list[Member], max_members: int | None, parallel: int) -> Plan:
    """The run's plan: cut as recorded in meta.json when it has one (a resumed run keeps its ensembles)."""
    recorded = Layout(out).read_meta().get("plan", {}).get("max_members")
    if recorded is not None and max_members is not None and max_members != recorded:
        raise ResumeError(f"{out}: its ensembles hold at most {recorded} members; drop --max-members {max_members}")
    plan = make_plan(members, max_members=recorded or max_members, memory_budget=worker_memory(spec.device),
                     parallel=parallel)
    if recorded is None:
        update_meta(out, plan={"max_members": plan.max_members})
    return plan


def _list_members(out: Path, groups: list[list[Member]]) -> None:
    """Give every ensemble's writer its members (status running) before training, so readers see them all.

    We hold the run lock, so a writer held by another process is a worker of a killed driver still being stopped
    (Ray's workers outlive their driver for a moment): wait for it, as a retried task does."""
    for index, group in enumerate(groups):
        with ShardWriter(out, writer_name(index), wait_seconds=WORKER_EXIT_SECONDS) as writer:
            if not writer.has_table("members"):
                writer.put("members", member_rows(group, {}, finished=False))
                writer.commit()
