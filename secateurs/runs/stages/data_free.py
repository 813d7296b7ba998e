"""``data-free``: merge redundant neurons (:func:`secateurs.merge_neurons`) or fold clusters of channels
(:func:`secateurs.fold`), with no data."""

from __future__ import annotations

import copy
import warnings

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator
from torch import nn

from ... import zoo

from ...surgery.fold import fold
from ...surgery.merge import merge_neurons
from .base import ONESHOT, StageBase, register

if TYPE_CHECKING:
    from .context import Row, StageContext

DATA_FREE = "data-free"
"""The criterion name that selects this stage (with no schedule, or ``schedule: oneshot``)."""


@register
class DataFree(StageBase):
    """Merge redundant neurons or fold clusters of channels, no data needed; use --amount, not --sparsity.

    Selected by ``criterion: data-free`` (with no schedule, or ``schedule: oneshot``). ``method: merge``
    (the default): each merged neuron's outgoing weights are added to its most similar kept neuron's
    (Srinivas & Babu 2015). ``method: fold``: k-means clusters of coupled channels are folded into one,
    with the BatchNorm statistics repaired (:func:`secateurs.fold`). Either way the layers shrink (the
    model is replaced). The stage's row is ``"merge <i>: data-free, amount <a>"`` (``fold <i>: ...``).
    """

    name: ClassVar[str] = DATA_FREE
    example: ClassVar[dict[str, Any]] = {"criterion": DATA_FREE, "amount": 0.25}
    by_criterion: ClassVar[bool] = True
    listed_as: ClassVar[str | None] = DATA_FREE
    hint: ClassVar[str] = "runs once: use schedule oneshot"

    schedule: Literal["oneshot"] = Field(ONESHOT, description="oneshot (or left out): merging runs once")
    criterion: Literal["data-free"] = Field(DATA_FREE, description="data-free: selects neuron merging")
    amount: float | Literal["auto"] | None = Field(
        None, description="fraction of each layer's neurons merged, in [0, 1), or auto (the knee of the "
                          "saliency curve)")
    scaled: bool = Field(False, description="also merge positive multiples (ReLU-like layers)")
    method: Literal["merge", "fold"] = Field(
        "merge", description="merge: pairwise neuron merging (Srinivas & Babu); fold: k-means clusters of "
                             "coupled channels folded into one, BatchNorm statistics repaired (sc.fold)")

    @field_validator("amount", mode="before")
    @classmethod
    def _amount_given(cls, v: Any) -> Any:
        if isinstance(v, str) and v != "auto":
            try:
                return float(v)
            except ValueError:
                raise ValueError(f"amount must be a fraction in [0, 1) or auto, got {v!r}") from None
        return v

    @field_validator("amount")
    @classmethod
    def _amount(cls, v: float | str | None) -> float | str | None:
        if isinstance(v, float) and not 0 <= v < 1:
            raise ValueError(f"amount must be in [0, 1) or auto, got {v!r}")
        return v

    @model_validator(mode="after")
    def _needs_amount(self) -> DataFree:
        if self.amount is None:
            raise ValueError("criterion data-free needs amount: a fraction in [0, 1) or auto")
        if self.method == "fold" and (self.scaled or self.layers):
            raise ValueError("method fold takes neither scaled nor layers (it folds every coupled group)")
        return self

    def check(self, model: nn.Module) -> None:
        """Merge or fold a copy of the model as built (untrained) and discard it: layer patterns, mergeable
        pairs and the model's structure are checked before any training. Its warnings are left to the run."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._apply(copy.deepcopy(model), zoo.example_inputs(model))

    def _apply(self, model: nn.Module, example: Any) -> nn.Module:
        if self.method == "fold":
            return fold(model, self.amount, example_inputs=example).model
        return merge_neurons(model, self.amount, layers=self.layers or None, scaled=self.scaled,
                             example_inputs=example).model

    def run(self, ctx: StageContext) -> tuple[nn.Module, list[Row]]:
        if self.method == "fold":
            folded = self._apply(ctx.model, ctx.example)
            return folded, [ctx.done(folded, f"fold {ctx.index}: data-free, amount {self.amount}")]
        merged = merge_neurons(ctx.model, self.amount, layers=self.layers or None, scaled=self.scaled,
                               example_inputs=ctx.example)
        label = f"merge {ctx.index}: data-free, amount {self.amount}" + (", scaled" if self.scaled else "")
        return merged.model, [ctx.done(merged.model, label)]
