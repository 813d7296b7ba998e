"""``N:M``: at most N non-zeros in every M consecutive weights along the input dimension."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import PruningError
from .base import Granularity, register


@register
@dataclass(frozen=True)
class NM(Granularity):
    """At most ``n`` non-zeros in every ``m`` consecutive weights along the input dimension.

    For a Linear weight ``(out, in)`` the groups are ``m`` consecutive inputs of a row; for a
    conv weight ``(out, in, *k)`` they are ``m`` consecutive input channels at one kernel
    position. A layer whose input size is not a multiple of ``m`` is an error (no padding).
    In each group the ``m - n`` lowest scores are pruned (ties: the lower index first).
    """

    n: int = 2
    m: int = 4
    syntax = ("N:M",)
    example = "2:4"
    fixed_pattern = True

    @property
    def name(self) -> str:
        return f"{self.n}:{self.m}"

    @property
    def sparsity(self) -> float:
        return 1.0 - self.n / self.m

    @classmethod
    def parse(cls, value: object) -> Granularity | None:
        if not isinstance(value, str) or not (m := re.fullmatch(r"(\d+):(\d+)", value)):
            return None
        n, mm = int(m[1]), int(m[2])
        if 0 < n < mm:
            return cls(n, mm)
        raise PruningError(f"granularity {value!r}: N:M needs 0 < N < M")

    def check(self, param: str, shape: tuple[int, ...]) -> None:
        if len(shape) < 2 or shape[1] % self.m:
            size = shape[1] if len(shape) > 1 else 1
            raise PruningError(
                f"{param} has {size} inputs, not a multiple of M={self.m} for {self.name} "
                "(exclude it with layers={...: None})"
            )

    def _groups_view(self, x: Tensor) -> Tensor:
        return x.movedim(1, -1).reshape(-1, self.m)

    def select(self, keys: Tensor, shape: tuple[int, ...]) -> Tensor:
        """Keep-mask of ``shape`` from int32 ``keys`` (entries already pruned at the minimum key)."""
        g = self._groups_view(keys.reshape(shape))
        ranks = torch.empty_like(g, dtype=torch.long)
        order = torch.sort(g, dim=1, stable=True).indices
        ranks.scatter_(1, order, torch.arange(self.m, device=order.device).expand_as(order).contiguous())
        forced = (g == torch.iinfo(torch.int32).min).sum(dim=1, keepdim=True)
        drop = torch.clamp(forced, min=self.m - self.n)
        keep = ranks >= drop
        moved = list(shape[:1]) + list(shape[2:]) + [shape[1]]
        return keep.reshape(moved).movedim(-1, 1).contiguous()
