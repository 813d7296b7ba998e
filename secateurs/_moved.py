"""Module paths from before the package was arranged in layers, kept importable.

``import secateurs.export`` (and the other paths below) gives the module that now holds
that code, so code written against the old paths keeps working. New code imports the new paths.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

MOVED = {
    "secateurs.accelerate": "secateurs.inference.accelerate",
    "secateurs.analysis.html": "secateurs.reports.html",
    "secateurs.analysis.plots": "secateurs.reports.plots",
    "secateurs.analysis.report": "secateurs.reports.tables",
    "secateurs.analysis.sensitivity": "secateurs.reports.sensitivity",
    "secateurs.compare": "secateurs.runs.compare",
    "secateurs.distributed": "secateurs.training.distributed",
    "secateurs.export": "secateurs.storage",
    "secateurs.learned": "secateurs.training.learned",
    "secateurs.recipes": "secateurs.runs.recipes",
    "secateurs.regularizers": "secateurs.training.regularizers",
    "secateurs.runner": "secateurs.runs.runner",
    "secateurs.runtime": "secateurs.surgery.gates",
    "secateurs.schedules": "secateurs.training.schedules",
    "secateurs.sparse_format": "secateurs.storage.sparse",
    "secateurs.sparse_linear": "secateurs.inference.kernels",
    "secateurs.stage_runner": "secateurs.runs.stages",
    "secateurs.surgery.attention": "secateurs.modules.attention",
    "secateurs.surgery.bert": "secateurs.graph.structural",
    "secateurs.surgery.channels": "secateurs.coupled",
    "secateurs.surgery.graph": "secateurs.graph",
}
"""Old module path -> the module that holds its code now."""


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path and loads it as the new module itself (one module object, two names)."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(MOVED[spec.name])
        self._specs = getattr(self, "_specs", {})
        self._specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self._specs.pop(module.__spec__.name, module.__spec__)  # keep its own spec


def install() -> None:
    """Make the old paths importable (once per interpreter).

    Paths whose module is already loaded are entered in ``sys.modules`` now: importing them later
    then sets no attribute on the parent package (``import secateurs.accelerate`` must not replace
    the function ``sc.accelerate`` by a module). The others are found when first imported.
    """
    for old, new in MOVED.items():
        if new in sys.modules:
            sys.modules.setdefault(old, sys.modules[new])
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
