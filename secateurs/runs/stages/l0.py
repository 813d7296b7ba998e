"""``l0``: learned hard-concrete gates on neurons and filters, trained with an L0 penalty."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from ...training.learned import L0Gates
from .base import register
from .fields import Training

if TYPE_CHECKING:
    from .context import Row, StageContext


@register
class L0(Training):
    """Learn which neurons and filters to keep: hard-concrete L0 gates (Louizos et al. 2018).

    A gate on each output row of the chosen layers trains with the model; ``l0_weight`` times the expected
    number of open gates joins the loss. At the end, closed gates become masks of whole rows. The stage's
    row is ``"l0 <i>"``.
    """

    name: ClassVar[str] = "l0"
    example: ClassVar[dict[str, Any]] = {"schedule": "l0", "epochs": 1}

    schedule: Literal["l0"] = Field("l0", description="l0: learned gates on neurons and filters")
    l0_weight: float = Field(1e-3, ge=0, description="weight of the expected number of open gates in the loss")
    l0_lr: float = Field(0.1, gt=0, description="learning rate of the gates")

    def prune_while_training(self, ctx: StageContext) -> list[Row]:
        gates = L0Gates(ctx.model, layers=self.layers or None)
        ctx.fit(self.epochs, self.name, extra=lambda _m: self.l0_weight * gates.penalty(),
                extra_params=list(gates.parameters()), extra_lr=self.l0_lr)
        gates.finalize()
        return []
