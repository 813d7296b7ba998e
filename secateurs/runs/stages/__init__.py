"""Recipe stages: one file per stage kind, each registered by name.

A recipe's ``prune:`` list holds stages. Each mapping is read as the kind :func:`kind_of` names: its
``schedule:`` (``oneshot`` when left out), or, with no schedule (or ``oneshot``), a ``criterion:`` that is a
stage of its own (``data-free``). :class:`Stage` is that discriminated union of every registered kind.

A kind is a small pydantic model, a :class:`StageBase` subclass decorated with :func:`register`: only its own
fields (shared groups of fields come from :mod:`.fields`), each with a ``description``, its own validators, an
``example`` (its smallest valid mapping) and ``run(ctx) -> (model, rows)`` that carries it out with a
:class:`StageContext`. Every module of this package is imported with it, so adding a stage kind is one new
file and its test; the runner, the recipe schema, ``secateurs prune``'s flags (from the kinds a recipe selects
without a schedule) and ``secateurs criteria`` come from this registry, and
``tests/runs/test_stage_contract.py`` runs every registered kind.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Union

from pydantic import Discriminator, GetCoreSchemaHandler, Tag
from pydantic.fields import FieldInfo
from pydantic_core import CoreSchema

from ...registry import load_package
from .base import (
    ONESHOT,
    StageBase,
    get,
    kind_of,
    kinds,
    listed,
    names,
    register,
    schedules,
)
from .context import Row, StageContext

__all__ = ["ONESHOT", "Row", "Stage", "StageBase", "StageContext", "get", "kind_of", "kinds", "listed", "names",
           "once", "register", "schedules"]


load_package(__name__, __path__)  # every stage kind, before the union of them is built


def once() -> list[type[StageBase]]:
    """The kinds a stage with no schedule can be: ``oneshot`` first, then those selected by a criterion
    (``data-free``). ``secateurs prune`` makes its flags from their fields."""
    return [get(ONESHOT)] + [k for k in kinds() if k.by_criterion]


def _union() -> Any:
    """``Annotated[Union[each kind tagged with its name], Discriminator(kind_of)]``."""
    members = tuple(Annotated[k, Tag(k.name)] for k in kinds())
    return Annotated[Union[members], Discriminator(kind_of)]  # noqa: UP007  (a Union built from a tuple)


_UNION = _union()


class _AnyKind(type):
    """``isinstance(x, Stage)`` holds for an instance of every kind."""

    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, StageBase)


class Stage(metaclass=_AnyKind):
    """A recipe's pruning stage, as a type: any registered kind, read as the one :func:`kind_of` names.

    In a pydantic model (``prune: list[Stage]``) it validates as the discriminated union of every kind;
    an instance is one of the kinds (``isinstance(x, Stage)`` holds for each). :attr:`model_fields` gathers
    the fields of every kind (the first definition of a shared name), so documentation can list them all.
    """

    model_fields: ClassVar[dict[str, FieldInfo]] = {}

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return handler(_UNION)


for _kind in kinds():
    for _name, _field in _kind.model_fields.items():
        Stage.model_fields.setdefault(_name, _field)
