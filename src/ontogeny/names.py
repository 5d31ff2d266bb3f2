"""The one rule for names that become path components (runs, writers, recipes), used by the store and the spec."""

from __future__ import annotations

import re

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
SAFE_NAME_RULE = "1-128 characters of letters, digits, '.', '_' or '-', starting with a letter or digit"


def is_safe_name(name: str) -> bool:
    """Whether `name` is one path component that may name a run or a writer (see SAFE_NAME_RULE)."""
    return isinstance(name, str) and SAFE_NAME.fullmatch(name) is not None and name not in (".", "..")
