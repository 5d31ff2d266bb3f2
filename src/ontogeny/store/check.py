"""`ontogeny check`: verify every file of a run against what its commits recorded (size, sha256, rows)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from ..exceptions import OntogenyError
from .commits import FileEntry, file_sha256, read_commits
from .layout import COMMITS, WRITER_LOCK, WRITERS_LIST, Layout, seal_broken
from .lock import is_locked
from .writer import is_analysis_table


@dataclass
class CheckReport:
    """What `check_run` found: `problems` (the run is damaged), `notes` (harmless), and counts of what was verified."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {"writers": 0, "files": 0, "rows": 0, "weights": 0,
                                                             "tables": 0})

    @property
    def ok(self) -> bool:
        return not self.problems


def check_run(path: str | Path) -> CheckReport:
    """Verify the run at `path`: meta and spec, every writer's log and listed files, weights, analysis tables."""
    report = CheckReport()
    layout = Layout(path)
    try:
        meta = layout.read_meta()
    except OntogenyError as err:
        report.problems.append(str(err))
        return report
    if seal_broken(meta):
        report.problems.append(f"{layout.meta}: edited by hand after ontogeny wrote it (its seal no longer matches): "
                               "its producer, times and spec hash cannot be trusted")
    if meta.get("producer", {}).get("kind") == "ontogeny":
        _check_spec(layout, report, meta["producer"].get("spec_sha256"))
    names, listed = layout.writer_names(), layout.listed_writers()
    for name in sorted(listed - set(names)):
        report.problems.append(f"{layout.writer(name)}: listed in {WRITERS_LIST} as having committed, but its "
                               f"directory or {COMMITS} is gone (its rows are lost)")
    for name in names:
        if listed and name not in listed:
            report.problems.append(f"{layout.writer(name)}: has commits but is not in {WRITERS_LIST} (copied in "
                                   "from elsewhere, or killed right after its first commit: reopening it lists it)")
        _check_writer(layout, name, report)
    _check_weights(layout, report)
    for table in sorted(layout.root.glob("*.parquet")):
        if not is_analysis_table(table.stem):
            report.problems.append(f"{table}: not a table of the run (its name is reserved for committed rows, "
                                   "which it would shadow); remove it")
            continue
        try:
            pq.read_metadata(table)
            report.counts["tables"] += 1
        except Exception as err:  # noqa: BLE001 (any failure to read is the finding)
            report.problems.append(f"{table}: damaged ({_first_line(err)})")
    return report


def _check_spec(layout: Layout, report: CheckReport, trained: str | None) -> None:
    from ..spec import load_spec, trained_under

    try:
        spec = load_spec(layout.spec, check_machine=False)
    except OntogenyError as err:
        report.problems.append(str(err))
        return
    if not trained_under(layout.spec, spec, trained):
        report.problems.append(f"{layout.spec}: edited after training (its sha256 is not meta.json's spec_sha256)")


def _check_writer(layout: Layout, name: str, report: CheckReport) -> None:
    directory = layout.writer(name)
    try:
        committed, length = read_commits(directory)
    except OntogenyError as err:
        report.problems.append(str(err))
        return
    report.counts["writers"] += 1
    in_use = is_locked(directory / WRITER_LOCK)
    if (directory / COMMITS).stat().st_size > length and not in_use:
        report.notes.append(f"{directory / COMMITS}: ends in a commit cut off by a crash (dropped when it reopens)")
    entries: list[FileEntry] = [e for shards in committed.shards.values() for e in shards.values()]
    entries += list(committed.tables.values()) + ([committed.state] if committed.state else [])
    for entry in entries:
        problem = _verify(directory / entry.file, entry.size, entry.sha256)
        if problem is None and entry.rows is not None:
            problem = _rows_differ(directory / entry.file, entry.rows)
        if problem:
            report.problems.append(f"{directory / entry.file}: {problem} (writer {name}, commit log)")
        else:
            report.counts["files"] += 1
            report.counts["rows"] += entry.rows or 0
    live = committed.files() | {COMMITS, WRITER_LOCK}
    extra = [p for p in directory.rglob("*") if p.is_file() and p.relative_to(directory).as_posix() not in live]
    if extra:
        why = "being written now" if in_use else "left uncommitted by a stopped writer; deleted when it reopens"
        report.notes.append(f"writer {name}: {len(extra)} file(s) not in any commit ({why}), not read")


def _check_weights(layout: Layout, report: CheckReport) -> None:
    from .run import Run

    try:
        with Run(layout.root) as run:
            checkpoints = run.checkpoints()
    except OntogenyError:
        return  # the broken shard is reported already
    for path, sha256 in zip(checkpoints.path, checkpoints.sha256):
        problem = _verify(layout.root / path, None, sha256)
        if problem:
            report.problems.append(f"{layout.root / path}: {problem} (checkpoints table)")
        else:
            report.counts["weights"] += 1


def _verify(path: Path, size: int | None, sha256: str) -> str | None:
    """None if `path` has this size and sha256, else what is wrong with it."""
    try:
        actual = path.stat().st_size
        if size is not None and actual != size:
            return f"{actual} bytes, committed with {size} (truncated or overwritten)"
        digest = file_sha256(path)
    except FileNotFoundError:
        return "missing"
    except OSError as err:
        return f"unreadable ({err.strerror or err})"
    return None if digest == sha256 else "content changed (sha256 differs from the one recorded)"


def _rows_differ(path: Path, rows: int) -> str | None:
    try:
        actual = pq.read_metadata(path).num_rows
    except Exception as err:  # noqa: BLE001
        return f"not readable as Parquet ({_first_line(err)})"
    return None if actual == rows else f"{actual} rows, committed with {rows}"


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]
