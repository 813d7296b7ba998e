"""``neuron`` / ``channel`` / ``filter``: whole output units."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from .base import Granularity, register

NAMES = ("neuron", "channel", "filter")


@register
@dataclass(frozen=True)
class Channels(Granularity):
    """Whole output units: rows of a Linear weight (neurons), filters of a conv.

    ``neuron``, ``channel`` and ``filter`` are three names for this granularity. A unit's
    score is the mean of its weights' scores.
    """

    label: str = "channel"
    syntax = NAMES
    example = "channel"
    structured = True
    units = True

    @property
    def name(self) -> str:
        return self.label

    @classmethod
    def parse(cls, value: object) -> Granularity | None:
        return cls(value) if value in NAMES else None  # type: ignore[arg-type]

    def groups(self, scores: Tensor) -> Tensor:
        return scores.reshape(scores.shape[0], -1).float().mean(dim=1)

    def group_keep(self, keep: Tensor) -> Tensor:
        return keep.reshape(keep.shape[0], -1).any(dim=1)

    def expand(self, keep: Tensor, shape: tuple[int, ...]) -> Tensor:
        return keep.reshape(-1, *([1] * (len(shape) - 1))).expand(shape).contiguous()
