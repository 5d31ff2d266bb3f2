"""Errors raised by ontogeny, each named for what went wrong."""


class OntogenyError(Exception):
    """Base class of every error ontogeny raises on purpose."""


class SpecError(OntogenyError, ValueError):
    """An experiment spec is invalid: the message names the file, the key and what is wrong."""

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None):
        self.source, self.key = source, key
        where = ": ".join(part for part in (source, key) if part)
        super().__init__(f"{where}: {message}" if where else message)


class StoreError(OntogenyError):
    """A run directory is missing, incomplete or inconsistent."""


class LockedError(StoreError):
    """Another process is writing the same run (or the same writer namespace of it)."""


class ResumeError(OntogenyError):
    """A run cannot be resumed (no saved state, or its spec changed)."""


class IngestError(OntogenyError):
    """A checkpoint suite cannot be ingested (a revision that does not exist or load, a bad probe)."""
