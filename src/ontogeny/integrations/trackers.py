"""A run's curves in the trackers researchers already watch: TensorBoard event files, an MLflow file store, W&B offline
runs (`ontogeny[trackers]`; each library is imported only when asked for).

One tracker run per member, named `member-00003`, with the member's settings as its config (seeds, grid point,
status) and every scalar the run recorded at its own steps (probe sets, subsets, weight norms...). `export` writes a
finished (or stopped) run into a temporary directory and moves it into place at the end, so an interrupted export
leaves nothing. `Follower` sends a run's rows while it is being written (`og.run(trackers=...)`,
`og.Recorder(trackers=...)`): every few seconds it reads what was committed since and logs it, and it remembers per
member the last step it sent (`.ontogeny-sent-member-00003.json`), so a resumed run goes on where its tracker runs
stopped.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from ..exceptions import StoreError
from ..store import Run, check_out, open_run

MARKER = ".ontogeny-export.json"  # says what wrote the directory, so that --overwrite replaces only an export
FOLLOWED = ".ontogeny-sent-{member}.json"  # per member: the last step a follower sent (files: MLflow reads every
# directory of its store as an experiment)


def export(run_dir: str | Path, to: str, out: str | Path | None = None, *, overwrite: bool = False,
           progress: Callable[[str, int, int], None] | None = None) -> Path:
    """Write every member of the run at `run_dir` to tracker `to` (tensorboard | mlflow | wandb) under `out`
    (default: beside the run, `RUN-to`); return `out`. `progress(member, number, total)` after each member."""
    _check_tracker(to)
    run = open_run(run_dir)
    out = default_out(run, to, out)
    check_out(out, [run.path])
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise StoreError(f"{out}: exists and is not empty (give --overwrite to replace an earlier export)")
        if not (out / MARKER).is_file():
            raise StoreError(f"{out}: not an export of ontogeny's; --overwrite replaces only those")
    members = run.members().sort_values("member")
    scalars = run.scalars()
    temp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    try:
        with _imported(to):
            sink = SINKS[to](temp, run)
        for number, row in enumerate(members.to_dict("records"), 1):  # dotted setting names kept ("optim.lr")
            name = member_name(row["member"])
            tracked = sink.open(name, member_config(row, run))
            for step, values in curves(scalars[scalars.member == row["member"]]):
                tracked.log(step, values)
            tracked.close()
            if progress:
                progress(name, number, len(members))
        (temp / MARKER).write_text(json.dumps({"run": str(run.path), "tracker": to, "members": len(members)}))
        if out.exists():
            shutil.rmtree(out)
        temp.rename(out)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return out


class Follower:
    """Sends the rows a run commits to tracker `to` while it is written: every `every` seconds on a thread, and once
    more at `close()`. `members`: only these (a recorder sends its own member; other processes send theirs)."""

    def __init__(self, run_dir: str | Path, to: str, out: str | Path | None = None, *, every: float = 10.0,
                 members: list[int] | None = None):
        _check_tracker(to)
        self.run = Run(run_dir)
        self.to, self.every, self.members = to, every, members
        self.out = default_out(self.run, to, out)
        check_out(self.out, [self.run.path])
        marker = self.out / MARKER
        if self.out.exists() and any(self.out.iterdir()) and not marker.is_file():
            raise StoreError(f"{self.out}: not empty and not a tracker directory of ontogeny's (choose another)")
        self.out.mkdir(parents=True, exist_ok=True)
        if not marker.is_file():
            marker.write_text(json.dumps({"run": str(self.run.path), "tracker": to, "live": True}))
        with _imported(to):
            self.sink = SINKS[to](self.out, self.run)
        self.tracked: dict[int, object] = {}
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"ontogeny-{to}", daemon=True)

    def start(self) -> Follower:
        self._thread.start()
        return self

    def poll(self) -> int:
        """Send what was committed since the last poll; return the number of rows sent."""
        run = Run(self.run.path)  # a fresh reader: the commits made since
        scalars, members = run.scalars(), run.members().set_index("member")
        if self.members is not None:
            scalars = scalars[scalars.member.isin(self.members)]
        sent = 0
        for member, rows in scalars.groupby("member"):
            member = int(member)
            done = self._sent_through(member)
            rows = rows[rows.step > done]
            if rows.empty or member not in members.index:
                continue
            if member not in self.tracked:
                config = member_config({"member": member, **members.loc[member].to_dict()}, run)
                self.tracked[member] = self.sink.open(member_name(member), config)
            for step, values in curves(rows):
                self.tracked[member].log(step, values)
            self.tracked[member].flush()
            self._record(member, int(rows.step.max()))
            sent += len(rows)
        return sent

    def close(self) -> None:
        """Stop the thread, send the last rows, close the tracker runs."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        try:
            if self.error is None:
                self.poll()
        finally:
            for tracked in self.tracked.values():
                tracked.close()
        if self.error is not None:
            warnings.warn(f"{self.to}: stopped sending rows ({self.error}); the run is whole, and `ontogeny export "
                          f"{self.run.path} --to {self.to}` writes them all", RuntimeWarning, stacklevel=2)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.poll()
            except Exception as err:  # noqa: BLE001 (a tracker's failure must not stop the training it watches)
                self.error = err
                return

    def _sent_through(self, member: int) -> float:
        path = self.out / FOLLOWED.format(member=member_name(member))
        return json.loads(path.read_text())["step"] if path.is_file() else -math.inf

    def _record(self, member: int, step: int) -> None:
        path = self.out / FOLLOWED.format(member=member_name(member))
        temp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        temp.write_text(json.dumps({"step": step}))
        os.replace(temp, path)


