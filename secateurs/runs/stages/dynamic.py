"""``rigl`` and ``set``: dynamic sparse training at a fixed sparsity, dropping and regrowing weights."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from ...allocation import DISTRIBUTIONS
from ...training.schedules import RigL as RigLPruner
from .base import register
from .fields import Every, Seeded, Sparsity, Training

if TYPE_CHECKING:
    from .context import Row, StageContext


class _Dynamic(Sparsity, Every, Seeded, Training):
    """What RigL and SET share; they differ in how dropped weights regrow (:attr:`regrow`)."""

    regrow: ClassVar[str] = ""

    alpha: float = Field(0.3, gt=0, le=1, description="initial fraction of the active weights dropped and regrown "
                                                      "at each update (decays to 0)")
    distribution: Literal[tuple(DISTRIBUTIONS)] = Field(  # type: ignore[valid-type]
        "erk", description="layer sparsities: erk (Erdős–Rényi-kernel) or uniform")

    def prune_while_training(self, ctx: StageContext) -> list[Row]:
        pruner = RigLPruner(ctx.model, self.sparsity, every=self.every, end=ctx.end_step(self.epochs),
                            alpha=self.alpha, distribution=self.distribution, regrow=self.regrow,
                            layers=self.layers or None, seed=self.seed)
        # the optimizer state of regrown weights is zeroed once the pruner knows the optimizer
        ctx.fit(self.epochs, self.name, on_step=pruner.step,
                on_optimizer=lambda opt: setattr(pruner, "optimizer", opt))
        return []


@register
class RigL(_Dynamic):
    """RigL (Evci et al. 2020): train at ``sparsity``, regrowing the weights with the largest dense gradient.

    Every ``every`` steps during the first three quarters of the stage, a decaying fraction (``alpha``) of
    each layer's active weights with the smallest magnitude is dropped and as many inactive ones regrow.
    The stage's row is ``"rigl <i>"``.
    """

    name: ClassVar[str] = "rigl"
    example: ClassVar[dict[str, Any]] = {"schedule": "rigl", "sparsity": 0.5, "epochs": 1}
    regrow: ClassVar[str] = "gradient"

    schedule: Literal["rigl"] = Field("rigl", description="rigl: dynamic sparse training, gradient regrowth")


@register
class Set(_Dynamic):
    """SET (Mocanu et al. 2018): RigL's drop-and-regrow at ``sparsity``, regrowing at random.

    The stage's row is ``"set <i>"``.
    """

    name: ClassVar[str] = "set"
    example: ClassVar[dict[str, Any]] = {"schedule": "set", "sparsity": 0.5, "epochs": 1}
    regrow: ClassVar[str] = "random"

    schedule: Literal["set"] = Field("set", description="set: dynamic sparse training, random regrowth")
