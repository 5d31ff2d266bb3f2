"""The run store: one directory per run, Parquet tables read through DuckDB (see schema.py for every column)."""

from .run import Run, open_run
from .schema import CHECKPOINTS, EXAMPLES, MEMBERS, SCALARS, STREAMED, SUBSETS, WRITER_TABLES
from .writer import ShardWriter, write_table

__all__ = [
    "CHECKPOINTS", "EXAMPLES", "MEMBERS", "SCALARS", "STREAMED", "SUBSETS", "WRITER_TABLES",
    "Run", "ShardWriter", "open_run", "write_table",
]
