"""``movement``: movement pruning while training (Sanh et al. 2020) on the gradual schedule."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from ...training.learned import Movement as MovementTracker
from ...training.schedules import Gradual as GradualPruner
from .base import register
from .fields import Allocation, Every, Sparsity, Training

if TYPE_CHECKING:
    from .context import Row, StageContext


@register
class Movement(Sparsity, Every, Allocation, Training):
    """Movement pruning while training (Python API: sc.Movement; recipes: schedule: movement).

    Sanh, Wolf & Rush (2020): scores ``-Σ W ⊙ ∂L/∂W`` accumulate every training step, and the gradual
    (cubic) schedule prunes by them to ``sparsity``. Its scores need the training steps, so ``movement``
    is not a criterion a one-shot stage (or ``--criterion``) can name. The stage's row is ``"movement <i>"``.
    """

    name: ClassVar[str] = "movement"
    example: ClassVar[dict[str, Any]] = {"schedule": "movement", "sparsity": 0.5, "epochs": 1}
    listed_as: ClassVar[str | None] = "movement"
    hint: ClassVar[str] = "needs the training steps: use a stage with schedule: movement (Python: sc.Movement)"

    schedule: Literal["movement"] = Field("movement", description="movement: prune while training, by movement "
                                                                  "scores (cubic schedule)")

    def targets(self) -> list[float]:
        final = float(self.sparsity or 0.0)
        return [final, final / 2]  # the end, and a step on the way (the cubic schedule passes below it)

    def prune_while_training(self, ctx: StageContext) -> list[Row]:
        tracker = MovementTracker(ctx.model, layers=self.layers or None)
        end = ctx.end_step(self.epochs)
        gradual = GradualPruner(ctx.model, self.sparsity, start=0, end=end, every=min(self.every, end),
                                criterion=tracker.criterion(), **self.options())
        ctx.fit(self.epochs, self.name, on_step=_Both(tracker.accumulate, gradual.step).step)
        return []


class _Both:
    """``step()``: gather movement scores (the step's gradients are still there), then prune."""

    def __init__(self, gather: Callable[[], Any], prune_step: Callable[[], Any]) -> None:
        self.gather, self.prune_step = gather, prune_step

    def step(self, *_: Any) -> None:
        self.gather()
        self.prune_step()
