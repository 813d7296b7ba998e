"""Registries of what users extend (criteria, granularities, recipe stages): one file per entry.

A package that holds a registry calls :func:`load_package` before it lists or looks up its
entries: every module of the package is imported once, so a new file registers itself.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from typing import TypeVar

C = TypeVar("C", bound=type)

_loaded: set[str] = set()


def load_package(package: str, path: Iterable[str]) -> None:
    """Import every module of ``package`` (its ``__name__`` and ``__path__``) once per process."""
    if package not in _loaded:
        for info in pkgutil.iter_modules(list(path)):
            importlib.import_module(f"{package}.{info.name}")
        _loaded.add(package)


def add(table: dict[str, C], name: str, cls: C, kind: str) -> C:
    """Enter ``cls`` in ``table`` under ``name`` (a class decorator's body).

    Raises:
        TypeError: an empty name, or a name another class holds already.
    """
    if not name:
        raise TypeError(f"{cls.__name__} needs a non-empty class attribute 'name'")
    if name in table and table[name] is not cls:
        raise TypeError(f"{kind} {name!r} is registered twice")
    table[name] = cls
    return cls
