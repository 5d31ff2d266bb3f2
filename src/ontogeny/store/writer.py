"""Writing a run: each producer streams rows into its own writer namespace and commits them through its log.

A writer (`ShardWriter(run_dir, name)`) owns `writers/<name>/` alone, under an OS lock. Streamed tables (scalars,
examples, checkpoints) become append-only Parquet shards; its version of a whole table (members, subsets) and
the producer's own state (e.g. the trainer's) are files too. `commit()` writes and fsyncs them all, then appends
one line naming every file to `commits.jsonl` (see commits.py): that line is the commit. Opening a writer deletes
what its own last session left uncommitted, and nothing of any other writer, so a process killed at any moment
and restarted from the state saved with its last commit ends with exactly the rows of an uninterrupted run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..exceptions import StoreError
from .commits import FileEntry, apply_commit, append_commit, file_entry, read_commits, truncate_log
from .layout import COMMITS, TEMP_SUFFIX, WRITER_LOCK, Layout
from .lock import FileLock
from .parquet import SHARD_OPTIONS, cast_required, fsync, to_table, write_parquet
from .schema import STREAMED, WRITER_TABLES

TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # whole tables double as SQL view names
MAX_PARTS = 100_000  # the five-digit part number of a shard name



class ShardWriter:
    """One producer's writer into a run: buffers streamed rows, writes them as Parquet shards, commits them.

    Shard files are `writers/<name>/<table>/part-<seq:08d>-<n:05d>.parquet`, `seq` being the pending commit.
    A table's buffer is written out as soon as it holds `buffer_rows` rows, so memory stays flat however long the
    run. With `background=True` shards are encoded on one worker thread (Parquet encoding releases the GIL), so
    training goes on meanwhile; at most one shard is in flight, so memory stays bounded by about twice
    `buffer_rows`. A second writer of the same name (in any process) is refused with LockedError (after waiting up to
    `wait_seconds` for the first to finish: a retried task whose predecessor is still being stopped).
    """

    def __init__(self, run_dir: str | Path, name: str = "main", *, buffer_rows: int = 1_000_000,
                 background: bool = True, wait_seconds: float = 0.0):
        layout = Layout(run_dir)
        layout.read_meta()  # only a marked run directory is written into
        if buffer_rows < 1:
            raise StoreError(f"need buffer_rows >= 1 (got {buffer_rows})")
        self.run_dir, self.name, self.buffer_rows = layout.root, name, buffer_rows
        self.directory = layout.writer(name)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(self.directory / WRITER_LOCK, f"{self.run_dir}: writer {name}").acquire(wait_seconds)
        try:
            self._committed, length = read_commits(self.directory)
            log = self.directory / COMMITS
            if log.is_file() and log.stat().st_size > length:
                truncate_log(self.directory, length)  # a commit line cut off by a crash never happened
            self._discard_uncommitted()
            self._check_committed()
            self._listed = name in layout.listed_writers()
            if self._committed.seq and not self._listed:  # killed between its first commit and listing itself
                self._list()
        except BaseException:
            self._lock.release()
            raise
        self._chunks: dict[str, list[pa.Table]] = {table: [] for table in STREAMED}
        self._rows = dict.fromkeys(STREAMED, 0)
        self._retired: set[str] = set()  # replaced table versions, deleted at the next commit
        self._failed = ""  # why a write failed: the writer then refuses more rows
        self._reset_pending()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ontogeny-shards") if background else None
        self._in_flight: Future | None = None

    # ---- what is committed ----

    @property
    def committed_seq(self) -> int:
        """The number of the last durable commit (0: none yet)."""
        return self._committed.seq

    @property
    def pending_seq(self) -> int:
        return self._committed.seq + 1

    @property
    def committed_info(self) -> dict[str, Any]:
        """What the producer said of its last commit (`commit(info=...)`), {} before any."""
        return dict(self._committed.info)

    @property
    def state_path(self) -> Path | None:
        """The state file saved with the last commit (see `commit(save_state=...)`), or None."""
        state = self._committed.state
        return None if state is None else self.directory / state.file

    def has_rows(self) -> bool:
        """Whether this writer has committed rows of any streamed table."""
        return any(entry.rows for shards in self._committed.shards.values() for entry in shards.values())

    def has_table(self, name: str) -> bool:
        """Whether this writer has committed (or put, for the next commit) its version of the whole table `name`."""
        return name in self._committed.tables or name in self._tables

    # ---- writing ----

    def append(self, table: str, columns: dict[str, Any]) -> None:
        """Buffer rows for `table`; `columns` maps every schema column to a 1-D array, list or one broadcast scalar.

        Values are cast to the schema types (an unsafe cast, such as 2.5 to an integer column, raises StoreError).
        Arrays are copied, so the caller may reuse its buffers.
        """
        self._check_usable()
        chunk = to_table(table, columns)
        if chunk.num_rows == 0:
            return
        self._chunks[table].append(chunk)
        self._rows[table] += chunk.num_rows
        if self._rows[table] >= self.buffer_rows:
            self._flush(table)

    def put(self, name: str, data: pd.DataFrame | pa.Table) -> None:
        """Set this writer's version of the whole table `name` (members, subsets); it is written at the next commit.

        Readers see the union over writers. The table must hold its schema's columns (more are kept).
        """
        if name not in WRITER_TABLES:
            raise StoreError(f"{name!r}: a writer puts one of {', '.join(WRITER_TABLES)}; analysis tables go "
                             "through write_table")
        self._tables[name] = cast_required(_as_arrow(data), name)

    def drop(self, table: str, *, steps: Iterable[int] = (), after: int | None = None) -> int:
        """Retire this writer's committed rows of `table` at `steps` or after step `after`, at the next commit.

        Shards holding such rows are rewritten without them. Call it before appending rows to `table` in this
        commit. Returns the number of rows dropped.
        """
        if table not in STREAMED:
            raise StoreError(f"unknown streamed table {table!r} (known: {', '.join(STREAMED)})")
        if self._rows[table] or self._added[table]:
            raise StoreError(f"{table}: drop rows before appending new ones in this commit")
        steps = pa.array(sorted({int(s) for s in steps}), pa.int64())
        dropped = 0
        for name in list(self._committed.shards.get(table, {})):
            data = pq.read_table(self.directory / name, schema=STREAMED[table])
            drop = pc.is_in(data.column("step"), value_set=steps)
            if after is not None:
                drop = pc.or_(drop, pc.greater(data.column("step"), after))
            n_drop = pc.sum(drop).as_py() or 0
            if not n_drop:
                continue
            dropped += n_drop
            self._removed.append(name)
            kept = data.filter(pc.invert(drop))
            if kept.num_rows:
                self._chunks[table].append(kept)
                self._rows[table] += kept.num_rows
                self._flush(table)
        return dropped

    def commit(self, save_state: Callable[[Path], None] | None = None, info: dict[str, Any] | None = None) -> int:
        """Write every buffered row and put table, save the producer's state, fsync, log the commit; return its number.

        `save_state(path)`, if given, writes the producer's state to `path`; `state_path` names it from then on.
        `info` (JSON) is kept in the commit line, where readers find it cheaply (`Committed.info`).
        """
        self._check_usable()
        for table in STREAMED:
            self._flush(table)
        self._wait()
        seq = self.pending_seq
        record: dict[str, Any] = {"seq": seq, "added": {}, "removed": self._removed, "tables": {}, "state": None,
                                  "info": info or {}}
        for table, entries in self._added.items():
            if entries:
                record["added"][table] = [entry.to_json() for entry in entries]
        for name, data in self._tables.items():
            relative = Layout.writer_table(name, seq)
            write_parquet(data, self.directory / relative)
            record["tables"][name] = file_entry(self.directory, relative, data.num_rows).to_json()
        if save_state is not None:
            relative = Layout.state(seq)
            temp = self.directory / f".{relative}{TEMP_SUFFIX}"
            try:
                save_state(temp)
                fsync(temp)
                os.replace(temp, self.directory / relative)
            except BaseException:
                temp.unlink(missing_ok=True)
                raise
            record["state"] = file_entry(self.directory, relative, None).to_json()
        for directory in (self.directory, *(self.directory / t for t, e in self._added.items() if e)):
            fsync(directory)  # the new names are durable before the line that lists them
        old_tables = {entry.file for entry in self._committed.tables.values()}
        old = self._committed.files()
        append_commit(self.directory, record)
        apply_commit(self._committed, record)
        if not self._listed:
            self._list()
        retired = old - self._committed.files()
        # A replaced whole table is kept until the next commit, for readers that read the log just before this one.
        for name in (retired - old_tables) | self._retired:
            (self.directory / name).unlink(missing_ok=True)
        self._retired = retired & old_tables
        self._reset_pending()
        return seq

    def buffered(self, table: str) -> int:
        """Return the number of rows of `table` held in memory and not yet handed to a shard file."""
        return self._rows[table]

    def close(self) -> None:
        """Finish the shard in flight, stop the worker thread, release the lock. Uncommitted rows stay uncommitted."""
        try:
            self._wait()
            for name in self._retired:  # replaced table versions kept for readers mid-read; a reader retries
                (self.directory / name).unlink(missing_ok=True)
        finally:
            if self._executor is not None:
                self._executor.shutdown()
            self._lock.release()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- helpers ----

    def _list(self) -> None:
        """Put this writer on the run's list, so that readers notice if its directory or log goes missing."""
        Layout(self.run_dir).list_writer(self.name)
        self._listed = True

    def _reset_pending(self) -> None:
        self._parts = dict.fromkeys(STREAMED, 0)  # shard files started so far under the pending seq
        self._added: dict[str, list[FileEntry | Future]] = {table: [] for table in STREAMED}
        self._removed: list[str] = []
        self._tables: dict[str, pa.Table] = {}

    def _flush(self, table: str) -> None:
        if not self._rows[table]:
            return
        n = self._parts[table]
        if n >= MAX_PARTS:
            raise StoreError(f"{self.directory / table}: more than {MAX_PARTS} shards in one commit (commit more often)")
        # One dictionary for the whole shard lets Parquet store the dictionary as is, without re-hashing strings.
        data = pa.concat_tables(self._chunks[table]).unify_dictionaries()
        relative = Layout.shard(table, self.pending_seq, n)
        self._chunks[table], self._rows[table] = [], 0
        self._parts[table] = n + 1
        (self.directory / table).mkdir(exist_ok=True)
        self._wait()  # one shard in flight at most: memory stays bounded
        if self._executor is None:
            self._added[table].append(_write_shard(self.directory, relative, data))
        else:
            self._in_flight = self._executor.submit(_write_shard, self.directory, relative, data)
            self._added[table].append(self._in_flight)

    def _wait(self) -> None:
        """Block until the shard in flight is written; a failed write raises here, once, and ends this writer."""
        self._in_flight = None
        try:
            for entries in self._added.values():
                entries[:] = [e.result() if isinstance(e, Future) else e for e in entries]
        except BaseException as err:
            self._failed = f"{type(err).__name__}: {err}"
            self._reset_pending()
            raise

    def _check_usable(self) -> None:
        if self._failed:
            raise StoreError(f"{self.directory}: an earlier write failed ({self._failed}); its rows since the last "
                             "commit are lost, so reopen the writer to continue from that commit")

    def _check_committed(self) -> None:
        """Refuse to add to a writer whose committed files are missing or of another size (cheap: stat only)."""
        entries = [e for shards in self._committed.shards.values() for e in shards.values()]
        entries += [*self._committed.tables.values(), *([self._committed.state] if self._committed.state else [])]
        for entry in entries:
            path = self.directory / entry.file
            size = path.stat().st_size if path.is_file() else None
            if size != entry.size:
                found = "missing" if size is None else f"{size} bytes, committed with {entry.size}"
                raise StoreError(f"{path}: {found}; run `ontogeny check {self.run_dir}`")

    def _discard_uncommitted(self) -> None:
        """Delete every file of this writer that no commit lists: what a killed session left half done."""
        live = self._committed.files()
        for path in sorted(self.directory.rglob("*")):
            relative = path.relative_to(self.directory).as_posix()
            if path.is_file() and relative not in live and relative not in (COMMITS, WRITER_LOCK):
                path.unlink()


