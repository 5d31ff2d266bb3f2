"""Writing a run: streamed tables as append-only Parquet shards, whole tables as atomically replaced files.

Durability is per commit. `ShardWriter.commit()` returns a sequence number that the trainer saves together with
its training state; `ShardWriter(run_dir, committed_seq=c)` deletes every shard written after commit `c`, so a run
killed at any moment and resumed from its last saved state ends with exactly the rows of an uninterrupted run.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..exceptions import StoreError
from .schema import MEMBER_STATUSES, SORT_KEYS, STREAMED, WHOLE

SHARD_GLOB = "part-*.parquet"  # readers glob only this: temp files never match it
SHARD_NAME = re.compile(r"part-(\d{8})-(\d{5})\.parquet")
TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # whole tables double as SQL view names
TEMP_SUFFIX = ".tmp"
MAX_PARTS = 100_000  # the five-digit part number of a shard name

# Row groups are DuckDB's unit of parallel reading and of min/max pruning; 128k rows (about DuckDB's own
# row group size) keeps both useful without the per-group overhead showing.
ROW_GROUP_ROWS = 1 << 17
ZSTD_LEVEL = 1  # level 1 costs little CPU; higher levels barely shrink float losses


class ShardWriter:
    """Buffers rows of the streamed tables (scalars, examples, checkpoints) and writes them as Parquet shards.

    Shard files are `<run_dir>/<table>/part-<seq:08d>-<n:05d>.parquet`, where `seq` is the pending commit number.
    A table's buffer is written out as soon as it holds `buffer_rows` rows, so memory stays flat however long the run.
    With `background=True` shards are encoded on one worker thread (Parquet encoding releases the GIL), so training
    goes on meanwhile; at most one shard is in flight, so memory stays bounded by about twice `buffer_rows`.
    """

    def __init__(self, run_dir: str | Path, *, committed_seq: int = 0, buffer_rows: int = 1_000_000,
                 background: bool = True):
        self.run_dir = Path(run_dir)
        if not self.run_dir.is_dir():
            raise StoreError(f"{self.run_dir}: no such run directory")
        if committed_seq < 0 or buffer_rows < 1:
            raise StoreError(f"need committed_seq >= 0 and buffer_rows >= 1 (got {committed_seq}, {buffer_rows})")
        self.buffer_rows = buffer_rows
        self.committed_seq = committed_seq
        self.pending_seq = committed_seq + 1
        self._chunks: dict[str, list[pa.Table]] = {table: [] for table in STREAMED}
        self._rows = dict.fromkeys(STREAMED, 0)
        self._parts = dict.fromkeys(STREAMED, 0)  # shard files started so far under the pending seq
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ontogeny-shards") if background else None
        self._in_flight: Future | None = None
        self._changed: set[str] = set()  # tables whose directory listing changed since the last commit
        for table in STREAMED:
            directory = self.run_dir / table
            directory.mkdir(exist_ok=True)
            _discard_uncommitted(directory, committed_seq)
            self._changed.add(table)

    def append(self, table: str, columns: dict[str, Any]) -> None:
        """Buffer rows for `table`; `columns` maps every schema column to a 1-D array, list or one broadcast scalar.

        Values are cast to the schema types (an unsafe cast, such as 2.5 to an integer column, raises StoreError).
        Arrays are copied, so the caller may reuse its buffers.
        """
        chunk = _to_table(table, columns)
        if chunk.num_rows == 0:
            return
        self._chunks[table].append(chunk)
        self._rows[table] += chunk.num_rows
        if self._rows[table] >= self.buffer_rows:
            self._flush(table)

    def commit(self) -> int:
        """Write every buffered row, fsync, and return the sequence number that now holds them durably."""
        for table in STREAMED:
            self._flush(table)
        self._wait()
        for table in sorted(self._changed):
            _fsync(self.run_dir / table)  # makes the new names (and resume's deletions) durable
        self._changed.clear()
        seq = self.committed_seq = self.pending_seq
        self.pending_seq += 1
        self._parts = dict.fromkeys(STREAMED, 0)
        return seq

    def buffered(self, table: str) -> int:
        """Return the number of rows of `table` held in memory and not yet handed to a shard file."""
        return self._rows[table]

    def close(self) -> None:
        """Finish the shard in flight and stop the worker thread. Rows not committed stay uncommitted."""
        try:
            self._wait()
        finally:
            if self._executor is not None:
                self._executor.shutdown()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _flush(self, table: str) -> None:
        if not self._rows[table]:
            return
        n = self._parts[table]
        if n >= MAX_PARTS:
            raise StoreError(f"{self.run_dir / table}: more than {MAX_PARTS} shards in one commit (commit more often)")
        # One dictionary for the whole shard lets Parquet store the dictionary as is, without re-hashing strings.
        data = pa.concat_tables(self._chunks[table]).unify_dictionaries()
        path = self.run_dir / table / f"part-{self.pending_seq:08d}-{n:05d}.parquet"
        self._chunks[table], self._rows[table] = [], 0
        self._parts[table] = n + 1
        self._changed.add(table)
        self._wait()  # one shard in flight at most: memory stays bounded
        if self._executor is None:
            _write_parquet(data, path, **_SHARD_OPTIONS[table])
        else:
            self._in_flight = self._executor.submit(_write_parquet, data, path, **_SHARD_OPTIONS[table])

    def _wait(self) -> None:
        """Block until the shard in flight is written; a failed write raises here."""
        future, self._in_flight = self._in_flight, None
        if future is not None:
            future.result()


def write_table(run_dir: str | Path, name: str, data: pd.DataFrame | pa.Table) -> Path:
    """Write a whole table (members, subsets or an analysis table) as `<run_dir>/<name>.parquet`, atomically.

    Returns the file's path. `members` and `subsets` must hold their schema's columns, which are cast to its types.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise StoreError(f"{run_dir}: no such run directory")
    if not TABLE_NAME.fullmatch(name) or name in STREAMED:
        raise StoreError(f"{name!r}: a table name must be an identifier other than {', '.join(STREAMED)}")
    table = pa.Table.from_pandas(data, preserve_index=False) if isinstance(data, pd.DataFrame) else data
    if name in WHOLE:
        table = _cast_required(table, name)
    path = run_dir / f"{name}.parquet"
    _write_parquet(table, path)
    return path


