"""Registries of kinds (tasks, models, analysis steps): each kind registers itself next to its own code.

As ruptures' cost factory finds a cost by its `model` name, ontogeny finds a task, model or analysis step by its
name here, so no central if-chain has to learn about a new kind; an unknown name fails with the known ones.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Any


class Registry:
    """Named kinds of one sort; importing `package` imports (and so registers) every kind it holds."""

    def __init__(self, sort: str, package: str):
        self.sort, self.package = sort, package
        self._kinds: dict[str, Any] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[Any], Any]:
        """Decorator: `@TASKS.register("modular")` above the kind's class or function."""
        def add(kind: Any) -> Any:
            if name in self._kinds and self._kinds[name] is not kind:
                raise ValueError(f"two {self.sort}s named {name!r}")
            self._kinds[name] = kind
            return kind
        return add

    def get(self, name: str) -> Any:
        """The kind registered as `name`; LookupError naming the known ones if there is none."""
        self._load()
        if name not in self._kinds:
            raise LookupError(f"unknown {self.sort} {name!r} (known: {', '.join(self._kinds)})")
        return self._kinds[name]

    def names(self) -> list[str]:
        self._load()
        return list(self._kinds)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._kinds

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def _load(self) -> None:
        """Import every module of the package once, so a new kind needs nothing but its own file."""
        if self._loaded:
            return
        self._loaded = True
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{self.package}.{module.name}")
