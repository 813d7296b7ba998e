"""Fields several stage kinds share, each defined once: a kind inherits the groups it uses.

Every enumeration comes from the module that owns it: criteria from :mod:`secateurs.criteria` (those usable
by name), scopes from :data:`secateurs.pruning.SCOPES`, granularities from :func:`secateurs.granularity.parse`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from ... import criteria, granularity
from ...errors import check_sparsity
from ...pruning import SCOPES
from ...pruning import check as check_prune
from ..settings import Strict
from .base import StageBase, listed

if TYPE_CHECKING:
    from torch import nn

    from .context import Row, StageContext

__all__ = ["STANDALONE", "Allocation", "Every", "Scored", "Seeded", "Sparsity", "Training"]

STANDALONE = tuple(n for n in criteria.names() if criteria.get(n).standalone)
"""The criteria a recipe (and ``--criterion``) may name: those that need no object built in Python."""


class Sparsity(Strict):
    """``sparsity``: the stage's target, required."""

    sparsity: float | None = Field(None, description="fraction of weights removed at the end of the stage, "
                                                     "in [0, 1)")

    @field_validator("sparsity")
    @classmethod
    def _sparsity(cls, v: float | None) -> float | None:
        return None if v is None else check_sparsity(v)

    @model_validator(mode="after")
    def _needs_sparsity(self) -> Sparsity:
        if self.sparsity is None:
            raise ValueError(f"{self._needing()} needs sparsity")
        return self

    def _needing(self) -> str:
        """What the message says needs sparsity."""
        return self.selector()  # type: ignore[attr-defined]  # mixed into a StageBase


class Every(Strict):
    """``every``: steps between two pruning (or regrowth) steps."""

    every: int = Field(50, ge=1, description="training steps between pruning (or regrowth) steps")


class Seeded(Strict):
    """``seed`` of what is random in the stage."""

    seed: int = Field(0, description="seed for stochastic criteria (and random masks)")


class Allocation(Strict):
    """How scores become masks: scope, granularity and the collapse guard."""

    scope: Literal[SCOPES] = Field("global", description="global: one threshold; local: each layer")  # type: ignore[valid-type]
    granularity: str = Field("unstructured", description="what is removed together: unstructured, neuron, channel, "
                                                         "filter, block:RxC or N:M")
    min_density: float = Field(0.0, ge=0, le=1, description="fraction every layer keeps at least")

    @field_validator("granularity")
    @classmethod
    def _granularity(cls, v: str) -> str:
        granularity.parse(v)
        return v

    def removes_units(self) -> bool:
        """Whether its granularity removes whole neurons, channels or filters."""
        return granularity.parse(self.granularity).units

    def targets(self) -> list[float]:
        """Sparsities the stage will ask :func:`secateurs.prune` for (the first ones it reaches), checked
        against the model before any work (a 2:4 stage asked for 0.7 fails there, not after training)."""
        return []

    def check(self, model: nn.Module) -> None:
        """The layer patterns, then each of :meth:`targets` with the granularity, on ``model``."""
        super().check(model)  # type: ignore[misc]  # StageBase.check, after this mixin in every kind
        for sparsity in self.targets():
            check_prune(model, sparsity, granularity=self.granularity, layers=self.layers or None)  # type: ignore[attr-defined]

    def options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`secateurs.prune` (and the pruners) this block stands for."""
        layers = self.layers or None  # type: ignore[attr-defined]  # mixed into a StageBase
        return {"scope": self.scope, "granularity": self.granularity, "layers": layers,
                "min_density": self.min_density}


class Scored(Allocation, Seeded):
    """A criterion usable by name, and how its scores become masks."""

    criterion: Literal[STANDALONE] = Field(  # type: ignore[valid-type]
        "magnitude", description="a criterion usable by name (see `secateurs criteria`)")
    probes: int | None = Field(None, ge=1, description="obd only: Hutchinson probes in all (default 128; more is "
                                                        "slower and closer to the exact Hessian diagonal)")

    @model_validator(mode="after")
    def _probes_for_obd(self) -> Scored:
        if self.probes is not None and self.criterion != "obd":
            raise ValueError(f"probes applies to criterion obd, not {self.criterion!r}")
        return self

    @field_validator("criterion", mode="before")
    @classmethod
    def _stage_of_its_own(cls, v: Any) -> Any:
        for kind in listed():  # a way to prune that is a stage of its own, not a score
            if v == kind.listed_as:
                raise ValueError(f"criterion {v!r} {kind.hint}")
        return v

    def needs_data(self) -> str | None:
        """``"criterion 'snip'"`` when the criterion needs data, else ``None``."""
        return f"criterion {self.criterion!r}" if criteria.get(self.criterion).needs_data else None

    def options(self) -> dict[str, Any]:
        crit: Any = self.criterion
        if self.probes is not None:  # a criterion with a setting of its own: built here, seeded as by name
            crit = type(criteria.get(self.criterion))(seed=self.seed, probes=self.probes)
        return {**super().options(), "criterion": crit, "seed": self.seed}


class Training(StageBase):
    """A stage that trains while it prunes: ``epochs``, and the rows it ends with.

    A kind implements :meth:`prune_while_training`; :meth:`run` adds what every such stage reports:
    the sparsity reached (on its last row) and a row ``"<name> <index>"`` with the accuracy after it.
    """

    trains_while_pruning = True

    epochs: int = Field(0, ge=0, description="epochs trained while pruning (at least 1)")

    @model_validator(mode="after")
    def _needs_epochs(self) -> Training:
        if self.epochs < 1:
            raise ValueError(f"schedule {self.name} needs epochs >= 1 (training while pruning)")
        return self

    def run(self, ctx: StageContext) -> tuple[nn.Module, list[Row]]:
        rows = self.prune_while_training(ctx)
        return ctx.model, ctx.close(rows, f"{self.name} {ctx.index}")

    def prune_while_training(self, ctx: StageContext) -> list[Row]:
        """Train ``ctx.model`` while pruning it, in place; the rows of its steps (often none)."""
        raise NotImplementedError
