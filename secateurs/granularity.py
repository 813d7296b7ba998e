"""Granularity: what is removed together.

A granularity turns element scores into group scores (one per group of weights
removed together) and a keep-mask over groups back into an element mask, so
allocation only ever sees group scores and every granularity works with every
scope. ``N:M`` is the exception: its pattern is fixed per group of ``M``, so it
chooses its own mask (:meth:`NM.select`) and scope does not change the result.

Group scores are the **mean** of the element scores in the group (for
magnitude, the L1 norm of the group divided by its size), so groups of
different sizes compare fairly. Under global scope, structured group scores are
further divided by the mean absolute group score of their layer (see
:func:`normalise`), so that layers with different weight scales are compared by
relative importance.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import PruningError


def _rows(shape: tuple[int, ...]) -> tuple[int, int]:
    """A weight as a matrix: (output units, everything else)."""
    return shape[0], int(torch.Size(shape[1:]).numel()) if len(shape) > 1 else 1


@dataclass(frozen=True)
class Unstructured:
    """Each weight is its own group."""

    name = "unstructured"
    structured = False
    fixed_pattern = False

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


@dataclass(frozen=True)
class Channels(Unstructured):
    """Whole output units: rows of a Linear weight (neurons), filters of a conv.

    ``neuron``, ``channel`` and ``filter`` are three names for this granularity.
    """

    name: str = "channel"  # type: ignore[misc]
    structured = True

    def groups(self, scores: Tensor) -> Tensor:
        return scores.reshape(scores.shape[0], -1).float().mean(dim=1)

    def group_keep(self, keep: Tensor) -> Tensor:
        return keep.reshape(keep.shape[0], -1).any(dim=1)

    def expand(self, keep: Tensor, shape: tuple[int, ...]) -> Tensor:
        return keep.reshape(-1, *([1] * (len(shape) - 1))).expand(shape).contiguous()


@dataclass(frozen=True)
class Block(Unstructured):
    """Tiles of ``rows × cols`` of the weight viewed as a matrix (output units × the rest)."""

    rows: int = 4
    cols: int = 4
    structured = True

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"block:{self.rows}x{self.cols}"

    def check(self, param: str, shape: tuple[int, ...]) -> None:
        r, c = _rows(shape)
        if r % self.rows or c % self.cols:
            raise PruningError(
                f"{param} is {r}x{c} as a matrix, not a multiple of the block {self.rows}x{self.cols}; "
                "exclude it with layers={...: None} or choose another block size"
            )

    def _tiles(self, x: Tensor) -> Tensor:
        r, c = _rows(tuple(x.shape))
        return x.reshape(r // self.rows, self.rows, c // self.cols, self.cols).transpose(1, 2)

    def groups(self, scores: Tensor) -> Tensor:
        return self._tiles(scores.float()).mean(dim=(2, 3))

    def group_keep(self, keep: Tensor) -> Tensor:
        return self._tiles(keep).any(dim=3).any(dim=2)

    def expand(self, keep: Tensor, shape: tuple[int, ...]) -> Tensor:
        r, c = _rows(shape)
        grid = keep.reshape(r // self.rows, c // self.cols)
        return grid.repeat_interleave(self.rows, 0).repeat_interleave(self.cols, 1).reshape(shape)


@dataclass(frozen=True)
class NM(Unstructured):
    """At most ``n`` non-zeros in every ``m`` consecutive weights along the input dimension.

    For a Linear weight ``(out, in)`` the groups are ``m`` consecutive inputs of a row; for a
    conv weight ``(out, in, *k)`` they are ``m`` consecutive input channels at one kernel
    position. A layer whose input size is not a multiple of ``m`` is an error (no padding).
    In each group the ``m - n`` lowest scores are pruned (ties: the lower index first).
    """

    n: int = 2
    m: int = 4
    fixed_pattern = True

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"{self.n}:{self.m}"

    @property
    def sparsity(self) -> float:
        return 1.0 - self.n / self.m

    def check(self, param: str, shape: tuple[int, ...]) -> None:
        if len(shape) < 2 or shape[1] % self.m:
            size = shape[1] if len(shape) > 1 else 1
            raise PruningError(
                f"{param} has {size} inputs, not a multiple of M={self.m} for {self.name}; "
                "exclude it with layers={...: None}"
            )

    def _groups_view(self, x: Tensor) -> Tensor:
        return x.movedim(1, -1).reshape(-1, self.m)

    def select(self, keys: Tensor, shape: tuple[int, ...]) -> Tensor:
        """Keep-mask of ``shape`` from int32 ``keys`` (entries already pruned at the minimum key)."""
        g = self._groups_view(keys.reshape(shape))
        ranks = torch.empty_like(g, dtype=torch.long)
        order = torch.sort(g, dim=1, stable=True).indices
        ranks.scatter_(1, order, torch.arange(self.m).expand_as(order).contiguous())
        forced = (g == torch.iinfo(torch.int32).min).sum(dim=1, keepdim=True)
        drop = torch.clamp(forced, min=self.m - self.n)
        keep = ranks >= drop
        moved = list(shape[:1]) + list(shape[2:]) + [shape[1]]
        return keep.reshape(moved).movedim(-1, 1).contiguous()


Granularity = Unstructured
"""Every granularity derives from :class:`Unstructured` and overrides what it groups."""

GRANULARITIES: tuple[str, ...] = ("unstructured", "neuron", "channel", "filter", "block:RxC", "N:M")


def normalise(groups: Tensor) -> Tensor:
    """Divide a layer's group scores by their mean absolute value (global structured scope).

    Example:
        >>> normalise(torch.tensor([1.0, 3.0]))
        tensor([0.5000, 1.5000])
    """
    scale = groups.abs().mean()
    return groups / scale if bool(scale > 0) and bool(torch.isfinite(scale)) else groups


def parse(granularity: object) -> Granularity:
    """Resolve a granularity: a name, ``"N:M"``, ``"block:RxC"``, a ``(rows, cols)`` tuple or an instance.

    Raises:
        PruningError: for anything else, naming what is allowed.
    """
    if isinstance(granularity, Unstructured):
        return granularity
    if isinstance(granularity, tuple) and len(granularity) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in granularity
    ):
        return Block(*granularity)
    if isinstance(granularity, str):
        if granularity == "unstructured":
            return Unstructured()
        if granularity in ("neuron", "channel", "filter"):
            return Channels(granularity)
        if granularity == "block":
            return Block()
        if m := re.fullmatch(r"block:(\d+)x(\d+)", granularity):
            r, c = int(m[1]), int(m[2])
            if r > 0 and c > 0:
                return Block(r, c)
        if m := re.fullmatch(r"(\d+):(\d+)", granularity):
            n, mm = int(m[1]), int(m[2])
            if 0 < n < mm:
                return NM(n, mm)
            raise PruningError(f"granularity {granularity!r}: N:M needs 0 < N < M")
    raise PruningError(
        f"unknown granularity {granularity!r}; allowed: {', '.join(GRANULARITIES)} "
        "(e.g. '2:4', 'block:4x4' or a (rows, cols) tuple)"
    )
