"""A run's curves in the trackers researchers already watch: TensorBoard event files, an MLflow file store, W&B offline
runs (`ontogeny[trackers]`; each library is imported only when asked for).

One tracker run per member, named `member-00003`, with the member's settings as its config (seeds, grid point,
status) and every scalar the run recorded at its own steps (probe sets, subsets, weight norms...). The export is
written into a temporary directory and moved into place at the end, so an interrupted export leaves nothing.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from ..exceptions import StoreError
from ..store import Run, open_run
from ..store.create import check_out

MARKER = ".ontogeny-export.json"  # says what wrote the directory, so that --overwrite replaces only an export


def export(run_dir: str | Path, to: str, out: str | Path | None = None, *, overwrite: bool = False,
           progress: Callable[[str, int, int], None] | None = None) -> Path:
    """Write every member of the run at `run_dir` to tracker `to` (tensorboard | mlflow | wandb) under `out`
    (default: beside the run, `RUN-to`); return `out`. `progress(member, number, total)` after each member."""
    if to not in WRITERS:
        raise StoreError(f"--to {to}: not a tracker (choose {', '.join(WRITERS)})")
    run = open_run(run_dir)
    out = Path(out) if out is not None else run.path.with_name(f"{run.path.name}-{to}")
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
        with WRITERS[to](temp, run) as write:
            for number, row in enumerate(members.itertuples(index=False), 1):
                name = f"member-{row.member:05d}"
                write(name, member_config(row._asdict(), run), scalars[scalars.member == row.member])
                if progress:
                    progress(name, number, len(members))
        (temp / MARKER).write_text(json.dumps({"run": str(run.path), "tracker": to, "members": len(members)}))
        if out.exists():
            shutil.rmtree(out)
        temp.rename(out)
    except ImportError as err:
        raise StoreError(f"--to {to}: needs {err.name or to}, which is not installed "
                         "(pip install 'ontogeny[trackers]')") from None
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return out


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


@contextmanager
def _tensorboard(root: Path, run: Run):
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    def write(name: str, config: dict, scalars: pd.DataFrame) -> None:
        writer = SummaryWriter(str(root / name))
        try:
            for summary in hparams({k: v if isinstance(v, (int, float, str, bool)) else str(v)
                                    for k, v in config.items()}, {}):
                writer.file_writer.add_summary(summary)  # the HParams tab's table of members
            for step, values in curves(scalars):
                for tag, value in values.items():
                    writer.add_scalar(tag, value, step)
        finally:
            writer.close()

    yield write


MLFLOW_KEY_CHARACTERS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-. ")


def mlflow_key(name: str) -> str:
    """A metric name as MLflow's file store takes it: `/` becomes `.` (each key is a file there, so `weight_norm` and
    `weight_norm/embed` could not both be one), other characters than letters, digits and `_-. ` become `_`."""
    return "".join(c if c in MLFLOW_KEY_CHARACTERS else "." if c == "/" else "_" for c in name)


@contextmanager
def _mlflow(root: Path, run: Run):
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    with _allow_file_store():
        client = MlflowClient(tracking_uri=root.resolve().as_uri())
        experiment = client.create_experiment(run.path.name)

        def write(name: str, config: dict, scalars: pd.DataFrame) -> None:
            stamp = int(time.time() * 1000)
            tracked = client.create_run(experiment, run_name=name, tags={"ontogeny.run": str(run.path)})
            params = [Param(k, str(v)[:6000]) for k, v in config.items()]
            metrics = [Metric(mlflow_key(key), value, stamp, step) for step, values in curves(scalars)
                       for key, value in values.items()]
            for start in range(0, len(params), 100):  # MLflow's limits per call: 100 params, 1,000 metrics
                client.log_batch(tracked.info.run_id, params=params[start:start + 100])
            for start in range(0, len(metrics), 1000):
                client.log_batch(tracked.info.run_id, metrics=metrics[start:start + 1000])
            client.set_terminated(tracked.info.run_id)

        yield write


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


@contextmanager
def _wandb(root: Path, run: Run):
    import wandb

    def write(name: str, config: dict, scalars: pd.DataFrame) -> None:
        tracked = wandb.init(dir=str(root), mode="offline", project=run.path.name, name=name, config=config,
                             reinit="finish_previous", settings=wandb.Settings(silent=True, console="off"))
        try:
            for step, values in curves(scalars):
                tracked.log(values, step=step)
        finally:
            tracked.finish()

    yield write


WRITERS = {"tensorboard": _tensorboard, "mlflow": _mlflow, "wandb": _wandb}
