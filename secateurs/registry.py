"""Registries of what users extend (criteria, granularities, recipe stages): one file per entry.

A package that holds a registry calls :func:`load_package` before it lists or looks up its
entries: every module of the package is imported once, so a new file registers itself.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable

_loaded: set[str] = set()


def load_package(package: str, path: Iterable[str]) -> None:
    """Import every module of ``package`` (its ``__name__`` and ``__path__``) once per process."""
    if package not in _loaded:
        for info in pkgutil.iter_modules(list(path)):
            importlib.import_module(f"{package}.{info.name}")
        _loaded.add(package)
