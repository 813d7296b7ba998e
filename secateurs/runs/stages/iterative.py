"""``iterative``: iterative magnitude pruning with rewinding, round by round (IMP, lottery tickets)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from ...files import write_text
from ...training import distributed
from ...training.schedules import Iterative as IterativePruner
from ..keys import key as recipe_key
from .base import register
from .fields import Scored, Training

if TYPE_CHECKING:
    from .context import Row, StageContext


@register
class Iterative(Scored, Training):
    """Prune ``rate`` of the remaining weights per round, training ``epochs`` before each (Frankle & Carbin 2019).

    After ``k`` rounds the sparsity is ``1 - (1 - s0)(1 - rate)^k``, ``s0`` the sparsity the stage starts from
    (``1 - (1 - rate)^k`` after a dense model). The surviving weights rewind to their values
    before the dense training (``rewind: init``), to those after a step number, or not at all (``null``).
    Each round is saved in ``stage-<i>-rounds/``, so an interrupted run resumes after the last one; one row
    per round (``"iterative <i>: round <k>"``), then ``"iterative <i>"``.
    """

    name: ClassVar[str] = "iterative"
    example: ClassVar[dict[str, Any]] = {"schedule": "iterative", "rounds": 1, "rate": 0.5, "epochs": 1}

    schedule: Literal["iterative"] = Field("iterative", description="iterative: prune in rounds, training "
                                                                    "between them (IMP)")
    epochs: int = Field(0, ge=0, description="epochs trained per round (at least 1)")
    rounds: int = Field(5, ge=1, description="pruning rounds")
    rate: float = Field(0.2, gt=0, lt=1, description="fraction of the remaining weights pruned per round")
    rewind: Literal["init"] | int | None = Field("init", description="init, a step number, or null")

    def targets(self) -> list[float]:
        return [self.rate]  # the first round, from a dense model

    def prune_while_training(self, ctx: StageContext) -> list[Row]:
        pruner = IterativePruner(ctx.model, rounds=self.rounds, rate=self.rate, rewind=self.rewind,
                                 out_dir=rounds_dir(ctx), **self.options())
        if self.rewind == "init" and ctx.init_state is not None:
            pruner.state = ctx.init_state  # the weights before the dense training: a lottery ticket

        def train_round(_model: Any, k: int) -> dict[str, Any]:
            ctx.fit(self.epochs, f"round {k}", seed_offset=k)
            return {"accuracy": ctx.accuracy(ctx.model)}

        pruner.run(train_round)
        return [{"name": f"iterative {ctx.index}: round {h['round']}", "accuracy": h.get("accuracy"),
                 "sparsity": h["sparsity"]} for h in pruner.history]


def rounds_dir(ctx: StageContext) -> Path:
    """Where stage ``ctx.index``'s rounds are saved, emptied first when they came from another recipe.

    An interrupted run resumes from the saved rounds; but rounds left by a recipe whose model, data,
    training or stages up to this one differ would be the wrong starting point, so they are removed
    (the key of what produced them is kept beside them, as ``dense.safetensors`` keeps its own).
    """
    folder, key = ctx.out / f"stage-{ctx.index}-rounds", recipe_key(ctx.recipe, stages=ctx.index)
    if distributed.is_main():  # under torchrun, rank 0 owns the files
        stamp = folder / "recipe_key"
        if folder.is_dir() and (not stamp.is_file() or stamp.read_text() != key):
            shutil.rmtree(folder)
        if not stamp.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            write_text(stamp, key)
    distributed.barrier()
    return folder
