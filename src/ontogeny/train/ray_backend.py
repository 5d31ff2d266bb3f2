"""Train a run's ensembles as Ray tasks (`ontogeny run --backend ray`, `pip install ontogeny[ray]`).

Every task trains its ensembles through the same `train_ensemble` as the sequential backend, each through its own
writer into the run directory, which must therefore sit on storage every worker sees. A worker killed mid-ensemble
is retried by Ray and continues from that ensemble's last commit; a finished ensemble is never trained again, so a
driver restarted with `--resume` submits only what is left. Progress is read from the writers' commit logs.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from ..exceptions import OntogenyError, SpecError, StoreError
from ..store import Layout, read_commits
from ..members import Member
from .ensemble import WORKER_EXIT_SECONDS, train_ensemble, writer_name
from .plan import Plan

POLL_SECONDS = 0.5
TASK_RETRIES = 3  # Ray retries a task whose worker died this many times


def train_on_ray(out: Path, plan: Plan, *, commit_seconds: float, address: str | None, max_parallel: int | None,
                 gpus_per_task: float, progress) -> None:
    """Train every unfinished ensemble of `plan` on Ray; raise OntogenyError naming the failed ones, if any."""
    ray = _import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        _connect(ray, address)
    pending: dict = {}  # task ref -> its ensemble indices
    try:
        _check_cluster(ray, out, gpus_per_task)
        train = ray.remote(num_cpus=1, num_gpus=gpus_per_task, max_retries=TASK_RETRIES)(_train_task)
        todo = [task for task in plan.tasks if not all(_finished(out, i) for i in task)]
        limit = max_parallel or max(1, int(ray.cluster_resources().get("CPU", 1)))
        failed: list[str] = []
        while todo or pending:
            while todo and len(pending) < limit:
                task = todo.pop(0)
                pending[train.remote(str(out), [(i, plan.groups[i]) for i in task], commit_seconds)] = task
            done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=POLL_SECONDS)
            for ref in done:
                task = pending.pop(ref)
                try:
                    ray.get(ref)
                except Exception as err:  # noqa: BLE001 (a task's error, after Ray's retries: report, go on)
                    failed.append(f"ensembles {task}: {_first_line(err)}")
            if progress:
                progress.overall(_steps_done(out, plan), running=len(pending), failed=len(failed))
        if failed:
            raise StoreError(f"{len(failed)} task(s) failed ({failed[0]}); fix the cause and continue with "
                             f"`ontogeny run --resume {out} --backend ray`")
    except KeyboardInterrupt:  # stop the cluster's tasks; what they committed stays
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started_here:
            ray.shutdown()


def _train_task(out: str, ensembles: list[tuple[int, list[Member]]], commit_seconds: float) -> None:
    """On a worker: train each ensemble (continuing from its last commit) through its own writer."""
    import torch

    from .malloc import reuse_freed_memory

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))  # Ray's share of the CPUs
    with reuse_freed_memory():  # a worker process of ours while the task runs
        for index, group in ensembles:
            train_ensemble(Path(out), index, group, commit_seconds, None, wait_seconds=WORKER_EXIT_SECONDS)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise SpecError("--backend ray needs Ray: pip install 'ontogeny[ray]'") from None
    return ray


def _connect(ray, address: str | None) -> None:
    if address and address != "auto":
        _probe(address)
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:  # a local cluster on this machine, stopped at the end
            ray.init(include_dashboard=False, log_to_driver=False)
    except Exception as err:  # noqa: BLE001 (Ray raises ConnectionError, RuntimeError, ValueError ...)
        raise SpecError(f"cannot start or reach a Ray cluster{f' at {address}' if address else ''} "
                        f"({_first_line(err)})") from None


def _probe(address: str) -> None:
    """A TCP connection to the cluster's head (Ray itself would retry an unreachable address for minutes)."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except (OSError, ValueError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise SpecError(f"cannot start or reach a Ray cluster at {address} ({reason or 'give host:port'})") from None


def _check_cluster(ray, out: Path, gpus_per_task: float) -> None:
    """Refuse, before anything trains, a cluster without the GPUs asked for or whose workers cannot write `out`."""
    if gpus_per_task and ray.cluster_resources().get("GPU", 0) < gpus_per_task:
        raise SpecError("--device cuda: the Ray cluster has no GPU")
    probe = Layout(out).root / f".ray-probe-{uuid.uuid4().hex}"

    def touch(path: str) -> str:
        try:
            Path(path).write_text("ok")
            return ""
        except OSError as err:
            return f"{err.strerror or err}"

    problem = ray.get(ray.remote(num_cpus=0)(touch).remote(str(probe)))
    probe.unlink(missing_ok=True)
    if problem:
        raise StoreError(f"{out}: Ray's workers cannot write the run directory ({problem}); it must sit on storage "
                         "every worker sees")


def _finished(out: Path, index: int) -> bool:
    return bool(_last_info(out, writer_name(index)).get("finished"))


def _steps_done(out: Path, plan: Plan) -> int:
    """Training steps recorded so far, summed over the ensembles (from their last commits)."""
    return sum(_last_info(out, writer_name(i)).get("step", 0) for i in range(len(plan.groups)))


def _last_info(out: Path, writer: str) -> dict:
    try:
        return read_commits(Layout(out).writer(writer))[0].info
    except OntogenyError:
        return {}


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[-1][:300]

