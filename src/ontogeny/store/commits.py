"""A writer's commit log (`commits.jsonl`): one JSON line per commit naming every file it made or retired.

A commit is durable once its line, ending in a newline, is on disk. A line without its newline was cut off by a
crash mid-commit and does not count. Readers see exactly the files the complete lines add up to, so rows of a
commit in progress, or of one that never finished, are never read; a listed file that is missing, or whose size or
sha256 differs, is corruption, and `check` says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..exceptions import StoreError
from .layout import COMMITS


@dataclass(frozen=True)
class FileEntry:
    """One file a commit made: its path relative to the writer directory, rows (None for state), bytes, sha256."""

    file: str
    rows: int | None
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "rows": self.rows, "size": self.size, "sha256": self.sha256}


@dataclass
class Committed:
    """What a writer's complete commits add up to."""

    seq: int = 0
    shards: dict[str, dict[str, FileEntry]] = field(default_factory=dict)  # table -> {file: entry}, commit order
    tables: dict[str, FileEntry] = field(default_factory=dict)  # this writer's version of each whole table
    state: FileEntry | None = None  # the state saved with the latest commit (None if it saved none)
    info: dict[str, Any] = field(default_factory=dict)  # what the producer said of its latest commit (e.g. its step)

    def files(self) -> set[str]:
        """Every live file, relative to the writer directory."""
        live = {name for entries in self.shards.values() for name in entries}
        live.update(entry.file for entry in self.tables.values())
        if self.state is not None:
            live.add(self.state.file)
        return live


def read_commits(directory: Path) -> tuple[Committed, int]:
    """Replay `directory`'s commit log; return what it adds up to and the length in bytes of its complete lines.

    Raises StoreError naming the file and line if a complete line is damaged.
    """
    path = directory / COMMITS
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Committed(), 0
    complete = data.rfind(b"\n") + 1  # a cut-off last line is a commit that never happened
    committed = Committed()
    for number, line in enumerate(data[:complete].splitlines(), start=1):
        try:
            record = json.loads(line)
            apply_commit(committed, record)
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise StoreError(f"{path}: line {number} is damaged ({err}); run `ontogeny check`") from None
    return committed, complete


def append_commit(directory: Path, record: dict[str, Any]) -> None:
    """Append one commit line and fsync it: from here on the commit is durable."""
    record = {**record, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
    with open(directory / COMMITS, "ab") as log:
        log.write(line)
        log.flush()
        os.fsync(log.fileno())


def truncate_log(directory: Path, length: int) -> None:
    """Cut the log back to its first `length` bytes (a crash's half-written line)."""
    with open(directory / COMMITS, "r+b") as log:
        log.truncate(length)
        os.fsync(log.fileno())


def file_entry(directory: Path, relative: str, rows: int | None) -> FileEntry:
    """The entry of a file just written: its size and sha256 (read back while it is in the page cache)."""
    path = directory / relative
    return FileEntry(relative, rows, path.stat().st_size, file_sha256(path))


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def apply_commit(committed: Committed, record: dict[str, Any]) -> None:
    """Add one commit line's files to `committed` (and retire those it removes or replaces)."""
    seq = int(record["seq"])
    if seq != committed.seq + 1:
        raise ValueError(f"commit {seq} follows commit {committed.seq}")
    committed.seq = seq
    for name in record.get("removed", []):
        table = name.split("/")[0]
        if committed.shards.get(table, {}).pop(name, None) is None:
            raise ValueError(f"removes {name}, which no earlier commit made")
    for table, entries in record.get("added", {}).items():
        shards = committed.shards.setdefault(table, {})
        for entry in entries:
            shards[entry["file"]] = FileEntry(**entry)
    for table, entry in record.get("tables", {}).items():
        committed.tables[table] = FileEntry(**entry)
    state = record.get("state")
    committed.state = FileEntry(**state) if state else None
    committed.info = dict(record.get("info") or {})
