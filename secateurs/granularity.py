"""Granularity: what is removed together.

A granularity turns element scores into group scores (one per group of weights
removed together) and turns a keep-mask over groups back into an element mask.
Allocation only ever sees group scores, so every granularity works with every
scope.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from .errors import PruningError


@dataclass(frozen=True)
class Unstructured:
    """Each weight is its own group."""

    name: str = "unstructured"

    def groups(self, scores: Tensor) -> Tensor:
        """Group scores: here the element scores themselves."""
        return scores

    def expand(self, keep: Tensor, shape: tuple[int, ...]) -> Tensor:
        """Element keep-mask of ``shape`` from the group keep-mask."""
        return keep.reshape(shape)


Granularity = Unstructured

GRANULARITIES: tuple[str, ...] = ("unstructured",)


def parse(granularity: str | Granularity) -> Granularity:
    """Resolve a granularity name (or pass an instance through).

    Raises:
        PruningError: for a name that is not available.
    """
    if isinstance(granularity, Unstructured):
        return granularity
    if granularity == "unstructured":
        return Unstructured()
    raise PruningError(
        f"unknown granularity {granularity!r}; allowed: {', '.join(GRANULARITIES)}"
    )
