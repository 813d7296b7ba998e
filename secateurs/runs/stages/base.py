"""What every recipe stage is: :class:`StageBase`, the registry of stage kinds, and :func:`kind_of`.

A stage kind is a small pydantic model with only its own fields, registered under the name a recipe
selects it by (see :mod:`secateurs.runs.stages`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import Field
from torch import nn

from ...layers import resolve_layers
from ...registry import add
from ..settings import Finetune, Strict

if TYPE_CHECKING:
    from .context import Row, StageContext

__all__ = ["ONESHOT", "StageBase", "get", "kind_of", "kinds", "listed", "names", "register", "schedules"]

ONESHOT = "oneshot"
"""The kind a stage is when it names neither a schedule nor a criterion that is a stage of its own."""

_REGISTRY: dict[str, type[StageBase]] = {}

K = TypeVar("K", bound="type[StageBase]")


class StageBase(Strict):
    """What every pruning stage of a recipe has: its kind (``schedule``), layer patterns and fine-tuning.

    A kind subclasses this with its own fields (each with a ``description``), its own validators, and
    :meth:`run`; :func:`register` adds it under :attr:`name`. The class attributes below tell the
    recipe and the CLI what the kind needs, without testing its type.

    Attributes:
        name: the registered name; a recipe's ``schedule:`` (or ``criterion:``, see :attr:`by_criterion`).
        example: the smallest valid YAML mapping of this kind (docs and the contract test run it).
        trains_while_pruning: ``True`` when the stage trains (it needs data and epochs).
        by_criterion: ``True`` when ``criterion: <name>`` (with no schedule, or ``oneshot``) selects it.
        listed_as: the name ``secateurs criteria`` lists it under, as a way to prune that is not a
            criterion usable by name; ``None`` to leave it out.
        hint: how to use it, for the message when its name is given where it does not work.
        blocks_compact: why ``export.compact`` cannot follow it, or ``None``.
    """

    name: ClassVar[str] = ""
    example: ClassVar[dict[str, Any]] = {}
    trains_while_pruning: ClassVar[bool] = False
    by_criterion: ClassVar[bool] = False
    listed_as: ClassVar[str | None] = None
    hint: ClassVar[str] = ""
    blocks_compact: ClassVar[str | None] = None

    schedule: str = Field(ONESHOT, description="the stage's kind (`secateurs.runs.stages.names()`); oneshot when "
                                                "not given")
    layers: dict[str, float | None] = Field(default_factory=dict,
                                            description="name or glob -> sparsity, or null to exclude")
    finetune: Finetune | None = Field(None, description="fine-tuning after this stage")

    def run(self, ctx: StageContext) -> tuple[nn.Module, list[Row]]:
        """Carry the stage out on ``ctx.model``.

        Returns:
            The model (the same one changed in place, or a new one) and the rows this stage adds to
            ``metrics.json``'s ``stages`` (fine-tuning is the runner's, after it).
        """
        raise NotImplementedError

    def check(self, model: nn.Module) -> None:
        """Raise :class:`~secateurs.PruningError` for what the schema cannot see (layer patterns), before any work."""
        resolve_layers(model, self.layers or None, 0.0)

    def trains(self) -> bool:
        """Whether the stage or its fine-tuning trains (then the recipe needs data)."""
        return self.trains_while_pruning or bool(self.finetune and self.finetune.epochs)

    def needs_data(self) -> str | None:
        """What in this stage needs the recipe's data besides training (``"criterion 'snip'"``), or ``None``."""
        return None

    def removes_units(self) -> bool:
        """Whether it removes whole neurons, channels or filters (what ``export.compact`` shrinks)."""
        return False

    @classmethod
    def selector(cls) -> str:
        """How a recipe selects this kind, for messages: ``schedule gradual`` or ``criterion data-free``."""
        return f"{'criterion' if cls.by_criterion else 'schedule'} {cls.name}"


def register(cls: K) -> K:
    """Class decorator: add a stage kind to the registry under ``cls.name``."""
    return add(_REGISTRY, cls.name, cls, "stage kind")


def names() -> list[str]:
    """Registered stage kinds, sorted."""
    return sorted(_REGISTRY)


def kinds() -> list[type[StageBase]]:
    """The registered stage classes, in the order of :func:`names`."""
    return [_REGISTRY[n] for n in names()]


def schedules() -> list[str]:
    """The values ``schedule:`` takes (kinds selected by a criterion run with ``schedule: oneshot``)."""
    return [k.name for k in kinds() if not k.by_criterion]


def listed() -> list[type[StageBase]]:
    """Kinds that ``secateurs criteria`` lists as ways to prune besides the criteria usable by name."""
    return [k for k in kinds() if k.listed_as]


def get(name: str) -> type[StageBase]:
    """The stage class registered as ``name``.

    Raises:
        KeyError: an unknown name (recipes report it through pydantic, naming the key and the line).
    """
    return _REGISTRY[name]


def kind_of(value: Any) -> str | None:
    """The registered name a stage mapping (or instance) is read as: the discriminator of the stage union.

    ``schedule`` when it is given, except ``oneshot`` (or no schedule) with ``criterion: NAME`` naming a
    kind selected by criterion (``data-free``): then that kind; ``oneshot`` when neither is given.
    ``None`` for a value that is not a mapping.

    Example:
        >>> kind_of({"sparsity": 0.5}), kind_of({"schedule": "gradual"}), kind_of({"criterion": "data-free"})
        ('oneshot', 'gradual', 'data-free')
    """
    if isinstance(value, Mapping):
        schedule, criterion = value.get("schedule"), value.get("criterion")
    elif isinstance(value, StageBase):
        schedule, criterion = value.schedule, getattr(value, "criterion", None)
    else:
        return None
    chosen = _REGISTRY.get(criterion) if isinstance(criterion, str) else None
    if chosen is not None and chosen.by_criterion and schedule in (None, ONESHOT):
        return chosen.name
    return ONESHOT if schedule is None else str(schedule)
