"""The run store: one directory per run, Parquet tables read through DuckDB (see schema.py for every column).

Everything outside the store uses what this module exports. Readers: `Run`, `open_run`. Producers: make or join a
run (`create_run`, `join_run`; `check_out` refuses an output inside what a command reads), build members rows
(`member_row`, `members_frame`; `claim_member` takes an id when many processes join one run), write through a
`ShardWriter` (or whole analysis tables with `write_table`), keep `meta.json` current (`update_meta`), and turn a
full disk into one line (`one_line_when_disk_full`); `Layout` names a run's paths, `FileLock` its locks, and
`check_run` verifies a whole run.
"""

from .check import check_run
from .commits import read_commits
from .create import (check_out, create_run, join_run, now, one_line_when_disk_full, os_reason, update_meta,
                     write_bytes, write_file)
from .layout import COMMITS, MEMBERS_LOCK, REPORT, TEMP_SUFFIX, WEIGHTS, Layout
from .lock import FileLock
from .members import claim_member, member_row, members_frame
from .run import Run, open_run
from .schema import CHECKPOINTS, EXAMPLES, MEMBERS, SCALARS, STREAMED, SUBSETS, WRITER_TABLES
from .writer import ShardWriter, write_table

__all__ = [
    "CHECKPOINTS", "COMMITS", "EXAMPLES", "MEMBERS", "MEMBERS_LOCK", "REPORT", "SCALARS", "STREAMED", "SUBSETS",
    "TEMP_SUFFIX", "WEIGHTS", "WRITER_TABLES", "FileLock", "Layout", "Run", "ShardWriter", "check_out", "check_run",
    "claim_member", "create_run", "join_run", "member_row", "members_frame", "now", "one_line_when_disk_full",
    "open_run", "os_reason", "read_commits", "update_meta", "write_bytes", "write_file", "write_table",
]