@contextmanager
def following(run_dir: str | Path, trackers: list[str] | tuple[str, ...], *, members: list[int] | None = None,
              every: float = 10.0) -> Iterator[list[Follower]]:
    """Followers of `run_dir` for each of `trackers` (beside the run, `RUN-tracker`) for the length of the block."""
    followers = []
    try:
        for to in trackers:
            followers.append(Follower(run_dir, to, members=members, every=every).start())
        yield followers
    finally:
        for follower in followers:
            follower.close()


def default_out(run: Run, to: str, out: str | Path | None) -> Path:
    return Path(out) if out is not None else run.path.with_name(f"{run.path.name}-{to}")


def member_name(member: int) -> str:
    return f"member-{member:05d}"


def member_config(row: dict, run: Run) -> dict[str, object]:
    """A member's settings as a tracker config: its members-table row without empty cells, plus the run's path."""
    config = {"run": str(run.path), "producer": run.producer.get("kind", "?")}
    for key, value in row.items():
        if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
            continue
        config[key] = value.item() if hasattr(value, "item") else value
    return config


def curves(scalars: pd.DataFrame) -> Iterator[tuple[int, dict[str, float]]]:
    """(step, {name: value}) in step order: one tracker log call per recorded step."""
    for step, rows in scalars.groupby("step", sort=True):
        yield int(step), dict(zip(rows.name, rows.value.astype(float)))


