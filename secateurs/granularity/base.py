"""The granularity interface and its registry.

A granularity turns element scores into group scores (one per group of weights
removed together) and a keep-mask over groups back into an element mask, so
allocation only ever sees group scores and every granularity works with every
scope. A granularity that fixes its pattern inside each group (``N:M``) chooses its
own mask (:meth:`Granularity.select`) and scope does not change the result.

What a granularity can do is declared, not inferred from its type: :func:`secateurs.prune`
asks the attributes below (``elementwise``, ``units``, ``fixed_pattern``, ``sparsity``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, TypeVar

import torch
from torch import Tensor

from ..errors import PruningError

_REGISTRY: dict[str, type[Granularity]] = {}

G = TypeVar("G", bound="type[Granularity]")


def rows(shape: tuple[int, ...]) -> tuple[int, int]:
    """A weight as a matrix: (output units, everything else)."""
    return shape[0], int(torch.Size(shape[1:]).numel()) if len(shape) > 1 else 1


@dataclass(frozen=True)
class Granularity:
    """Base class: each weight is its own group. Subclasses override what they group.

    Attributes:
        syntax: how a user writes it (``("block:RxC",)``), for the CLI's help and messages.
        example: one value :meth:`parse` accepts (``"block:4x4"``): the contract test builds it.
        structured: groups hold more than one weight (under global scope their scores are
            normalised per layer, see :func:`normalise`).
        elementwise: each weight is its own group, so scores may be computed in chunks and
            a criterion that compares rows (Wanda) may choose per row.
        units: groups are whole output units (neurons, channels, filters): with
            ``example_inputs`` coupled units are pruned together, and :func:`secateurs.compact`
            can remove them physically.
        fixed_pattern: the pattern inside each group is fixed (N:M): :meth:`select` chooses the mask.
    """

    syntax: ClassVar[tuple[str, ...]] = ()
    example: ClassVar[object] = None
    structured: ClassVar[bool] = False
    elementwise: ClassVar[bool] = False
    units: ClassVar[bool] = False
    fixed_pattern: ClassVar[bool] = False

    @property
    def name(self) -> str:
        """The name it is written as, e.g. ``"2:4"``."""
        raise NotImplementedError

    @property
    def sparsity(self) -> float | None:
        """The only sparsity this granularity can reach, or ``None`` when any is allowed."""
        return None

    @property
    def unit(self) -> str:
        """What one group is called in messages."""
        return "weights" if self.elementwise else f"{self.name} groups"

    @classmethod
    def parse(cls, value: object) -> Granularity | None:
        """An instance for ``value`` (a name, a pattern, a tuple), or ``None`` when it is not this kind.

        Raises:
            PruningError: ``value`` is this kind's syntax with bad numbers (``"4:2"``).
        """
        return None

    def check(self, param: str, shape: tuple[int, ...]) -> None:
        """Raise :class:`PruningError` when a layer of ``shape`` cannot be grouped."""

    def groups(self, scores: Tensor) -> Tensor:
        """Group scores (here the element scores themselves)."""
        return scores

    def group_keep(self, keep: Tensor) -> Tensor:
        """Which groups are still alive, from an element keep-mask."""
        return keep

    def expand(self, keep: Tensor, shape: tuple[int, ...]) -> Tensor:
        """Element keep-mask of ``shape`` from a group keep-mask."""
        return keep.reshape(shape)

    def select(self, keys: Tensor, shape: tuple[int, ...]) -> Tensor:
        """Keep-mask of ``shape`` from int32 ``keys`` (only when :attr:`fixed_pattern`)."""
        raise NotImplementedError(f"granularity {self.name} has no fixed pattern")


def register(cls: G) -> G:
    """Class decorator: add a granularity to the registry (its ``syntax`` says how it is written)."""
    if not cls.syntax or cls.example is None:
        raise TypeError(f"{cls.__name__} needs class attributes 'syntax' (how it is written) and 'example'")
    for other in _REGISTRY.values():
        if other is not cls and set(other.syntax) & set(cls.syntax):
            raise TypeError(f"granularity {cls.syntax[0]!r} is registered twice")
    _REGISTRY[cls.__name__] = cls
    return cls


def registered() -> list[type[Granularity]]:
    """The granularity classes registered so far, in registration order."""
    return list(_REGISTRY.values())


def spellings() -> list[str]:
    """How every registered granularity is written (``"unstructured"``, ..., ``"N:M"``)."""
    return [s for cls in _REGISTRY.values() for s in cls.syntax]


def normalise(groups: Tensor) -> Tensor:
    """Divide a layer's group scores by their mean absolute value (global structured scope).

    Example:
        >>> normalise(torch.tensor([1.0, 3.0]))
        tensor([0.5000, 1.5000])
    """
    scale = groups.abs().mean()
    return groups / scale if bool(scale > 0) and bool(torch.isfinite(scale)) else groups


def unknown(granularity: object) -> PruningError:
    """The error for a value no registered granularity accepts."""
    return PruningError(
        f"unknown granularity {granularity!r}; allowed: {', '.join(spellings())} "
        "(e.g. '2:4', 'block:4x4' or a (rows, cols) tuple)"
    )
