"""Making a run directory: the marker first, and never deleting anything that ontogeny did not mark as a run."""

from __future__ import annotations

import errno
import json
import os
import platform
import shutil
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .. import __version__
from ..exceptions import StoreError
from .layout import FORMAT, META, RUN_LOCK, TEMP_SUFFIX, WRITER_LOCK, Layout, sealed
from .lock import FileLock, holder, is_locked


def create_run(path: str | Path, producer: dict[str, Any], *, overwrite: bool = False,
               reads: Sequence[str | Path] = ()) -> FileLock:
    """Make `path` a new run of `producer` ({"kind": ..., ...}) and return its run lock, held.

    `path` may be missing or an empty directory. With `overwrite`, it may also be an earlier run (marked by
    ontogeny, and not in use), whose contents are deleted; anything else is refused with one line, and so is a
    `path` that is, holds or lies inside a directory in `reads` or inside another run (see `check_out`).
    """
    check_out(path, reads)
    layout = Layout(path)
    root = layout.root
    if root.exists() and not root.is_dir():
        raise StoreError(f"{root}: exists and is not a directory")
    if root.is_dir() and not layout.is_run() and any(p.name != RUN_LOCK for p in root.iterdir()):
        raise StoreError(_NOT_A_RUN.format(root=root))  # before the lock file: nothing is written into it
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(layout.run_lock, f"run {root}").acquire()
    except (NotADirectoryError, FileExistsError):
        raise StoreError(f"{root}: a parent of it is a file, not a directory") from None
    except OSError as err:
        raise StoreError(f"{root}: cannot create the run directory ({os_reason(err)})") from None
    try:
        contents = [p for p in root.iterdir() if p.name != RUN_LOCK]
        if contents:
            if not layout.is_run():
                raise StoreError(_NOT_A_RUN.format(root=root))
            if not overwrite:
                raise StoreError(f"{root} already holds a run: resume it with --resume, or pass --overwrite or "
                                 f"another --out")
            _check_no_writer(layout)
            for item in contents:
                shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()
        write_meta(root, {"format": FORMAT, "producer": producer, "created": now(), **machine()})
    except OSError as err:
        lock.release()
        raise StoreError(f"{root}: cannot write the run ({os_reason(err)})") from None
    except BaseException:
        lock.release()
        raise
    return lock


_NOT_A_RUN = "{root}: not empty and not an ontogeny run; refusing to write into it or delete it (choose another --out)"


def join_run(path: str | Path, producer: dict[str, Any], *, reads: Sequence[str | Path] = ()) -> Layout:
    """Make `path` a run of `producer` if it is not one yet (atomically, so processes may race); return its layout.

    An existing run must have been made by the same kind of producer; `reads` as in `create_run`.
    """
    check_out(path, reads)
    layout = Layout(path)
    try:
        layout.root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StoreError(f"{layout.root}: cannot create the run directory ({os_reason(err)})") from None
    if not layout.meta.exists():
        # another process's marker on its way in (its temp file, or the marker itself by now) is no reason to refuse
        if any(p for p in layout.root.iterdir() if p.name not in (RUN_LOCK, META) and not p.name.endswith(TEMP_SUFFIX)):
            raise StoreError(f"{layout.root}: not empty and not an ontogeny run (choose another directory)")
        meta = sealed({"format": FORMAT, "producer": producer, "created": now(), **machine()})
        temp = layout.root / f".{META}.{os.getpid()}{TEMP_SUFFIX}"
        temp.write_text(json.dumps(meta, indent=2))
        try:
            os.link(temp, layout.meta)  # fails if another process made it first: then theirs stands
        except FileExistsError:
            pass
        finally:
            temp.unlink()
    kind = layout.read_meta().get("producer", {}).get("kind")
    if kind != producer["kind"]:
        raise StoreError(f"{layout.root}: a run made by {kind!r}, not by {producer['kind']!r}")
    return layout


def check_out(path: str | Path, reads: Sequence[str | Path] = ()) -> None:
    """Refuse (StoreError, one line) an output run directory that is, holds or lies inside one of the directories
    the command reads (`--overwrite` would delete them), or that lies inside another run (whose files it would
    mix with its own)."""
    root = Path(path).resolve()
    for source in reads:
        source = Path(source).resolve()
        if root == source or source in root.parents or root in source.parents:
            where = "is" if root == source else "inside" if source in root.parents else "holds"
            raise StoreError(f"{path}: {where} {source}, which this command reads; choose another --out")
    for parent in root.parents:
        if Layout(parent).is_run():
            raise StoreError(f"{path}: inside the run {parent}; choose a directory outside it")


def write_meta(path: str | Path, meta: dict[str, Any]) -> None:
    """Replace meta.json atomically, sealed (see `layout.sealed`)."""
    write_file(Layout(path).meta, json.dumps(sealed(meta), indent=2))


def write_file(path: Path, text: str) -> None:
    """Replace the text file `path` atomically (a temp file beside it, fsynced, renamed over it)."""
    write_bytes(path, text.encode())


def write_bytes(path: Path, data: bytes) -> None:
    """Replace the file `path` atomically (a temp file beside it, fsynced, renamed over it)."""
    temp = path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")
    try:
        with open(temp, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def update_meta(path: str | Path, **fields: Any) -> dict[str, Any]:
    """Set `fields` in meta.json (None removes a field) and return the new meta; call it holding the run lock."""
    meta = Layout(path).read_meta()
    meta.update(fields)
    meta = {key: value for key, value in meta.items() if value is not None}
    write_meta(path, meta)
    return meta


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def machine() -> dict[str, Any]:
    import torch

    return {"ontogeny": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "host": platform.node()}


def os_reason(err: OSError) -> str:
    """A short reason for an OS error: 'no space left on device', 'read-only file system', ..."""
    return os.strerror(err.errno).lower() if err.errno else str(err)


def is_disk_full(err: BaseException) -> bool:
    """Whether `err` is a full disk or quota (pyarrow's write errors carry it in their text, not always as errno)."""
    return isinstance(err, OSError) and (err.errno in (errno.ENOSPC, errno.EDQUOT) or
                                         "no space left on device" in str(err).lower())


@contextmanager
def one_line_when_disk_full(path: str | Path, then: str):
    """Turn a full disk inside the block into one StoreError line naming `path` and what to do `then`."""
    try:
        yield
    except OSError as err:
        if is_disk_full(err):
            raise StoreError(f"{path}: no space left on device; free some space, then {then} (nothing committed is "
                             "lost)") from None
        raise


def _check_no_writer(layout: Layout) -> None:
    for name in layout.writer_names():
        lock = layout.writer(name) / WRITER_LOCK
        if is_locked(lock):
            raise StoreError(f"{layout.root}: writer {name} is in use by {holder(lock)}; not overwriting")
