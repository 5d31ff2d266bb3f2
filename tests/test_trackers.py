"""`ontogeny export`: a run's curves as TensorBoard event files, an MLflow file store and W&B offline runs, each read
back with the tracker's own reader."""

import json
import os
import struct
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ontogeny as og
from ontogeny.cli import app
from ontogeny.exceptions import StoreError
from ontogeny.integrations import trackers
from ontogeny.integrations.trackers import export, mlflow_key


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return og.run("grokking", overrides=["task.p=23", "steps=60", "seeds=2"],
                  out=tmp_path_factory.mktemp("trackers") / "run")


def _expected(run, member: int) -> dict[tuple[str, int], float]:
    rows = run.scalars(member=member)
    return {(name, int(step)): value for name, step, value in zip(rows.name, rows.step, rows.value)}


def _tensorboard_events(directory: Path) -> list[tuple[str, int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(directory), size_guidance={"scalars": 0})
    events.Reload()
    return [(tag, e.step, e.value) for tag in events.Tags()["scalars"] for e in events.Scalars(tag)]


def test_tensorboard_holds_every_curve_and_the_members_settings(run, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    out = export(run.path, "tensorboard", tmp_path / "tb")
    for member in (0, 1):
        events = EventAccumulator(str(out / f"member-{member:05d}"), size_guidance={"scalars": 0})
        events.Reload()
        read = {(tag, step): value for tag, step, value in _tensorboard_events(out / f"member-{member:05d}")}
        assert read == pytest.approx(_expected(run, member), rel=1e-6)
        content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        settings = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
        assert settings["member"].number_value == member and settings["init_seed"].number_value == member


def test_mlflow_holds_one_run_per_member_with_its_params_and_curves(run, tmp_path):
    from mlflow.tracking import MlflowClient

    out = export(run.path, "mlflow", tmp_path / "mlruns")
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # MLflow 3's file store is read only when allowed
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client = MlflowClient(tracking_uri=out.as_uri())
            (experiment,) = client.search_experiments(filter_string=f"name = '{run.path.name}'")
            tracked = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
            assert sorted(tracked) == ["member-00000", "member-00001"]
            for member in (0, 1):
                info = tracked[f"member-{member:05d}"]
                assert info.data.params["init_seed"] == str(member) and info.info.status == "FINISHED"
                assert info.data.params["task.p"] == "23" and info.data.params["optim.lr"] == "0.01"  # spec keys
                read = {(name, m.step): m.value for name in {n for n, _ in _expected(run, member)}
                        for m in client.get_metric_history(info.info.run_id, mlflow_key(name))}
                assert read == pytest.approx(_expected(run, member), rel=1e-6)
    finally:
        os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)


def _wandb_records(path: Path):
    """The records of a W&B transaction log (.wandb): W&B's own protobuf Record in LevelDB's log framing (a 7-byte
    header, then 32 KiB blocks of chunks: crc32 4 bytes, length 2, type 1), which wandb 0.31 no longer reads in
    Python (its reader moved into the Go core)."""
    from wandb.proto import wandb_internal_pb2

    data, position, pending = path.read_bytes(), 7, b""
    assert data[:4] == b":W&B"
    while position + 7 <= len(data):
        block_left = 32768 - position % 32768
        if block_left < 7:  # a block's tail too short for a chunk header is padding
            position += block_left
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record
        elif kind == 0:
            break


def test_wandb_offline_runs_hold_every_curve_and_config(run, tmp_path):
    out = export(run.path, "wandb", tmp_path / "wb")
    logs = sorted((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 2
    seen = set()
    for log in logs:
        history, config, name = {}, {}, None
        for record in _wandb_records(log):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                name = record.run.display_name
                config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
            elif kind == "history":
                items = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item}
                step = items.pop("_step")
                history.update({(key, step): value for key, value in items.items() if not key.startswith("_")})
        member = int(name.split("-")[1])
        seen.add(member)
        assert config["init_seed"] == member
        assert history == pytest.approx(_expected(run, member), rel=1e-6)
    assert seen == {0, 1}


def test_an_export_replaces_only_an_export_and_leaves_nothing_when_it_fails(run, tmp_path, monkeypatch):
    out = tmp_path / "tb"
    export(run.path, "tensorboard", out)
    with pytest.raises(StoreError, match="exists and is not empty .*--overwrite"):
        export(run.path, "tensorboard", out)
    export(run.path, "tensorboard", out, overwrite=True)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(StoreError, match="not an export of ontogeny's"):
        export(run.path, "tensorboard", tmp_path / "mine", overwrite=True)
    with pytest.raises(StoreError, match="which this command reads"):
        export(run.path, "tensorboard", run.path / "tb")
    with pytest.raises(StoreError, match="neptune: not a tracker"):
        export(run.path, "neptune", tmp_path / "x")

    class Broken(trackers.TensorBoard):
        def open(self, name, config):
            raise OSError("disk full")

    monkeypatch.setitem(trackers.SINKS, "tensorboard", Broken)
    with pytest.raises(OSError):
        export(run.path, "tensorboard", tmp_path / "half")
    assert not (tmp_path / "half").exists() and not list(tmp_path.glob(".half*"))


def test_the_export_command(run, tmp_path):
    result = CliRunner().invoke(app, ["export", str(run.path), "--to", "tensorboard", str(tmp_path / "tb")])
    assert result.exit_code == 0, result.output
    assert "2 members" in result.output and "tensorboard --logdir" in result.output
    assert sorted(p.name for p in (tmp_path / "tb").iterdir() if not p.name.startswith(".")) == ["member-00000",
                                                                                               "member-00001"]
    result = CliRunner().invoke(app, ["export", str(run.path), "--to", "tensorboard", str(tmp_path / "tb")])
    assert result.exit_code == 2 and "exists and is not empty" in result.output


def test_a_tracker_that_is_not_installed_is_named_in_one_line(run, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb now raises ImportError
    with pytest.raises(StoreError, match=r"wandb: needs wandb, which is not installed .*ontogeny\[trackers\]"):
        export(run.path, "wandb", tmp_path / "wb")
    assert not (tmp_path / "wb").exists()


def test_a_run_sends_its_curves_while_it_trains_and_a_resumed_run_goes_on_without_repeats(tmp_path):
    out = tmp_path / "live"
    trained = og.run("grokking", overrides=["task.p=23", "steps=40", "seeds=2"], out=out, trackers=["tensorboard"],
                     commit_seconds=0)
    og.run(out=out, resume=True, extend_to=80, trackers=["tensorboard"], commit_seconds=0)
    for member in (0, 1):
        events = _tensorboard_events(tmp_path / "live-tensorboard" / f"member-{member:05d}")
        keys = [(tag, step) for tag, step, _ in events]
        assert len(keys) == len(set(keys))  # each value sent once, across the two sessions
        # the extension retires step 40 (no checkpoint of the longer schedule): the tracker keeps what it was sent
        sent = {(t, s): v for t, s, v in events if s != 40}
        assert sent == pytest.approx(_expected(og.open(trained.path), member), rel=1e-6)
        assert max(step for _, step, _ in events) == 80 and 40 not in set(og.open(trained.path).scalars().step)


def test_a_follower_sends_only_what_was_committed_since_its_last_poll(run, tmp_path):
    follower = trackers.Follower(run.path, "tensorboard", tmp_path / "tb", members=[1])
    assert follower.poll() == len(run.scalars(member=1)) and follower.poll() == 0
    follower.close()
    assert sorted(p.name for p in (tmp_path / "tb").iterdir() if not p.name.startswith(".")) == ["member-00001"]
    again = trackers.Follower(run.path, "tensorboard", tmp_path / "tb")  # a later session: member 0 only is new
    assert again.poll() == len(run.scalars(member=0))
    again.close()


def test_a_recorder_sends_its_own_member_to_mlflow(tmp_path):
    import torch
    from mlflow.tracking import MlflowClient

    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    model = torch.nn.Linear(4, 3)
    with og.Recorder(tmp_path / "mine", member={"seed": 0}, probes={"test": (x, y)}, every=[0, 5, 10],
                     trackers=["mlflow"]) as rec:
        for step in range(11):
            rec.log(step, {"train_batch/loss": 1.0 / (step + 1)})
            rec.step(step, model)
    run = og.open(tmp_path / "mine")
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client = MlflowClient(tracking_uri=(tmp_path / "mine-mlflow").as_uri())
            (experiment,) = client.search_experiments(filter_string="name = 'mine'")
            (tracked,) = client.search_runs([experiment.experiment_id])
            read = {(name, m.step): m.value for name in {n for n, _ in _expected(run, 0)}
                    for m in client.get_metric_history(tracked.info.run_id, mlflow_key(name))}
    finally:
        os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)
    assert read == pytest.approx(_expected(run, 0), rel=1e-6) and len(read) == len(run.scalars())


def test_a_tracker_that_cannot_receive_rows_is_refused_before_anything_is_trained(tmp_path, monkeypatch):
    import sys

    with pytest.raises(StoreError, match="neptune: not a tracker"):
        og.run("grokking", overrides=["task.p=23", "steps=10"], out=tmp_path / "a", trackers=["neptune"])
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(StoreError, match="needs mlflow, which is not installed"):
        og.Recorder(tmp_path / "b", member={"seed": 0}, trackers=["mlflow"])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
