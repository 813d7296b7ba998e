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

from torch import Tensor, nn

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
    tensor: str = "weight"

    @property
    def param(self) -> str:
        return masking.param_name(self.module_name, self.tensor)

    @property
    def key(self) -> str:
        """How ``layers=`` names it: the module name for a ``weight``, else the parameter's name."""
        return self.module_name if self.tensor == "weight" else self.param

    @property
    def original(self) -> Tensor:
        """The stored tensor (unmasked)."""
        return masking.original(self.module, self.tensor)

    @property
    def weight(self) -> Tensor:
        """The tensor as the module computes with it (masked)."""
        return getattr(self.module, self.tensor)


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


def _matcher(targets: list[Target]) -> Callable[[str, str], bool]:
    """``layers=`` patterns: a module name or its weight's (:func:`matches`); another tensor by its
    parameter's name or its module's."""
    modules = {t.key: t.module_name for t in targets if t.tensor != "weight"}

    def match(pattern: str, key: str) -> bool:
        if key in modules:
            return fnmatch.fnmatchcase(key, pattern) or fnmatch.fnmatchcase(modules[key], pattern)
        return matches(pattern, key)

    return match


def candidates(model: nn.Module, params: Iterable[str] | str | None = None, tensors: bool = True) -> list[Target]:
    """Every prunable tensor, in model order, as targets without a sparsity yet.

    Args:
        model: the network.
        params: extra parameters to prune, by qualified name or glob pattern (``"emb.weight"``,
            ``"*.bias"``), as :mod:`torch.nn.utils.prune` allows any parameter.
        tensors: include tensors other than a layer's ``weight`` (``nn.MultiheadAttention``'s
            ``in_proj_weight``); ``False`` for callers that read ``module.weight``.

    Raises:
        PruningError: a ``params`` pattern that matches no parameter.
    """
    found = {(n, t): Target(n, m, None, tensor=t) for n, m, t in masking.prunable_tensors(model)
             if tensors or t == "weight"}
    if isinstance(params, str):
        params = [params]
    names = {}
    for module_name, module in model.named_modules():
        for t in masking.tensor_names(module):
            names.setdefault(masking.param_name(module_name, t), (module_name, module, t))
    for pattern in params or ():
        hits = [q for q in names if fnmatch.fnmatchcase(q, str(pattern))]
        if not hits:
            raise PruningError(f"params pattern {pattern!r} matches no parameter of {type(model).__name__}")
        for q in hits:
            n, m, t = names[q]
            found.setdefault((n, t), Target(n, m, None, tensor=t))
    order = {q: i for i, q in enumerate(names)}
    return sorted((t for t in found.values() if t.original.numel() > 0), key=lambda t: order.get(t.param, 0))


def resolve_layers(
    model: nn.Module, layers: Mapping[str, float | None] | None, default: float,
    params: Iterable[str] | str | None = None, tensors: bool = False,
) -> list[Target]:
    """Pair each prunable tensor with its target sparsity; ``None`` excludes it.

    ``params`` and ``tensors`` are as :func:`candidates` takes them (``sc.prune`` passes ``tensors=True``).

    Tied tensors (one parameter in two modules) are one target: the first in model order;
    :func:`secateurs.masking.tie` gives the others its mask.

    Raises:
        PruningError: no prunable layer, a pattern that matches nothing, a bad value, or every layer excluded.
    """
    found = _untied(candidates(model, params, tensors))
    if not found:
        raise PruningError(
            f"model {type(model).__name__} has no prunable layers "
            "(Linear, Conv1d/2d/3d, transformers Conv1D or nn.MultiheadAttention); nothing to prune; "
            "name other parameters with params=[...]"
        )
    chosen = assign([t.key for t in found], layers, default, match=_matcher(found),
                    check=lambda pattern, v: check_sparsity(v, f"layers[{pattern!r}]"))
    targets = [Target(t.module_name, t.module, *chosen[t.key], tensor=t.tensor) for t in found if t.key in chosen]
    if not targets:
        raise PruningError(f"layers={dict(layers or {})!r} excludes every prunable layer; nothing to prune")
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


def _untied(targets: list[Target]) -> list[Target]:
    """The first of each set of targets holding one parameter: tied weights get one mask, not two."""
    seen: set[int] = set()
    out = []
    for t in targets:
        if id(t.original) not in seen:
            seen.add(id(t.original))
            out.append(t)
    return out
