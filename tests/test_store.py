"""The run store: shard writing, commit and crash-resume semantics, and reading back through DuckDB."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ontogeny.exceptions import LockedError, StoreError
from ontogeny import store
from ontogeny.store import ShardWriter, open_run, write_table
from ontogeny.store import parquet as parquet_module
from ontogeny.store import writer as writer_module
from ontogeny.store.create import create_run

M, N = 3, 5  # members, examples per split


def new_run(path):
    create_run(path, {"kind": "test"}).release()
    return path


@pytest.fixture
def run_dir(tmp_path):
    return new_run(tmp_path / "run")


def checkpoint_rows(step: int) -> dict[str, dict]:
    """Deterministic rows of every streamed table at one checkpoint `step`."""
    rng = np.random.default_rng(step)
    member = np.repeat(np.arange(M, dtype=np.int64), N)  # int64 on purpose: the writer casts to int32
    example = np.tile(np.arange(N) * 10, M)
    loss = rng.random(M * N).astype(np.float32)
    return {
        "examples": {"member": member, "step": step, "split": "test", "example": example,
                     "loss": loss, "correct": loss < 0.5},
        "scalars": {"member": np.arange(M).tolist() * 2, "step": step,
                    "name": ["test/loss"] * M + ["test/acc"] * M, "value": rng.random(2 * M)},
        "checkpoints": {"member": np.arange(M), "step": step, "path": [f"weights/{m}/{step}" for m in range(M)],
                        "sha256": ["0" * 64] * M},
    }


def append_step(writer: ShardWriter, step: int) -> None:
    for table, columns in checkpoint_rows(step).items():
        writer.append(table, columns)


def shard_names(run_dir, table: str = "examples", writer: str = "main") -> list[str]:
    directory = run_dir / "writers" / writer / table
    return sorted(path.name for path in directory.iterdir()) if directory.exists() else []


# ---- writing and reading back ----------------------------------------------------------------------------------


@pytest.mark.parametrize("background", [False, True])
def test_append_commit_reads_back_exactly(run_dir, background):
    with ShardWriter(run_dir, background=background) as writer:
        append_step(writer, 0)
        append_step(writer, 100)
        assert writer.commit() == 1
    with open_run(run_dir) as run:
        examples = run.examples()
        expected = pd.concat([pd.DataFrame(checkpoint_rows(s)["examples"]) for s in (0, 100)])
        expected = expected.assign(step=np.repeat([0, 100], M * N)).sort_values(["member", "step", "example"])
        assert list(examples.columns) == ["member", "step", "split", "example", "loss", "correct"]
        assert examples.dtypes.astype(str).tolist() == ["int32", "int64", "str", "int64", "float32", "bool"]
        np.testing.assert_array_equal(examples["member"], expected["member"])
        np.testing.assert_array_equal(examples["example"], expected["example"])
        np.testing.assert_array_equal(examples["loss"], expected["loss"])  # float32 exactly
        np.testing.assert_array_equal(examples["correct"], expected["correct"])
        assert set(examples["split"]) == {"test"}

        scalars = run.scalars()
        assert scalars.dtypes.astype(str).tolist() == ["int32", "int64", "str", "float64"]
        assert len(scalars) == 2 * 2 * M
        row = scalars[(scalars.member == 1) & (scalars.step == 100) & (scalars.name == "test/acc")]
        assert row["value"].item() == checkpoint_rows(100)["scalars"]["value"][M + 1]

        checkpoints = run.checkpoints()
        assert checkpoints.dtypes.astype(str).tolist() == ["int32", "int64", "str", "str"]
        assert checkpoints["path"].tolist() == [f"weights/{m}/{s}" for m in range(M) for s in (0, 100)]


def test_filters_take_a_value_or_a_list(run_dir):
    writer = ShardWriter(run_dir, background=False)
    for step in (0, 10, 20):
        append_step(writer, step)
    writer.append("examples", {"member": 0, "step": 20, "split": "train", "example": [7, 8],
                               "loss": [1.0, 2.0], "correct": [True, False]})
    writer.commit()
    run = open_run(run_dir)
    assert set(run.scalars(member=1)["member"]) == {1}
    assert set(run.scalars(member=[0, 2], step=np.int64(10))[["member", "step"]].itertuples(index=False)) == {
        (0, 10), (2, 10)}
    assert set(run.scalars(name="test/acc")["name"]) == {"test/acc"}
    assert len(run.examples(split="train")) == 2
    assert len(run.examples(split=["train", "test"], step=20)) == M * N + 2
    picked = run.examples(member=2, step=[0, 20], example=[10, 40])
    assert picked[["step", "example"]].values.tolist() == [[0, 10], [0, 40], [20, 10], [20, 40]]
    assert run.examples(member=[]).empty
    with pytest.raises(StoreError, match="split"):
        run.examples(split=1)
    relation = run.examples(step=10, relation=True)  # lazy: aggregate in DuckDB without a DataFrame
    assert relation.aggregate("count(*)").fetchall()[0][0] == M * N
    run.close()


def test_append_copies_the_callers_arrays(run_dir):
    writer = ShardWriter(run_dir)
    loss = np.zeros(N, dtype=np.float32)
    writer.append("examples", {"member": 0, "step": 0, "split": "test", "example": np.arange(N),
                               "loss": loss, "correct": np.zeros(N, dtype=bool)})
    loss[:] = 9.0  # the caller reuses its buffer before the commit
    writer.commit()
    assert (open_run(run_dir).examples()["loss"] == 0).all()


@pytest.mark.parametrize("table, columns, message", [
    ("weights", {}, "unknown streamed table"),
    ("scalars", {"member": 0, "step": 0, "name": "x"}, "missing"),
    ("scalars", {"member": 0, "step": 0, "name": "x", "value": 1.0, "extra": 1}, "extra"),
    ("scalars", {"member": [0, 1], "step": 0, "name": "x", "value": [1.0]}, "differ in length"),
    ("scalars", {"member": [0.5], "step": 0, "name": "x", "value": [1.0]}, "member|truncat|lose"),
    ("scalars", {"member": [0], "step": 0, "name": [3], "value": [1.0]}, "scalars"),
    ("scalars", {"member": [0], "step": 0, "name": [None], "value": [1.0]}, "nulls"),
    ("examples", {"member": np.zeros((2, 2)), "step": 0, "split": "t", "example": 0, "loss": 0.0,
                  "correct": True}, "1-D"),
])
def test_append_rejects_bad_rows(run_dir, table, columns, message):
    with pytest.raises(StoreError, match=message):
        ShardWriter(run_dir).append(table, columns)


# ---- buffering, commits and crash-resume -----------------------------------------------------------------------


def test_full_buffer_is_written_before_commit_and_memory_stays_bounded(run_dir):
    writer = ShardWriter(run_dir, buffer_rows=40, background=False)
    for step in range(20):
        append_step(writer, step)  # 15 example rows each
        assert writer.buffered("examples") < 40
    before_commit = shard_names(run_dir)
    assert len(before_commit) == 20 * M * N // 45 and all(name.startswith("part-00000001-") for name in before_commit)
    assert len(open_run(run_dir).examples()) == 0  # written, but not committed: readers do not see it yet
    assert writer.commit() == 1
    assert len(open_run(run_dir).examples()) == 20 * M * N
    writer.close()


def test_background_writer_bounds_memory_and_loses_nothing(run_dir):
    with ShardWriter(run_dir, buffer_rows=40) as writer:
        for step in range(20):
            append_step(writer, step)
            assert writer.buffered("examples") < 40
        writer.commit()
    assert len(open_run(run_dir).examples()) == 20 * M * N


def test_a_failed_background_write_raises_at_commit(run_dir, monkeypatch):
    def fail(table, path, **options):
        raise OSError("disk full")

    monkeypatch.setattr(writer_module, "write_parquet", fail)
    writer = ShardWriter(run_dir)
    append_step(writer, 0)
    with pytest.raises(OSError, match="disk full"):
        writer.commit()
    writer.close()


def write_history(run_dir, steps, *, name="main", commit_every=3):
    """Append `steps` with a small buffer, committing every `commit_every` steps (with the step as the state)."""
    writer = ShardWriter(run_dir, name, buffer_rows=20, background=False)
    for i, step in enumerate(steps):
        append_step(writer, step)
        if (i + 1) % commit_every == 0:
            writer.commit(save_state=lambda path, step=step: path.write_text(str(step)))
    return writer


def test_resume_after_a_crash_gives_exactly_the_uninterrupted_rows(tmp_path, run_dir):
    steps = list(range(0, 120, 10))
    reference = new_run(tmp_path / "reference")
    write_history(reference, steps).close()

    crashed = write_history(run_dir, steps[:8])  # commits after steps 3 and 6; steps 7 and 8 only flushed
    assert crashed.committed_seq == 2 and any(name.startswith("part-00000003-") for name in shard_names(run_dir))
    (run_dir / "writers" / "main" / "examples" / ".part-00000003-00009.parquet.123.tmp").write_bytes(b"half")
    crashed._lock.release()  # as the kernel does when the process dies

    resumed = ShardWriter(run_dir, buffer_rows=20, background=False)
    assert all(int(name[5:13]) <= 2 for name in shard_names(run_dir))  # uncommitted shards and temp files gone
    assert sorted(set(open_run(run_dir).examples()["step"])) == steps[:6]  # committed rows remain
    last = int(resumed.state_path.read_text())  # the producer resumes from the state saved with commit 2
    assert last == steps[5]
    for i, step in enumerate(steps[6:], start=6):
        append_step(resumed, step)
        if (i + 1) % 3 == 0:
            resumed.commit()
    resumed.close()

    for table in ("examples", "scalars", "checkpoints"):
        got, want = (getattr(open_run(path), table)() for path in (run_dir, reference))
        pd.testing.assert_frame_equal(got, want)


def test_a_commit_line_cut_off_by_a_crash_never_happened(run_dir, monkeypatch):
    def killed_midway(directory, record):  # the process dies halfway through appending the commit line
        with open(directory / "commits.jsonl", "ab") as log:
            log.write(b'{"seq": 2, "added": {"scal')
        raise SystemExit

    writer = write_history(run_dir, [0, 10, 20])  # commit 1
    append_step(writer, 30)
    monkeypatch.setattr(writer_module, "append_commit", killed_midway)
    with pytest.raises(SystemExit):
        writer.commit(save_state=lambda path: path.write_text("30"))
    writer._lock.release()
    monkeypatch.undo()
    assert sorted(set(open_run(run_dir).scalars().step)) == [0, 10, 20]
    reopened = ShardWriter(run_dir)
    log = run_dir / "writers" / "main" / "commits.jsonl"
    assert reopened.committed_seq == 1 and log.read_bytes().count(b"\n") == 1 and log.read_bytes().endswith(b"\n")
    assert int(reopened.state_path.read_text()) == 20
    assert shard_names(run_dir, "scalars") == ["part-00000001-00000.parquet"]
    reopened.close()


def test_a_second_writer_of_the_same_name_is_refused_until_the_first_closes(run_dir):
    first = ShardWriter(run_dir, "ensemble-0000")
    with pytest.raises(LockedError, match=rf"writer ensemble-0000 is in use by process {os.getpid()} "):
        ShardWriter(run_dir, "ensemble-0000")
    with ShardWriter(run_dir, "ensemble-0001"):  # another namespace of the same run is free
        pass
    first.close()
    ShardWriter(run_dir, "ensemble-0000").close()


def test_many_writers_make_one_run_and_each_discards_only_its_own_uncommitted_rows(run_dir):
    a, b = ShardWriter(run_dir, "a", background=False), ShardWriter(run_dir, "b", background=False)
    a.append("scalars", {"member": 0, "step": 0, "name": "loss", "value": 1.0})
    b.append("scalars", {"member": 1, "step": 0, "name": "loss", "value": 2.0})
    a.put("members", members_frame([0]))
    b.put("members", members_frame([1]))
    a.commit()
    b.commit()
    b.append("scalars", {"member": 1, "step": 5, "name": "loss", "value": 3.0})
    b._flush("scalars")  # on disk, not committed
    a.close()
    b._lock.release()  # b dies
    ShardWriter(run_dir, "a").close()  # reopening a must not touch b's files
    assert len(shard_names(run_dir, "scalars", "b")) == 2
    ShardWriter(run_dir, "b").close()
    assert len(shard_names(run_dir, "scalars", "b")) == 1
    run = open_run(run_dir)
    assert run.scalars()[["member", "step", "value"]].values.tolist() == [[0, 0, 1.0], [1, 0, 2.0]]
    assert run.members().member.tolist() == [0, 1]


def test_a_member_recorded_by_two_writers_is_an_error(run_dir):
    for name in ("a", "b"):
        with ShardWriter(run_dir, name) as writer:
            writer.put("members", members_frame([3]))
            writer.commit()
    with pytest.raises(StoreError, match="member 3 is recorded by writers a, b"):
        open_run(run_dir).members()


def test_drop_retires_committed_rows_at_the_next_commit(run_dir):
    writer = write_history(run_dir, [0, 10, 20, 30, 40, 50])
    assert writer.drop("examples", steps=[10], after=30) == 3 * M * N
    assert sorted(set(open_run(run_dir).examples().step)) == [0, 10, 20, 30, 40, 50]  # not before the commit
    writer.commit()
    assert sorted(set(open_run(run_dir).examples().step)) == [0, 20, 30]
    assert sorted(set(open_run(run_dir).scalars().step)) == [0, 10, 20, 30, 40, 50]
    writer.close()
    with ShardWriter(run_dir) as reopened:  # the retired shards are gone from disk too
        live = {name for name in reopened._committed.shards["examples"]}
    assert {f"examples/{name}" for name in shard_names(run_dir)} == live


def test_a_missing_shard_is_one_line_naming_it(run_dir):
    write_history(run_dir, [0, 10, 20]).close()
    shard = next((run_dir / "writers" / "main" / "examples").glob("part-*.parquet"))
    shard.unlink()
    with pytest.raises(StoreError, match=f"{shard}: missing") as error:
        open_run(run_dir).examples()
    assert "\n" not in str(error.value)
    assert len(open_run(run_dir).scalars()) == 3 * 2 * M  # the other tables still read


def members_frame(ids) -> pd.DataFrame:
    return pd.DataFrame({"member": ids, "ensemble": 0, "init_seed": ids, "data_seed": 0, "status": "ok",
                         "diverged_step": None})


# ---- whole tables ----------------------------------------------------------------------------------------------


def test_write_table_is_atomic_and_readable(run_dir, monkeypatch):
    write_table(run_dir, "transitions", pd.DataFrame({"member": [0, 1], "onset_step": [100, 250]}))
    run = open_run(run_dir)
    assert run.tables() == ["transitions"]
    assert run.table("transitions")["onset_step"].tolist() == [100, 250]

    def fail_midway(table, where, **options):  # a crash halfway through writing the new version
        with open(where, "wb") as file:
            file.write(b"PAR1 half")
        raise OSError("disk full")

    monkeypatch.setattr(parquet_module.pq, "write_table", fail_midway)
    with pytest.raises(OSError):
        write_table(run_dir, "transitions", pd.DataFrame({"member": [0], "onset_step": [1]}))
    assert run.table("transitions")["onset_step"].tolist() == [100, 250]  # the old version, whole
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock", "meta.json", "transitions.parquet"]
    with pytest.raises(StoreError, match="grokking.parquet"):
        run.table("grokking")
    with pytest.raises(StoreError, match="identifier"):
        write_table(run_dir, "examples", pd.DataFrame({"x": [1]}))
    with pytest.raises(StoreError, match="identifier"):
        write_table(run_dir, "members", pd.DataFrame({"x": [1]}))


def test_members_and_subsets(run_dir):
    members = pd.DataFrame({"member": [1, 0], "ensemble": [0, 0], "init_seed": [1, 0], "data_seed": [0, 0],
                            "status": ["diverged", "ok"], "diverged_step": [40, None], "optim.lr": [1e-3, 1e-2]})
    with ShardWriter(run_dir) as writer:
        writer.put("members", members)
        writer.put("subsets", pa.table({"split": ["test"], "example": [3], "subset": ["hard"]}))
        writer.commit()
        with pytest.raises(StoreError, match="status"):
            writer.put("members", members.assign(status=["fine", "ok"]))
        with pytest.raises(StoreError, match="data_seed"):
            writer.put("members", members.drop(columns="data_seed"))
        with pytest.raises(StoreError, match="write_table"):
            writer.put("transitions", members)
    run = open_run(run_dir)
    got = run.members()
    assert got["member"].tolist() == [0, 1] and got["member"].dtype == np.int32
    assert got["diverged_step"].dtype == "Int64" and got["diverged_step"].isna().tolist() == [True, False]
    assert got["optim.lr"].tolist() == [1e-2, 1e-3]
    assert run.subsets().values.tolist() == [["test", 3, "hard"]]
    assert run.tables() == ["members", "subsets"]


def test_member_settings_have_one_type_whichever_writer_wrote_them(run_dir):
    row = {"ensemble": 0, "init_seed": 0, "data_seed": 0, "status": "ok", "diverged_step": None, "source": "a"}
    for name, chance in (("a", None), ("b", 2.5)):  # a writer that did not know the chance loss, one that did
        with ShardWriter(run_dir, name) as writer:
            writer.put("members", pd.DataFrame([{**row, "member": len(name) * (name == "b"), "chance_loss": chance}]))
            writer.commit()
    schemas = {pa.parquet.read_schema(p).field("chance_loss").type for p in run_dir.glob("writers/*/members-*")}
    assert schemas == {pa.float64()}
    assert open_run(run_dir).members().chance_loss.dtype == np.float64


def test_the_run_lists_each_writer_once_it_commits_and_notices_one_gone(run_dir):
    import shutil

    from ontogeny.store.layout import Layout

    layout = Layout(run_dir)
    for name in ("a", "b"):
        with ShardWriter(run_dir, name) as writer:
            assert layout.listed_writers() == ({"a"} if name == "b" else set())  # listed at its first commit
            writer.append("scalars", {"member": 0 if name == "a" else 1, "step": 0, "name": "loss", "value": 1.0})
            writer.commit()
            writer.commit()
    assert layout.listed_writers() == {"a", "b"} and (run_dir / "writers.jsonl").read_text().count("\n") == 2
    (run_dir / "writers.jsonl").write_text('{"writer": "a"}\n')  # b killed between its first commit and listing
    ShardWriter(run_dir, "b").close()
    assert layout.listed_writers() == {"a", "b"}  # reopening it lists it
    shutil.rmtree(run_dir / "writers" / "b")
    with pytest.raises(StoreError, match="writer b committed rows but its commit log is gone"):
        open_run(run_dir).scalars()


def test_a_new_run_inside_another_run_is_refused(run_dir):
    from ontogeny.store.create import join_run

    for make in (lambda p: create_run(p, {"kind": "test"}), lambda p: join_run(p, {"kind": "recorder"})):
        with pytest.raises(StoreError, match=f"inside the run {run_dir}; choose a directory outside it"):
            make(run_dir / "writers" / "nested")
    assert not (run_dir / "writers" / "nested").exists()


# ---- the run as a whole ----------------------------------------------------------------------------------------


def test_empty_run_gives_empty_frames_with_the_schema_columns(run_dir):
    run = open_run(run_dir)
    assert run.producer == {"kind": "test"} and run.meta["format"] == "ontogeny-run/2"
    assert list(run.examples().columns) == ["member", "step", "split", "example", "loss", "correct"]
    assert run.examples().dtypes.astype(str).tolist() == ["int32", "int64", "str", "int64", "float32", "bool"]
    assert list(run.scalars(member=0).columns) == ["member", "step", "name", "value"]
    assert list(run.checkpoints().columns) == ["member", "step", "path", "sha256"]
    assert list(run.subsets().columns) == ["split", "example", "subset"]
    assert list(run.members().columns) == ["member", "ensemble", "init_seed", "data_seed", "status", "diverged_step"]
    assert run.examples(relation=True).aggregate("count(*)").fetchall()[0][0] == 0
    assert run.sql("SELECT count(*) AS n FROM examples JOIN members USING (member)")["n"].item() == 0
    assert run.tables() == []
    with pytest.raises(StoreError, match="no spec.toml"):
        run.spec


def test_sql_joins_examples_with_subsets(run_dir):
    with ShardWriter(run_dir) as writer:
        append_step(writer, 0)
        writer.put("subsets", pd.DataFrame({"split": ["test", "test"], "example": [0, 10], "subset": ["hard"] * 2}))
        writer.commit()
    with open_run(run_dir) as run:
        out = run.sql("""SELECT subset, member, count(*) AS n, avg(loss) AS loss
                         FROM examples JOIN subsets USING (split, example)
                         GROUP BY ALL ORDER BY member""")
        assert out["n"].tolist() == [2] * M and set(out["subset"]) == {"hard"}
        loss = run.examples(example=[0, 10]).groupby("member")["loss"].mean()
        np.testing.assert_allclose(out["loss"], loss, rtol=1e-6)
        assert run.sql("SELECT count(*) AS n FROM examples WHERE step = ?", [0])["n"].item() == M * N


def test_missing_directory_or_marker_raises_store_error(tmp_path):
    with pytest.raises(StoreError, match="nowhere"):
        open_run(tmp_path / "nowhere")
    with pytest.raises(StoreError, match="no meta.json"):
        open_run(tmp_path)
    (tmp_path / "meta.json").write_text('{"device": "cpu"}')
    with pytest.raises(StoreError, match="not an ontogeny run marker"):
        open_run(tmp_path)
    with pytest.raises(StoreError, match="nowhere"):
        ShardWriter(tmp_path / "nowhere")
    with pytest.raises(StoreError, match="marker"):
        ShardWriter(tmp_path)


def test_members_rows_have_one_shape_whichever_producer_builds_them(tmp_path):
    # a producer without seeds (ingest of a hub model) and one with them (the trainer) give the same column types
    bare = store.members_frame([store.member_row(0, "running", source="hub/model")])
    seeded = store.members_frame([store.member_row(1, "ok", ensemble=0, init_seed=3, data_seed=4, lr=0.1)])
    for frame in (bare, seeded):
        assert [str(frame[c].dtype) for c in ("init_seed", "data_seed", "diverged_step")] == ["Int64"] * 3
    assert bare.ensemble.tolist() == [0] and seeded.ensemble.tolist() == [0]  # alone: its own ensemble
    create_run(tmp_path / "r", {"kind": "test"}).release()
    with ShardWriter(tmp_path / "r", background=False) as writer:
        writer.put("members", pd.concat([bare, seeded], ignore_index=True))
        writer.commit()
    members = open_run(tmp_path / "r").members()
    assert members.init_seed.isna().tolist() == [True, False] and members.status.tolist() == ["running", "ok"]
