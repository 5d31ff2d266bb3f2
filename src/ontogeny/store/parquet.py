"""Rows to Parquet: checking and casting rows to the schema, and writing files atomically with the encodings
chosen for each streamed table."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..exceptions import StoreError
from .layout import TEMP_SUFFIX
from .schema import MEMBER_SETTINGS, MEMBER_STATUSES, SORT_KEYS, STREAMED, WRITER_TABLES

# Row groups are DuckDB's unit of parallel reading and of min/max pruning; 128k rows (about DuckDB's own
# row group size) keeps both useful without the per-group overhead showing.
ROW_GROUP_ROWS = 1 << 17
ZSTD_LEVEL = 1  # level 1 costs little CPU; higher levels barely shrink float losses


def to_table(table: str, columns: dict[str, Any]) -> pa.Table:
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


def cast_required(table: pa.Table, name: str) -> pa.Table:
    """Cast the required columns of a whole table to their schema types, raising StoreError if one is missing."""
    schema = WRITER_TABLES[name]
    missing = [field.name for field in schema if field.name not in table.column_names]
    if missing:
        raise StoreError(f"{name}: missing columns {missing}")
    fields = list(schema)
    if name == "members":  # the optional settings too, so that a column has one type whoever wrote it
        fields += [pa.field(c, t) for c, t in MEMBER_SETTINGS.items() if c in table.column_names]
    for field in fields:
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


def write_parquet(table: pa.Table, path: Path, **options: Any) -> None:
    """Write `table` to a temp file beside `path`, fsync it, then rename it over `path` (atomic on POSIX)."""
    temp = path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")
    try:
        pq.write_table(table, temp, compression="zstd", compression_level=ZSTD_LEVEL, **options)
        fsync(temp)
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


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


SHARD_OPTIONS = {table: _shard_options(table) for table in STREAMED}
