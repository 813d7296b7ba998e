"""``block:RxC``: tiles of the weight viewed as a matrix."""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import Tensor

from ..errors import PruningError
from .base import Granularity, register, rows


@register
@dataclass(frozen=True)
class Block(Granularity):
    """Tiles of ``rows × cols`` of the weight viewed as a matrix (output units × the rest).

    Written ``"block:RxC"`` (``"block"`` alone is 4x4) or as a ``(rows, cols)`` tuple.
    """

    rows: int = 4
    cols: int = 4
    syntax = ("block:RxC",)
    example = "block:2x2"
    structured = True

    @property
    def name(self) -> str:
        return f"block:{self.rows}x{self.cols}"

    @classmethod
    def parse(cls, value: object) -> Granularity | None:
        if isinstance(value, tuple) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
        ):
            return cls(*value)
        if value == "block":
            return cls()
        if isinstance(value, str) and (m := re.fullmatch(r"block:(\d+)x(\d+)", value)):
            r, c = int(m[1]), int(m[2])
            return cls(r, c) if r > 0 and c > 0 else None
        return None

    def check(self, param: str, shape: tuple[int, ...]) -> None:
        r, c = rows(shape)
        if r % self.rows or c % self.cols:
            raise PruningError(
                f"{param} is {r}x{c} as a matrix, not a multiple of the block {self.rows}x{self.cols}; "
                "exclude it with layers={...: None} or choose another block size"
            )

    def _tiles(self, x: Tensor) -> Tensor:
        r, c = rows(tuple(x.shape))
        return x.reshape(r // self.rows, self.rows, c // self.cols, self.cols).transpose(1, 2)

    def groups(self, scores: Tensor) -> Tensor:
        return self._tiles(scores.float()).mean(dim=(2, 3))

    def group_keep(self, keep: Tensor) -> Tensor:
        return self._tiles(keep).any(dim=3).any(dim=2)

    def expand(self, keep: Tensor, shape: tuple[int, ...]) -> Tensor:
        r, c = rows(shape)
        grid = keep.reshape(r // self.rows, c // self.cols)
        return grid.repeat_interleave(self.rows, 0).repeat_interleave(self.cols, 1).reshape(shape)
