"""``oneshot``: prune once with a criterion (:func:`secateurs.prune`), the default stage kind."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ...pruning import prune
from .base import ONESHOT, StageBase, register
from .fields import Scored, Sparsity

if TYPE_CHECKING:
    from .context import Row, StageContext


@register
class OneShot(Sparsity, Scored, StageBase):
    """Prune once to ``sparsity`` by a criterion (:func:`secateurs.prune`), then optionally fine-tune.

    Criteria that need data get ``calibration_batches`` shuffled training batches and cross-entropy as
    the loss. The stage's row is ``"prune <i>: <criterion> <scope> <sparsity>"``.
    """

    name: ClassVar[str] = ONESHOT
    example: ClassVar[dict[str, Any]] = {"sparsity": 0.5}

    schedule: Literal["oneshot"] = Field(ONESHOT, description="oneshot: prune once (the default)")
    calibration_batches: int = Field(8, ge=1, description="training batches given to criteria that need data")

    def _needing(self) -> str:
        return f"criterion {self.criterion!r}"

    def targets(self) -> list[float]:
        return [float(self.sparsity or 0.0)]

    def run(self, ctx: StageContext) -> tuple[nn.Module, list[Row]]:
        prune(ctx.model, self.sparsity, data=ctx.calibration(self.calibration_batches), loss_fn=F.cross_entropy,
              example_inputs=ctx.example, **self.options())
        label = f"prune {ctx.index}: {self.criterion} {self.scope} {self.sparsity:.0%}"
        return ctx.model, [ctx.done(ctx.model, label)]