# ---- helpers --------------------------------------------------------------------------------------------------


def _to_table(table: str, columns: dict[str, Any]) -> pa.Table:
    """Validate `columns` against the schema of `table` and return them as one Arrow table of schema types."""
    schema = STREAMED.get(table)
    if schema is None:
        raise StoreError(f"unknown streamed table {table!r} (known: {', '.join(STREAMED)})")
    missing, extra = set(schema.names) - set(columns), set(columns) - set(schema.names)
    if missing or extra:
        raise StoreError(f"{table}: columns must be {schema.names} (missing {sorted(missing)}, extra {sorted(extra)})")
    lengths = {name: len(value) for name, value in columns.items() if not _is_scalar(value)}
    if len(set(lengths.values())) > 1:
        raise StoreError(f"{table}: columns differ in length {lengths}")
    n_rows = next(iter(lengths.values()), 1)  # scalars alone make one row
    try:
        arrays = [_to_array(columns[field.name], field.type, n_rows) for field in schema]
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError) as err:
        raise StoreError(f"{table}: {err}") from None
    for field, array in zip(schema, arrays):
        if array.null_count:
            raise StoreError(f"{table}.{field.name}: holds nulls")
    return pa.Table.from_arrays(arrays, schema=schema)


def _to_array(value: Any, dtype: pa.DataType, n_rows: int) -> pa.Array:
    """Return `value` (1-D array-like, or a scalar repeated `n_rows` times) as a fresh Arrow array of `dtype`."""
    if pa.types.is_dictionary(dtype) or pa.types.is_string(dtype):
        if not _is_scalar(value):
            return pa.array(value, dtype)  # raises ArrowTypeError for anything but strings
        if pa.types.is_string(dtype):
            return pa.array([value] * n_rows, dtype)
        # The fast path for a whole chunk of one split or name: no per-row strings at all.
        indices = pa.array(np.zeros(n_rows, dtype=np.int32))
        return pa.DictionaryArray.from_arrays(indices, pa.array([value], dtype.value_type))
    array = np.asarray(value)
    if array.ndim == 0:
        array = np.full(n_rows, array)
    if array.ndim != 1:
        raise ValueError(f"expected a 1-D array, got shape {array.shape}")
    if array.dtype.kind in "OUS":
        raise TypeError(f"expected numbers, got {array.dtype}")
    if array.dtype == dtype.to_pandas_dtype():
        array = array.copy()  # Arrow would share the caller's memory, which the caller may overwrite
    return pa.array(array).cast(dtype, safe=True)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | bytes) or np.ndim(value) == 0


def _cast_required(table: pa.Table, name: str) -> pa.Table:
    """Cast the required columns of a whole table to their schema types, raising StoreError if one is missing."""
    schema = WHOLE[name]
    missing = [field.name for field in schema if field.name not in table.column_names]
    if missing:
        raise StoreError(f"{name}: missing columns {missing}")
    for field in schema:
        index = table.column_names.index(field.name)
        try:
            column = table.column(index).cast(field.type, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise StoreError(f"{name}.{field.name}: {err}") from None
        table = table.set_column(index, field.with_nullable(True), column)
    if name == "members":
        bad = set(table.column("status").to_pylist()) - set(MEMBER_STATUSES)
        if bad:
            raise StoreError(f"members.status: {sorted(map(str, bad))} not in {MEMBER_STATUSES}")
    return table


def _write_parquet(table: pa.Table, path: Path, **options: Any) -> None:
    """Write `table` to a temp file beside `path`, fsync it, then rename it over `path` (atomic on POSIX)."""
    temp = path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")
    try:
        pq.write_table(table, temp, compression="zstd", compression_level=ZSTD_LEVEL, **options)
        _fsync(temp)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _shard_options(table: str) -> dict[str, Any]:
    """Parquet options for the shards of `table`: per-column encodings chosen for speed and size.

    Integer keys are runs and ramps (delta packing shrinks them to almost nothing), floats are noise
    (byte-stream split helps zstd), strings repeat (dictionary). Min/max statistics on the sort keys only,
    which is what DuckDB prunes row groups by.
    """
    schema = STREAMED[table]
    encodings = {}
    for field in schema:
        if pa.types.is_integer(field.type):
            encodings[field.name] = "DELTA_BINARY_PACKED"
        elif pa.types.is_floating(field.type):
            encodings[field.name] = "BYTE_STREAM_SPLIT"
    dictionary = [f.name for f in schema if pa.types.is_dictionary(f.type) or pa.types.is_string(f.type)]
    return {"row_group_size": ROW_GROUP_ROWS, "use_dictionary": dictionary, "column_encoding": encodings,
            "write_statistics": list(SORT_KEYS[table])}


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_SHARD_OPTIONS = {table: _shard_options(table) for table in STREAMED}


def _discard_uncommitted(directory: Path, committed_seq: int) -> None:
    """Delete shards written after commit `committed_seq` and any temp file a killed writer left behind."""
    for path in directory.iterdir():
        match = SHARD_NAME.fullmatch(path.name)
        if path.name.endswith(TEMP_SUFFIX) or (match and int(match.group(1)) > committed_seq):
            path.unlink()

