"""Movement: scores learned during training (Sanh, Wolf & Rush, "Movement Pruning:
Adaptive Sparsity by Fine-Tuning", NeurIPS 2020).

The scores come from a :class:`secateurs.learned.Movement` tracker that
accumulated ``S ← S − W ⊙ ∂L/∂W`` over training steps; this criterion only
reads them. Use ``criterion=Movement(model).criterion()``: the bare name
``"movement"`` has no tracker and raises :class:`~secateurs.PruningError`.
"""

from __future__ import annotations

from typing import Protocol

from torch import Tensor

from ..errors import PruningError
from . import Context, Criterion, register


class Tracker(Protocol):
    """What the criterion needs of :class:`secateurs.learned.Movement`."""

    steps: int

    def scores(self) -> dict[str, Tensor]: ...


USAGE = ("use movement = secateurs.learned.Movement(model), call movement.accumulate() after each "
         "loss.backward() while training, then prune with criterion=movement.criterion()")


@register
class MovementScore(Criterion):
    """Score ``S = −Σ_t W ⊙ ∂L/∂W`` accumulated while training (Python only: ``Movement(model).criterion()``).

    Movement pruning (Sanh et al., 2020). A weight that training moves toward zero loses score, one that moves away
    gains it. The scores are a snapshot taken when pruning starts (:meth:`prepare`).

    Args:
        seed: unused (the registry passes it to every criterion).
        tracker: the :class:`secateurs.learned.Movement` whose scores to use.

    Example:
        For ``W = [1, -2]`` and gradients ``[1, 1]`` then ``[2, -1]`` (with ``W`` at
        ``[0.5, -2.5]`` by then) the scores are ``[-1 - 1, 2 - 2.5] = [-2, -0.5]``.
    """

    name = "movement"
    standalone = False  # needs a Movement tracker: Movement(model).criterion()

    def __init__(self, seed: int = 0, tracker: Tracker | None = None) -> None:
        super().__init__(seed)
        self.tracker = tracker
        self._scores: dict[str, Tensor] = {}

    def prepare(self, ctx: Context) -> None:
        if self.tracker is None:
            raise PruningError(f"criterion 'movement' needs scores learned while training; {USAGE}")
        if self.tracker.steps == 0:
            raise PruningError(f"criterion 'movement': no step accumulated yet; {USAGE}")
        scores = self.tracker.scores()
        missing = [n for n in ctx.layers if n not in scores]
        if missing:
            raise PruningError(
                f"criterion 'movement' has no scores for {', '.join(missing)}; track them with "
                f"Movement(model, layers=...) or exclude them with layers={{name: None}}"
            )
        for name, module in ctx.layers.items():
            shape = tuple(module.weight.shape)
            if tuple(scores[name].shape) != shape:
                raise PruningError(
                    f"criterion 'movement': scores of {name} have shape {tuple(scores[name].shape)}, "
                    f"the weight {shape}; the model changed since tracking started"
                )
        self._scores = scores

    def score(self, name: str, weight: Tensor) -> Tensor:
        return self._scores[name].clone().to(weight.device)
