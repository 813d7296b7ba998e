"""``gradual``: prune while training, following Zhu & Gupta's cubic schedule."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from ...training.schedules import Gradual as GradualPruner
from .base import register
from .fields import Every, Scored, Sparsity, Training

if TYPE_CHECKING:
    from .context import Row, StageContext


@register
class Gradual(Sparsity, Every, Scored, Training):
    """Prune by a criterion while training, on Zhu & Gupta's cubic schedule (2017), to ``sparsity``.

    Pruning steps come every ``every`` training steps during the first three quarters of the stage; the
    last quarter trains at the final sparsity. The stage's row is ``"gradual <i>"``.
    """

    name: ClassVar[str] = "gradual"
    example: ClassVar[dict[str, Any]] = {"schedule": "gradual", "sparsity": 0.5, "epochs": 1}

    schedule: Literal["gradual"] = Field("gradual", description="gradual: prune while training (cubic schedule)")

    def targets(self) -> list[float]:
        final = float(self.sparsity or 0.0)
        return [final, final / 2]  # the end, and a step on the way (the cubic schedule passes below it)

    def prune_while_training(self, ctx: StageContext) -> list[Row]:
        end = ctx.end_step(self.epochs)
        pruner = GradualPruner(ctx.model, self.sparsity, start=0, end=end, every=min(self.every, end),
                               **self.options())
        ctx.fit(self.epochs, self.name, on_step=pruner.step)
        return []
