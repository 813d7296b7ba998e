"""``oneshot``: prune once with a criterion (:func:`secateurs.prune`), the default stage kind; to a sparsity or
to a measured latency."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import nn

from ...hardware import LatencyResult, Measured, compare_latency, prune
from .base import ONESHOT, StageBase, register
from .fields import Scored, Sparsity

if TYPE_CHECKING:
    from .context import Row, StageContext


@register
class OneShot(Sparsity, Scored, StageBase):
    """Prune once to ``sparsity`` (or to a measured ``latency``) by a criterion (:func:`secateurs.prune`), then
    optionally fine-tune.

    Criteria that need data get ``calibration_batches`` shuffled training batches and cross-entropy as
    the loss. The stage's row is ``"prune <i>: <criterion> <scope> <sparsity>"`` (``"... latency <l>"``); with
    ``batch_size`` (or ``latency``) it also carries the compacted model's measured latency against the model
    before the stage (``latency``, a fraction, with ``latency_spread``).
    """

    name: ClassVar[str] = ONESHOT
    example: ClassVar[dict[str, Any]] = {"sparsity": 0.5}

    schedule: Literal["oneshot"] = Field(ONESHOT, description="oneshot: prune once (the default)")
    calibration_batches: int = Field(8, ge=1, description="training batches given to criteria that need data")
    latency: float | None = Field(None, gt=0, le=1, description="instead of sparsity: the measured latency to reach, "
                                                                "a fraction of the dense model's (channel "
                                                                "granularity; widths chosen per layer)")
    batch_size: int | None = Field(None, ge=1, description="the batch size latency is measured at (default 1 with "
                                                           "latency); with a channel granularity the stage "
                                                           "then reports its measured latency")
    round_to: int | Literal["auto"] | None = Field(None, description="channel counts rounded up to multiples of "
                                                                     "this (channel granularity), or auto: "
                                                                     "measured on this machine")

    hidden: bool = Field(False, description="also prune the residual stream (hidden width) of transformers and "
                                            "norm-coupled CNNs (channel granularity, with sparsity); its norms "
                                            "then normalise over the kept channels, so outputs change")

    @field_validator("round_to")
    @classmethod
    def _round_to(cls, v: int | str | None) -> int | str | None:
        if isinstance(v, int) and v < 1:
            raise ValueError(f"round_to must be a whole number >= 1 or auto, got {v!r}")
        return v

    @model_validator(mode="after")
    def _needs_sparsity(self) -> OneShot:
        if (self.sparsity is None) == (self.latency is None):
            raise ValueError(f"{self._needing()} needs sparsity or latency (one of the two)")
        if (self.latency is not None or self.round_to not in (None, 1)) and not self.removes_units():
            raise ValueError(f"latency and round_to need granularity channel, neuron or filter, "
                             f"got {self.granularity}")
        if self.hidden and (self.latency is not None or not self.removes_units()):
            raise ValueError(f"hidden needs granularity channel, neuron or filter and sparsity (not latency), "
                             f"got granularity {self.granularity}" + (" with latency" if self.latency else ""))
        return self

    def _needing(self) -> str:
        return f"criterion {self.criterion!r}"

    def targets(self) -> list[float]:
        return [float(self.sparsity or 0.0)]

    def run(self, ctx: StageContext) -> tuple[nn.Module, list[Row]]:
        before = copy.deepcopy(ctx.model) if self.batch_size and self.latency is None and self.removes_units() \
            else None
        data = ctx.calibration(self.calibration_batches)
        if self.latency is None:
            prune(ctx.model, self.sparsity, data=data, loss_fn=F.cross_entropy, example_inputs=ctx.example,
                  round_to=self.round_to, hidden=self.hidden, **self.options())
            label = f"prune {ctx.index}: {self.criterion} {self.scope} {self.sparsity:.0%}"
            extra = {} if before is None else _latency(compare_latency(before, ctx.model, ctx.example,
                                                                       self.batch_size or 1))
        else:
            options = {k: v for k, v in self.options().items() if k != "scope"}
            result = prune(ctx.model, latency=self.latency, batch_size=self.batch_size or 1, round_to=self.round_to,
                           data=data, loss_fn=F.cross_entropy, example_inputs=ctx.example, **options)
            label = f"prune {ctx.index}: {self.criterion} latency {self.latency:g}"
            extra = _latency(result.measured, result) if isinstance(result, LatencyResult) else {}
        return ctx.model, [{**ctx.done(ctx.model, label), **extra}]


def _latency(m: Measured | None, result: LatencyResult | None = None) -> dict[str, Any]:
    """The latency keys of a stage's row: measured fraction of the model before, its spread, ms, target."""
    if m is None:
        return {}
    out = {"latency": m.ratio, "latency_spread": m.ratio_spread, "latency_ms": m.ms.ms,
           "latency_before_ms": m.dense_ms.ms}
    if result is not None:
        out.update(latency_target=result.latency, latency_met=result.met,
                   latency_predicted=m.predicted, round_to=result.round_to)
    return out