def write_table(run_dir: str | Path, name: str, data: pd.DataFrame | pa.Table) -> Path:
    """Write an analysis table as `<run_dir>/<name>.parquet`, atomically; return its path.

    Producers' tables (members, subsets) go through their writer's `put`, streamed ones through `append`.
    """
    layout = Layout(run_dir)
    layout.read_meta()
    if not is_analysis_table(name):
        raise StoreError(f"{name!r}: a table name must be an identifier other than "
                         f"{', '.join([*STREAMED, *WRITER_TABLES])}")
    path = layout.table(name)
    write_parquet(_as_arrow(data), path)
    return path


def is_analysis_table(name: str) -> bool:
    """Whether `name` may name an analysis table: an identifier that is not one of the run's own tables (a file
    `scalars.parquet` at the top would otherwise shadow the committed rows)."""
    return TABLE_NAME.fullmatch(name) is not None and name not in STREAMED and name not in WRITER_TABLES


# ---- helpers --------------------------------------------------------------------------------------------------


def _as_arrow(data: pd.DataFrame | pa.Table) -> pa.Table:
    return pa.Table.from_pandas(data, preserve_index=False) if isinstance(data, pd.DataFrame) else data


def _write_shard(directory: Path, relative: str, data: pa.Table) -> FileEntry:
    """Write one shard of a streamed table and return its commit-log entry."""
    write_parquet(data, directory / relative, **SHARD_OPTIONS[relative.split("/")[0]])
    return file_entry(directory, relative, data.num_rows)
