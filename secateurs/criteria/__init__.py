"""Pruning criteria: a score per weight, higher = more important.

Each criterion is one file in this package that defines a :class:`Criterion`
subclass decorated with :func:`register`. Every module here is imported on
first use, so adding a criterion touches one new file (and its test); the CLI's
choices and ``secateurs criteria`` come from this registry.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from torch import Tensor, nn

from ..errors import PruningError
from ..registry import add, load_package

_REGISTRY: dict[str, type[Criterion]] = {}

C = TypeVar("C", bound="type[Criterion]")


@dataclass
class Context:
    """What a criterion may look at while preparing its scores.

    Attributes:
        model: the whole model (criteria must leave it as they found it).
        layers: ``{qualified param name: module}`` of the layers being scored.
        data: batches (see :mod:`secateurs.calibration`), or ``None``.
        loss_fn: ``loss_fn(outputs, targets)``, or ``None``.
        sparsity: the pruning target, when scoring for :func:`secateurs.prune`.
        scope: ``"global"`` or ``"local"``.
        granularity: the granularity object in use.
        example_inputs: example inputs, when given.
        min_density: the collapse guard in use.
    """

    model: nn.Module
    layers: dict[str, nn.Module] = field(default_factory=dict)
    data: Iterable[Any] | None = None
    loss_fn: Callable[..., Tensor] | None = None
    sparsity: float | None = None
    scope: str = "global"
    granularity: Any = None
    example_inputs: tuple[Any, ...] | None = None
    min_density: float = 0.0


class Criterion:
    """Base class of all criteria.

    A criterion is used in two steps: :meth:`prepare` once per pruning call
    (criteria that need data run it through the model here), then
    :meth:`score` once per prunable weight. ``score`` is pure: a tensor in,
    a tensor of the same shape out, higher meaning more important. A criterion
    that also corrects the surviving weights (OBS) does it in :meth:`update`,
    after the masks are chosen.

    Attributes:
        name: the registered name.
        needs_data: ``True`` when :meth:`prepare` needs ``data``.
        needs_loss: ``True`` when it also needs ``loss_fn``.
        nonnegative: ``True`` when every score is ``>= 0`` (a hint for allocation).
        elementwise: ``True`` when an entry's score depends on that entry alone, so
            allocation may score a weight in chunks (a hint that saves memory).
        compare_rows: ``True`` when scores are only comparable within an output row
            (Wanda): under local scope each row then loses the same fraction.
        standalone: ``False`` when the criterion needs an object built in Python (movement
            pruning's tracker), so recipes and the CLI cannot use it by name.
    """

    name: ClassVar[str] = ""
    needs_data: ClassVar[bool] = False
    needs_loss: ClassVar[bool] = False
    nonnegative: ClassVar[bool] = False
    elementwise: ClassVar[bool] = False
    compare_rows: ClassVar[bool] = False
    standalone: ClassVar[bool] = True

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def prepare(self, ctx: Context) -> None:
        """Gather what :meth:`score` needs; must leave the model as it found it."""

    def score(self, name: str, weight: Tensor) -> Tensor:
        """Score of every entry of ``weight`` (the masked weight named ``name``).

        Must return a new tensor (not a view of ``weight`` nor a cached one):
        allocation reuses its memory.
        """
        raise NotImplementedError

    def update(self, name: str, module: nn.Module, keep: Tensor) -> None:
        """Adjust the surviving weights of ``module`` once its mask ``keep`` is set (default: nothing)."""


def register(cls: C) -> C:
    """Class decorator: add a criterion to the registry under ``cls.name``."""
    return add(_REGISTRY, cls.name, cls, "criterion")


def _load_all() -> None:
    load_package(__name__, __path__)


def names() -> list[str]:
    """Registered criterion names, sorted."""
    _load_all()
    return sorted(_REGISTRY)


def get(criterion: str | Criterion, seed: int = 0) -> Criterion:
    """Resolve a name (or pass through an instance) to a :class:`Criterion`.

    Raises:
        PruningError: for an unknown name or a value that is neither a name nor a Criterion.
    """
    if isinstance(criterion, Criterion):
        return criterion
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise PruningError(f"seed must be an integer, got {seed!r}")
    _load_all()
    if not isinstance(criterion, str) or criterion not in _REGISTRY:
        raise PruningError(f"unknown criterion {criterion!r}; allowed: {', '.join(names())}")
    return _REGISTRY[criterion](seed=seed)


class _CallableModule(type(importlib)):  # type: ignore[misc]
    """Lets ``secateurs.criteria()`` list the names while the package stays importable."""

    def __call__(self) -> list[str]:
        return names()


import sys as _sys  # noqa: E402

_sys.modules[__name__].__class__ = _CallableModule
