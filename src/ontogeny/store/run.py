"""Reading a run: its meta and spec, whole tables, and every writer's committed shards through one DuckDB connection.

Readers see exactly what the writers' commit logs list (commits.py), so a run still being written reads as
everything committed so far, and rows of a commit in progress are never read. A listed file that is missing or
cannot be read raises StoreError naming it; `ontogeny check` verifies every file against its size and sha256.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..exceptions import StoreError
from ..spec import Spec, load_spec, trained_under
from .commits import Committed, FileEntry, file_sha256, read_commits
from .layout import COMMITS, Layout, seal_broken
from .schema import SORT_KEYS, STREAMED, WRITER_TABLES, read_schema
from .writer import is_analysis_table

Filter = int | str | list | tuple | None

# DuckDB's names for the Arrow types of the schemas (for empty views of tables not written yet).
# Files whose content this process has checked against their commit, by (path, size, mtime): each is hashed once.
_VERIFIED: dict[tuple[str, int, int], str] = {}
_SQL_TYPES = {pa.int32(): "INTEGER", pa.int64(): "BIGINT", pa.float32(): "FLOAT", pa.float64(): "DOUBLE",
              pa.bool_(): "BOOLEAN", pa.string(): "VARCHAR"}


class Run:
    """One run directory (see layout.py): meta.json, writers' shards and tables, analysis tables."""

    def __init__(self, path: str | Path):
        self.layout = Layout(path)
        self.path = self.layout.root
        self.layout.read_meta()  # raises unless this is a run
        self._spec: Spec | None = None
        self._connection: duckdb.DuckDBPyConnection | None = None
        self._pinned: dict[str, Committed] | None = None

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    # ---- spec and meta ----

    @property
    def meta(self) -> dict[str, Any]:
        """meta.json as a dict, read afresh (producers update it): format, producer, versions, times."""
        return self.layout.read_meta()

    @property
    def producer(self) -> dict[str, Any]:
        """Who made the run: {"kind": "ontogeny" | "recorder" | "suite", ...} with what it was given."""
        return self.meta.get("producer", {})

    @property
    def has_spec(self) -> bool:
        """Whether the run was trained from a spec (by `ontogeny run`)."""
        return self.layout.spec.is_file()

    @property
    def spec(self) -> Spec:
        """The resolved spec the run was trained with (read once); StoreError for runs not made from a spec."""
        if self._spec is None:
            if not self.has_spec:
                raise StoreError(f"{self.path}: no spec.toml (a run made by {self.producer.get('kind', '?')})")
            spec = load_spec(self.layout.spec, check_machine=False)  # it may come from a bigger machine
            meta = self.meta
            if seal_broken(meta):
                raise StoreError(f"{self.layout.meta}: edited by hand after training (its seal no longer matches), so "
                                 f"the spec's hash in it cannot be trusted; run `ontogeny check {self.path}`")
            trained = meta.get("producer", {}).get("spec_sha256")
            if not trained_under(self.layout.spec, spec, trained):
                raise StoreError(f"{self.layout.spec}: edited after training (its sha256 is not the one in meta.json); "
                                 f"restore it, or run `ontogeny check {self.path}`")
            self._spec = spec
        return self._spec

    @property
    def steps(self) -> int | None:
        """The steps the run is meant to reach (the spec's, or the producer's), None if unknown."""
        if self.has_spec:
            return self.spec.steps
        return self.producer.get("steps")

    # ---- tables ----

    def members(self) -> pd.DataFrame:
        """One row per member: member, ensemble, init_seed, data_seed, status, diverged_step (nullable Int64),
        and one column per hyperparameter or member setting, named by its dotted key."""
        frames = self._writer_tables("members")
        frame = pd.concat(frames.values(), ignore_index=True) if frames else _empty("members")
        twice = frame.member[frame.member.duplicated()]
        if len(twice):
            owners = [w for w, f in frames.items() if twice.iloc[0] in set(f.member)]
            raise StoreError(f"{self.path}: member {twice.iloc[0]} is recorded by writers {', '.join(owners)}")
        frame["diverged_step"] = frame["diverged_step"].astype("Int64")  # one dtype whether or not any diverged
        return frame.sort_values("member", ignore_index=True)

    def subsets(self) -> pd.DataFrame:
        """One row per example x named subset: split, example, subset (the union over writers)."""
        return self._union("subsets")

    def tokens(self) -> pd.DataFrame:
        """One row per token example of a per-token probe: split, example, sequence, position, token, text."""
        return self._union("tokens")

    def revisions(self) -> pd.DataFrame:
        """One row per ingested checkpoint of a suite: member, step, revision, weights_sha256, config_sha256."""
        return self._union("revisions")

    def checkpoints(self) -> pd.DataFrame:
        """One row per saved weights file: member, step, path (relative to the run directory), sha256."""
        return self._streamed("checkpoints", {}, relation=False)

    def model(self, member: int, step: int, *, device: str = "cpu"):
        """Member `member` at `step` as a plain PyTorch model of its own (see `ontogeny.rebuild.member_model`)."""
        from ..rebuild import member_model  # the models live above the store: imported only when asked for

        return member_model(self, member, step, device=device)

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
        """Return the whole table `name`: an analysis table, or members / subsets."""
        if name == "members":
            return self.members()
        if name in ("subsets", "tokens", "revisions"):
            return getattr(self, name)()
        path = self.layout.table(name)
        if not is_analysis_table(name) or not path.is_file():
            raise StoreError(f"{path}: no such table (tables: {', '.join(self.tables()) or 'none'})")
        return _read_parquet(path)

    def tables(self) -> list[str]:
        """Return the names of the whole tables present (analysis tables, members, subsets), sorted."""
        names = {path.stem for path in self.path.glob("*.parquet") if is_analysis_table(path.stem)}
        names.update(name for name in WRITER_TABLES if self._writer_tables(name, read=False))
        return sorted(names)

    @contextlib.contextmanager
    def pinned(self) -> Iterator[Run]:
        """Read the streamed tables as the commits stand on entry: commits that land meanwhile are not seen, so that
        reads of a run still being written agree with each other (an analysis reads scalars, then examples). A whole
        table (members, checkpoints...) whose pinned version a later commit replaced is read in its newer version."""
        self._pinned = self.writers()
        try:
            yield self
        finally:
            self._pinned = None

    def writers(self, *, fresh: bool = False) -> dict[str, Committed]:
        """Every writer's committed files, by writer name (as pinned, unless `fresh`); StoreError (one line) if a
        writer the run lists as having committed has lost its directory or commit log (its rows would silently be
        missing)."""
        if self._pinned is not None and not fresh:
            return self._pinned
        names = self.layout.writer_names()
        missing = sorted(self.layout.listed_writers() - set(names))
        if missing:
            raise StoreError(f"{self.path}: writer {', '.join(missing)} committed rows but its commit log is gone "
                             f"(directory or {COMMITS} deleted); run `ontogeny check {self.path}`")
        return {name: read_commits(self.layout.writer(name))[0] for name in names}

    def sql(self, query: str, params: list | dict | None = None) -> pd.DataFrame:
        """Run `query` (with optional DuckDB `params`) and return its result; an empty frame if it returns none.

        Views named scalars, examples, checkpoints, members, subsets, tokens and every analysis table are registered
        (empty, with the schema columns, for tables not written yet).
        """
        self._register_views()
        try:
            result = self.connection.sql(query, params=params)
            return result.df() if result is not None else pd.DataFrame()
        except (duckdb.IOException, duckdb.InvalidInputException) as err:
            raise StoreError(f"{self.path}: {_first_line(err)}; run `ontogeny check {self.path}`") from None

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

    def shard_files(self, table: str) -> list[str]:
        """The committed shard files of the streamed `table`, over every writer; StoreError if one is missing."""
        files = []
        for name, committed in self.writers().items():
            directory = self.layout.writer(name)
            for relative, entry in committed.shards.get(table, {}).items():
                path = directory / relative
                self._verify(path, entry, name)
                files.append(str(path))
        return files

    def _verify(self, path: Path, entry: FileEntry, writer: str) -> None:
        """StoreError (one line) unless `path` holds what its commit recorded: its size (a stat catches deletion and
        truncation) and, the first time this process reads it, its sha256 (a flipped bit inside a page)."""
        try:
            stat = path.stat()
        except FileNotFoundError:
            stat = None
        if stat is None or stat.st_size != entry.size:
            found = "missing" if stat is None else f"{stat.st_size} bytes, committed with {entry.size}"
            raise StoreError(f"{path}: {found} (writer {writer}); run `ontogeny check {self.path}`")
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if _VERIFIED.get(key) == entry.sha256:
            return
        if file_sha256(path) != entry.sha256:
            raise StoreError(f"{path}: content changed since it was committed (sha256 differs; writer {writer}); run "
                             f"`ontogeny check {self.path}`")
        _VERIFIED[key] = entry.sha256

    def _union(self, table: str) -> pd.DataFrame:
        """The distinct rows of every writer's version of `table`, sorted by its keys."""
        frames = self._writer_tables(table)
        frame = pd.concat(frames.values(), ignore_index=True).drop_duplicates() if frames else _empty(table)
        return frame.sort_values(list(SORT_KEYS[table]), ignore_index=True)

    def _writer_tables(self, table: str, *, read: bool = True) -> dict[str, pd.DataFrame]:
        """Each writer's committed version of the whole `table`, by writer (writers without one left out)."""
        for attempt in range(3):
            try:
                frames = {}
                # a retry reads the commits afresh, pinned or not: the version read was replaced and deleted since
                for name, committed in self.writers(fresh=attempt > 0).items():
                    entry = committed.tables.get(table)
                    if entry is not None:
                        path = self.layout.writer(name) / entry.file
                        if read:
                            self._verify(path, entry, name)
                        frames[name] = _read_parquet(path) if read else None
                return frames
            except StoreError:
                if attempt == 2:  # not a version replaced by a commit that landed while we read: really missing
                    raise
        raise AssertionError("unreachable")

    def _streamed(self, table: str, filters: dict[str, Filter], *,
                  relation: bool) -> pd.DataFrame | duckdb.DuckDBPyRelation:
        schema = STREAMED[table]
        files = self.shard_files(table)
        if not files:
            empty = read_schema(schema).empty_table()
            return self.connection.from_arrow(empty) if relation else empty.to_pandas()
        clauses, params = [], {"files": files}
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
        try:
            result = self.connection.sql(query, params=params)
            return result if relation else result.df()
        except (duckdb.IOException, duckdb.InvalidInputException) as err:
            raise StoreError(f"{self.path}: cannot read {table} ({_first_line(err)}); "
                             f"run `ontogeny check {self.path}`") from None

    def _register_views(self) -> None:
        """(Re)create one view per table, so that shards committed since the last call are seen."""
        connection = self.connection
        for table, schema in STREAMED.items():
            files = self.shard_files(table)
            if files:
                connection.read_parquet(files).create_view(table, replace=True)
            else:  # an empty view, so queries on a fresh run still bind
                columns = ", ".join(f'NULL::{_SQL_TYPES[f.type]} AS "{f.name}"' for f in read_schema(schema))
                connection.execute(f'CREATE OR REPLACE TEMP VIEW "{table}" AS SELECT {columns} WHERE false')
        for name in WRITER_TABLES:
            connection.from_df(self.table(name)).create_view(name, replace=True)
        for path in self.path.glob("*.parquet"):  # analysis tables; a file named like a run table is not one
            if is_analysis_table(path.stem):
                connection.read_parquet(str(path)).create_view(path.stem, replace=True)


def open_run(path: str | Path) -> Run:
    """Open the run directory `path` for reading; raises StoreError if it is missing or not a run."""
    return Run(path)


def _empty(name: str) -> pd.DataFrame:
    return read_schema(WRITER_TABLES[name]).empty_table().to_pandas()


def _read_parquet(path: Path) -> pd.DataFrame:
    """A Parquet file as a frame; StoreError naming the file if it is damaged."""
    try:
        return pq.read_table(path).to_pandas()
    except FileNotFoundError:
        raise StoreError(f"{path}: missing") from None
    except (pa.ArrowException, OSError) as err:
        raise StoreError(f"{path}: damaged ({_first_line(err)})") from None


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _check(cast, value: Any, column: str) -> Any:
    try:
        if cast is str and not isinstance(value, str):
            raise TypeError(f"expected a string, got {value!r}")
        return cast(value)
    except TypeError as err:
        raise StoreError(f"filter {column}: {err}") from None
