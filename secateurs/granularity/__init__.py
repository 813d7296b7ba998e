"""Granularity: what is removed together.

Group scores are the **mean** of the element scores in the group (for magnitude, the
L1 norm of the group divided by its size), so groups of different sizes compare fairly.
Under global scope, structured group scores are further divided by the mean absolute
group score of their layer (see :func:`normalise`), so that layers with different weight
scales are compared by relative importance.

Each granularity is one file in this package defining a :class:`Granularity` subclass
decorated with :func:`register`; files added here are found on first use, so adding a
granularity touches one new file (and its test).
"""

from __future__ import annotations

from ..registry import load_package
from .base import Granularity, normalise, register, registered, spellings, unknown
from .unstructured import Unstructured  # registered in this order, the order users read them in
from .channels import Channels  # noqa: I001
from .block import Block
from .nm import NM

__all__ = ["NM", "Block", "Channels", "Granularity", "Unstructured", "names", "normalise", "parse", "register"]

def _load_all() -> None:
    load_package(__name__, __path__)


def names() -> list[str]:
    """How every registered granularity is written: ``unstructured``, ``neuron``, ..., ``N:M``."""
    _load_all()
    return spellings()


def parse(granularity: object) -> Granularity:
    """Resolve a granularity: a name, ``"N:M"``, ``"block:RxC"``, a ``(rows, cols)`` tuple or an instance.

    Raises:
        PruningError: for anything no registered granularity accepts, naming what is allowed.
    """
    if isinstance(granularity, Granularity):
        return granularity
    _load_all()
    for cls in registered():
        found = cls.parse(granularity)
        if found is not None:
            return found
    raise unknown(granularity)
