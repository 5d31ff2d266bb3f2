"""Where everything lives in a run directory: the one module that spells out its file names.

```
RUN/
  meta.json                    the marker: written first, names the producer; only such a directory is a run
  spec.toml                    the resolved spec (runs made by `ontogeny run` only)
  .lock                        held by a producer that writes run-wide files (`ontogeny run`)
  .members.lock                held briefly while a recorder process is given its member id
  writers.jsonl                every writer that has committed, one line each: a writer gone missing is noticed
  <analysis table>.parquet     whole tables written by `analyze`
  writers/<writer>/            one namespace per producer process: nobody else writes here
      lock                     held while the writer is open
      commits.jsonl            the commit log: every file of every commit, with rows and sha256
      <table>/part-<seq>-<n>.parquet   streamed rows (scalars, examples, checkpoints)
      <table>-<seq>.parquet    this writer's version of a whole table (members, subsets, tokens)
      state-<seq>.bin          the producer's state saved with a commit (the trainer's resume state)
  weights/member-<m>/step-<s>.safetensors
```
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..exceptions import StoreError
from ..names import SAFE_NAME_RULE, is_safe_name


FORMAT = "ontogeny-run/2"  # the marker's value; --overwrite removes nothing without it
META = "meta.json"
SPEC = "spec.toml"
RUN_LOCK = ".lock"
MEMBERS_LOCK = ".members.lock"
WRITERS = "writers"
WEIGHTS = "weights"
REPORT = "report.html"
COMMITS = "commits.jsonl"
WRITERS_LIST = "writers.jsonl"
WRITER_LOCK = "lock"
TEMP_SUFFIX = ".tmp"

# One safe path component: a run name or writer name never climbs out of its parent or hides as a dotfile.
class Layout:
    """The paths of one run directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.meta = self.root / META
        self.spec = self.root / SPEC
        self.run_lock = self.root / RUN_LOCK
        self.writers = self.root / WRITERS
        self.report = self.root / REPORT

    def table(self, name: str) -> Path:
        """A whole table written at the top of the run (analysis tables)."""
        return self.root / f"{name}.parquet"

    def writer(self, name: str) -> Path:
        if not is_safe_name(name):
            raise StoreError(f"{name!r}: a writer name must be {SAFE_NAME_RULE}")
        return self.writers / name

    def writer_names(self) -> list[str]:
        """The writers that have a commit log, sorted."""
        if not self.writers.is_dir():
            return []
        return sorted(p.name for p in self.writers.iterdir() if (p / COMMITS).is_file() and is_safe_name(p.name))

    def listed_writers(self) -> set[str]:
        """The writers that have committed, as the run lists them (empty for runs made before the list existed)."""
        try:
            lines = (self.root / WRITERS_LIST).read_text().splitlines()
        except FileNotFoundError:
            return set()
        names = set()
        for line in lines:
            try:
                names.add(json.loads(line)["writer"])
            except (ValueError, KeyError, TypeError):
                continue  # a line cut off by a crash
        return names

    def list_writer(self, name: str) -> None:
        """Add `name` to the run's list of writers (one appended line, fsynced)."""
        line = (json.dumps({"writer": name}) + "\n").encode()
        fd = os.open(self.root / WRITERS_LIST, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    @staticmethod
    def shard(table: str, seq: int, part: int) -> str:
        """A streamed table's shard, relative to its writer's directory."""
        return f"{table}/part-{seq:08d}-{part:05d}.parquet"

    @staticmethod
    def writer_table(name: str, seq: int) -> str:
        """A writer's version of a whole table made by commit `seq`, relative to its directory."""
        return f"{name}-{seq:08d}.parquet"

    @staticmethod
    def state(seq: int) -> str:
        """The producer state saved with commit `seq`, relative to the writer's directory."""
        return f"state-{seq:08d}.state"

    @staticmethod
    def weights(member: int, step: int) -> Path:
        """A member's weights at a step, relative to the run directory (as the checkpoints table stores it)."""
        return Path(WEIGHTS) / f"member-{member:05d}" / f"step-{step:09d}.safetensors"

    # ---- the marker ----

    def is_run(self) -> bool:
        """Whether the directory carries ontogeny's marker (a meta.json naming the format)."""
        try:
            return json.loads(self.meta.read_text()).get("format") == FORMAT
        except (OSError, ValueError, AttributeError):
            return False

    def read_meta(self) -> dict[str, Any]:
        """meta.json as a dict; StoreError (one line) if the directory is not a run or the file is damaged."""
        if not self.root.is_dir():
            raise StoreError(f"{self.root}: no such run directory")
        if not self.meta.is_file():
            raise StoreError(f"{self.root}: not a run directory (no {META})")
        try:
            meta = json.loads(self.meta.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise StoreError(f"{self.meta}: damaged ({_first_line(err)})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise StoreError(f"{self.meta}: not an ontogeny run marker (expected format {FORMAT!r})")
        return meta


def sealed(meta: dict[str, Any]) -> dict[str, Any]:
    """meta with its `seal`: the sha256 of its other fields, so that a hand edit of meta.json (producer, finished,
    spec_sha256) can be told from ontogeny's own writes, which always reseal."""
    body = {key: value for key, value in meta.items() if key != "seal"}
    return {**body, "seal": hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()}


def seal_broken(meta: dict[str, Any]) -> bool:
    """Whether meta.json was edited after ontogeny last wrote it (runs written before seals have none: False)."""
    return "seal" in meta and sealed(meta)["seal"] != meta["seal"]


def _first_line(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__