def check_trackers(names) -> None:
    """StoreError (one line) for a name that is not a tracker, or a tracker whose library is not installed: checked
    before a run starts, so that nothing is trained for a tracker that cannot receive it."""
    for to in names:
        _check_tracker(to)
        with _imported(to):
            __import__({"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}[to])


def _check_tracker(to: str) -> None:
    if to not in SINKS:
        raise StoreError(f"{to}: not a tracker (choose {', '.join(SINKS)})")


@contextmanager
def _imported(to: str):
    try:
        yield
    except ImportError as err:
        raise StoreError(f"{to}: needs {err.name or to}, which is not installed "
                         "(pip install 'ontogeny[trackers]')") from None


# ---- one class per tracker, made with (directory, run): open(name, config) -> a tracked run with log(step, values),
# flush() and close() ----


class TensorBoard:
    def __init__(self, root: Path, run: Run):
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self.root, self._writer, self._hparams = root, SummaryWriter, hparams

    def open(self, name: str, config: dict) -> TensorBoard._Tracked:
        writer = self._writer(str(self.root / name))
        for summary in self._hparams({k: v if isinstance(v, (int, float, str, bool)) else str(v)
                                      for k, v in config.items()}, {}):
            writer.file_writer.add_summary(summary)  # the HParams tab's table of members
        return TensorBoard._Tracked(writer)

    class _Tracked:
        def __init__(self, writer):
            self.writer = writer

        def log(self, step: int, values: dict[str, float]) -> None:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, step)

        def flush(self) -> None:
            self.writer.flush()

        def close(self) -> None:
            self.writer.close()


MLFLOW_KEY_CHARACTERS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-. ")


def mlflow_key(name: str) -> str:
    """A metric name as MLflow's file store takes it: `/` becomes `.` (each key is a file there, so `weight_norm` and
    `weight_norm/embed` could not both be one), other characters than letters, digits and `_-. ` become `_`."""
    return "".join(c if c in MLFLOW_KEY_CHARACTERS else "." if c == "/" else "_" for c in name)


class MLflow:
    def __init__(self, root: Path, run: Run):
        from mlflow.tracking import MlflowClient

        with _allow_file_store():
            self.client = MlflowClient(tracking_uri=root.resolve().as_uri())
            found = self.client.get_experiment_by_name(run.path.name)
            try:
                self.experiment = found.experiment_id if found else self.client.create_experiment(run.path.name)
            except Exception:  # noqa: BLE001 (another process made it first)
                self.experiment = self.client.get_experiment_by_name(run.path.name).experiment_id
        self.run = run

    def open(self, name: str, config: dict) -> MLflow._Tracked:
        from mlflow.entities import Param

        with _allow_file_store():
            tracked = self.client.create_run(self.experiment, run_name=name, tags={"ontogeny.run": str(self.run.path)})
            params = [Param(k, str(v)[:6000]) for k, v in config.items()]
            for start in range(0, len(params), 100):  # MLflow's limit per call
                self.client.log_batch(tracked.info.run_id, params=params[start:start + 100])
        return MLflow._Tracked(self.client, tracked.info.run_id)

    class _Tracked:
        def __init__(self, client, run_id: str):
            self.client, self.run_id, self.pending = client, run_id, []

        def log(self, step: int, values: dict[str, float]) -> None:
            from mlflow.entities import Metric

            stamp = int(time.time() * 1000)
            self.pending += [Metric(mlflow_key(key), value, stamp, step) for key, value in values.items()]
            if len(self.pending) >= 1000:
                self.flush()

        def flush(self) -> None:
            with _allow_file_store():
                for start in range(0, len(self.pending), 1000):  # MLflow's limit per call
                    self.client.log_batch(self.run_id, metrics=self.pending[start:start + 1000])
            self.pending = []

        def close(self) -> None:
            self.flush()
            with _allow_file_store():
                self.client.set_terminated(self.run_id)


@contextmanager
def _allow_file_store():
    """MLflow 3 keeps its file store in maintenance mode and refuses it unless told; it is the one store that needs no
    database server, and `mlflow migrate-filestore` moves it into one."""
    before = os.environ.get("MLFLOW_ALLOW_FILE_STORE")
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        if before is None:
            os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)
        else:
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = before


class WandB:
    def __init__(self, root: Path, run: Run):
        import wandb

        self.wandb, self.root, self.project = wandb, root, run.path.name

    def open(self, name: str, config: dict) -> WandB._Tracked:
        wandb = self.wandb
        tracked = wandb.init(dir=str(self.root), mode="offline", project=self.project, name=name, config=config,
                             reinit="create_new", settings=wandb.Settings(silent=True, console="off"))
        return WandB._Tracked(tracked)

    class _Tracked:
        def __init__(self, tracked):
            self.tracked = tracked

        def log(self, step: int, values: dict[str, float]) -> None:
            self.tracked.log(values, step=step)

        def flush(self) -> None:
            pass

        def close(self) -> None:
            self.tracked.finish()


SINKS = {"tensorboard": TensorBoard, "mlflow": MLflow, "wandb": WandB}
