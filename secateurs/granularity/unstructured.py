"""``unstructured``: each weight is its own group."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Granularity, register


@register
@dataclass(frozen=True)
class Unstructured(Granularity):
    """Each weight is its own group."""

    syntax = ("unstructured",)
    example = "unstructured"
    elementwise = True

    @property
    def name(self) -> str:
        return "unstructured"

    @classmethod
    def parse(cls, value: object) -> Granularity | None:
        return cls() if value == "unstructured" else None
