"""Reading a run: its spec and meta, whole tables, and the streamed shards through one DuckDB connection.

Only files named `part-*.parquet` are read, and each appears by an atomic rename, so a run still being written
reads as everything written so far.
"""

from __future__ import annotations

import json
import operator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..exceptions import StoreError
from ..spec import Spec, load_spec
from .schema import SORT_KEYS, STREAMED, WHOLE, read_schema
from .writer import SHARD_GLOB, TABLE_NAME

Filter = int | str | list | tuple | None

# DuckDB's names for the Arrow types of the schemas (for empty views of tables not written yet).
_SQL_TYPES = {pa.int32(): "INTEGER", pa.int64(): "BIGINT", pa.float32(): "FLOAT", pa.float64(): "DOUBLE",
              pa.bool_(): "BOOLEAN", pa.string(): "VARCHAR"}


class Run:
    """One run directory: `spec.toml`, `meta.json`, whole tables (`<name>.parquet`) and shard directories."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise StoreError(f"{self.path}: no such run directory")
        if not (self.path / "spec.toml").is_file():
            raise StoreError(f"{self.path}: not a run directory (no spec.toml)")
        self._spec: Spec | None = None
        self._connection: duckdb.DuckDBPyConnection | None = None

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    # ---- spec and meta ----

    @property
    def spec(self) -> Spec:
        """The resolved spec the run was trained with (read once)."""
        if self._spec is None:
            self._spec = load_spec(self.path / "spec.toml", check_machine=False)  # it may come from a bigger machine
        return self._spec

    @property
    def meta(self) -> dict[str, Any]:
        """meta.json as a dict ({} if the trainer has not written it); read afresh, as the trainer may update it."""
        path = self.path / "meta.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    # ---- tables ----

    def members(self) -> pd.DataFrame:
        """One row per member: member, ensemble, init_seed, data_seed, status, diverged_step (nullable Int64),
        and one column per hyperparameter, named by its dotted spec key."""
        frame = self._whole("members")
        frame["diverged_step"] = frame["diverged_step"].astype("Int64")  # one dtype whether or not any diverged
        return frame

    def subsets(self) -> pd.DataFrame:
        """One row per example x named subset: split, example, subset."""
        return self._whole("subsets")

    def checkpoints(self) -> pd.DataFrame:
        """One row per saved weights file: member, step, path (relative to the run directory), sha256."""
        return self._streamed("checkpoints", {}, relation=False)

    def scalars(self, member: Filter = None, step: Filter = None, name: Filter = None, *,
                relation: bool = False) -> pd.DataFrame | duckdb.DuckDBPyRelation:
        """Rows (member, step, name, value) matching the filters (a value or a list each), sorted by them.

        With `relation=True`, returns an unsorted, lazy DuckDB relation instead (valid until `close()`).
        """
        return self._streamed("scalars", {"member": member, "step": step, "name": name}, relation=relation)

    def examples(self, member: Filter = None, step: Filter = None, split: Filter = None, example: Filter = None, *,
                 relation: bool = False) -> pd.DataFrame | duckdb.DuckDBPyRelation:
        """Rows (member, step, split, example, loss, correct) matching the filters, sorted by those four keys.

        With `relation=True`, returns an unsorted, lazy DuckDB relation instead (valid until `close()`).
        """
        filters = {"member": member, "step": step, "split": split, "example": example}
        return self._streamed("examples", filters, relation=relation)

    def table(self, name: str) -> pd.DataFrame:
        """Return the whole table `name` (an analysis table, or members / subsets) as written by `write_table`."""
        path = self.path / f"{name}.parquet"
        if not TABLE_NAME.fullmatch(name) or not path.is_file():
            raise StoreError(f"{path}: no such table (tables: {', '.join(self.tables()) or 'none'})")
        return pq.read_table(path).to_pandas()

    def tables(self) -> list[str]:
        """Return the names of the whole tables present, sorted."""
        return sorted(path.stem for path in self.path.glob("*.parquet") if TABLE_NAME.fullmatch(path.stem))

    def sql(self, query: str, params: list | dict | None = None) -> pd.DataFrame:
        """Run `query` (with optional DuckDB `params`) and return its result; an empty frame if it returns none.

        Views named scalars, examples, checkpoints, members, subsets and every analysis table are registered
        (empty, with the schema columns, for tables not written yet).
        """
        self._register_views()
        result = self.connection.sql(query, params=params)
        return result.df() if result is not None else pd.DataFrame()

    # ---- connection ----

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """This run's in-memory DuckDB connection, opened on first use."""
        if self._connection is None:
            self._connection = duckdb.connect()
        return self._connection

    def close(self) -> None:
        """Close the DuckDB connection (relations returned earlier stop working); the Run may be used again."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- helpers ----

    def _shard_glob(self, table: str) -> str | None:
        """Return the glob of `table`'s shards, or None if there is no shard yet."""
        directory = self.path / table
        return str(directory / SHARD_GLOB) if any(directory.glob(SHARD_GLOB)) else None

    def _streamed(self, table: str, filters: dict[str, Filter], *,
                  relation: bool) -> pd.DataFrame | duckdb.DuckDBPyRelation:
        schema = STREAMED[table]
        glob = self._shard_glob(table)
        if glob is None:
            empty = read_schema(schema).empty_table()
            return self.connection.from_arrow(empty) if relation else empty.to_pandas()
        clauses, params = [], {"files": glob}
        for column, value in filters.items():
            if value is None:
                continue
            cast = str if pa.types.is_dictionary(schema.field(column).type) else operator.index
            values = [value] if np.ndim(value) == 0 else list(value)
            names = [f"{column}_{i}" for i in range(len(values))]
            params.update((key, _check(cast, v, column)) for key, v in zip(names, values))
            # Placeholders only: user values never enter the SQL text. An empty list matches nothing.
            clauses.append(f'"{column}" IN ({", ".join("$" + key for key in names)})' if names else "false")
        query = "SELECT * FROM read_parquet($files)"
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        if not relation:
            query += " ORDER BY " + ", ".join(f'"{key}"' for key in SORT_KEYS[table])
        result = self.connection.sql(query, params=params)
        return result if relation else result.df()

    def _whole(self, name: str) -> pd.DataFrame:
        path = self.path / f"{name}.parquet"
        if not path.is_file():
            return read_schema(WHOLE[name]).empty_table().to_pandas()
        frame = pq.read_table(path).to_pandas()
        return frame.sort_values(list(SORT_KEYS[name]), ignore_index=True)

    def _register_views(self) -> None:
        """(Re)create one view per table, so that shards written since the last call are seen."""
        connection = self.connection
        present = self.tables()
        for table, schema in (*STREAMED.items(), *WHOLE.items()):
            glob = self._shard_glob(table) if table in STREAMED else None
            if glob is not None:
                connection.read_parquet(glob).create_view(table, replace=True)
            elif table not in present:  # an empty view, so queries on a fresh run still bind
                columns = ", ".join(f'NULL::{_SQL_TYPES[f.type]} AS "{f.name}"' for f in read_schema(schema))
                connection.execute(f'CREATE OR REPLACE TEMP VIEW "{table}" AS SELECT {columns} WHERE false')
        for name in present:  # members, subsets and analysis tables
            connection.read_parquet(str(self.path / f"{name}.parquet")).create_view(name, replace=True)


def open_run(path: str | Path) -> Run:
    """Open the run directory `path` for reading; raises StoreError if it is missing or holds no spec.toml."""
    return Run(path)


def _check(cast, value: Any, column: str) -> Any:
    try:
        if cast is str and not isinstance(value, str):
            raise TypeError(f"expected a string, got {value!r}")
        return cast(value)
    except TypeError as err:
        raise StoreError(f"filter {column}: {err}") from None
