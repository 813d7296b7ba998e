"""Choosing layers by name: one selector for pruning, penalties, gates and merging.

Everything that takes ``layers=`` reads it here. A pattern is a glob matched against the
module name (``"fc3"``, ``"blocks.*"``) or its weight's name (``"fc3.weight"``); when several
patterns match a layer, the last one wins, and ``None`` excludes the layer.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from . import masking
from .errors import PruningError, check_sparsity

V = TypeVar("V")

Layers = Mapping[str, Any] | Iterable[str] | str | None
"""Which layers: ``None`` (all), names / glob patterns, or a ``layers=`` dict as :func:`secateurs.prune` takes."""


@dataclass(frozen=True)
class Target:
    """A prunable layer, the sparsity asked of it, and whether ``layers=`` set it (``own``)."""

    module_name: str
    module: nn.Module
    sparsity: float | None
    own: bool = False

    @property
    def param(self) -> str:
        return masking.param_name(self.module_name)


def matches(pattern: str, module_name: str) -> bool:
    """Whether a glob matches the module name or its weight's name.

    Example:
        >>> matches("fc*", "fc3"), matches("fc3.weight", "fc3"), matches("fc1", "fc3")
        (True, True, False)
    """
    return fnmatch.fnmatchcase(module_name, pattern) or fnmatch.fnmatchcase(masking.param_name(module_name), pattern)


def assign(
    names: Sequence[str],
    layers: Mapping[str, Any] | None,
    default: V,
    *,
    kind: str = "prunable layer",
    value: str = "sparsity",
    check: Callable[[str, Any], V] | None = None,
    match: Callable[[str, str], bool] = matches,
) -> dict[str, tuple[V, bool]]:
    """Each name's value and whether a pattern set it: ``default``, then every pattern in order.

    Args:
        names: the candidates (module names), in model order.
        layers: ``{pattern: value or None}``; ``None`` excludes the layers it matches.
        default: the value of a layer no pattern names.
        kind: what the candidates are, for messages (``"prunable layer"``).
        value: what the values are, for messages (``"sparsity"``).
        check: ``check(pattern, value)`` validates a value that is not ``None`` and returns it.
        match: ``match(pattern, name)``.

    Returns:
        ``{name: (value, set by a pattern)}`` of the names not excluded, in model order.

    Raises:
        PruningError: ``layers`` is not a dict of strings, or a pattern matches no candidate.
    """
    if layers is not None and not isinstance(layers, Mapping):
        raise PruningError(f"layers must be a dict of name or pattern -> {value} or None, got {layers!r}")
    chosen: dict[str, tuple[Any, bool]] = {name: (default, False) for name in names}
    for pattern, v in (layers or {}).items():
        if not isinstance(pattern, str):
            raise PruningError(f"layers keys must be names or glob patterns, got {pattern!r}")
        if v is not None and check is not None:
            v = check(pattern, v)
        hits = [n for n in names if match(pattern, n)]
        if not hits:
            raise PruningError(f"layers pattern {pattern!r} matches no {kind}; {kind}s are: {', '.join(names) or 'none'}")
        chosen.update(dict.fromkeys(hits, (v, True)))
    return {n: c for n, c in chosen.items() if c[0] is not None}


def include(layers: Layers) -> Mapping[str, Any] | None:
    """Read ``layers`` as "which layers" only, as a ``layers=`` dict of :func:`resolve_layers`.

    Names and patterns include their layers and exclude the rest; in a dict, ``None`` excludes and any
    other value includes (it is not read as a sparsity).

    Example:
        >>> include(["fc1", "fc2"])
        {'*': None, 'fc1': 0.0, 'fc2': 0.0}
    """
    if isinstance(layers, Mapping):
        return {k: None if v is None else 0.0 for k, v in layers.items()}
    if isinstance(layers, str):
        layers = [layers]
    if layers is None or not isinstance(layers, Iterable):
        return layers  # None, or something assign() rejects with its own message
    # "*" first excludes everything, then the named patterns bring their layers back (last match wins).
    return {"*": None, **dict.fromkeys(layers, 0.0)}


def resolve_layers(model: nn.Module, layers: Mapping[str, float | None] | None, default: float) -> list[Target]:
    """Pair each prunable layer with its target sparsity; ``None`` excludes it.

    Raises:
        PruningError: no prunable layer, a pattern that matches nothing, a bad value, every layer
            excluded, or two layers that share one weight.
    """
    found = [(n, m) for n, m in masking.prunable_layers(model) if masking.original(m).numel() > 0]
    if not found:
        raise PruningError(
            f"model {type(model).__name__} has no prunable layers "
            "(Linear or Conv1d/2d/3d); nothing to prune"
        )
    chosen = assign([n for n, _ in found], layers, default,
                    check=lambda pattern, v: check_sparsity(v, f"layers[{pattern!r}]"))
    targets = [Target(n, m, *chosen[n]) for n, m in found if n in chosen]
    if not targets:
        raise PruningError(f"layers={dict(layers or {})!r} excludes every prunable layer; nothing to prune")
    _check_shared(targets)
    return targets


def select(model: nn.Module, layers: Layers) -> list[tuple[str, nn.Module]]:
    """``(module name, module)`` of the chosen prunable layers (Linear, Conv1d/2d/3d), in model order.

    Args:
        model: the network.
        layers: ``None`` for every prunable layer; a name or glob pattern, or a list of them, for those
            layers only; or a dict as ``sc.prune``'s ``layers=`` (``None`` values exclude, others include).

    Raises:
        PruningError: no prunable layer, or a pattern that matches none.
    """
    return [(t.module_name, t.module) for t in resolve_layers(model, include(layers), 0.0)]


def _check_shared(targets: list[Target]) -> None:
    """Tied weights (one tensor in two layers) would get two masks that multiply."""
    owner: dict[int, str] = {}
    for t in targets:
        key = id(masking.original(t.module))
        if key in owner:
            raise PruningError(
                f"{t.param} shares its weight with {owner[key]}; prune only one of them: "
                f"layers={{{t.module_name!r}: None}}"
            )
        owner[key] = t.param
