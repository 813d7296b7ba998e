"""The one exception type users catch."""

from __future__ import annotations

import sys
from pathlib import Path

_PACKAGE = str(Path(__file__).resolve().parent)


class PruningError(ValueError):
    """Bad input to secateurs: the message names the argument, the value and what is allowed."""


def check_sparsity(value: object, name: str = "sparsity") -> float:
    """Return ``value`` as a float in [0, 1) or raise :class:`PruningError`.

    Args:
        value: the sparsity received (fraction of weights removed).
        name: the argument's name, used in the message.

    Raises:
        PruningError: when ``value`` is not a number in [0, 1).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PruningError(f"{name} must be a number in [0, 1), got {value!r}")
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise PruningError(f"{name} must be in [0, 1) (the fraction of weights removed), got {value!r}")
    return value


def check_choice(value: object, name: str, allowed: list[str] | tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``allowed``, else raise :class:`PruningError`."""
    if value not in allowed:
        raise PruningError(f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")
    return str(value)


def caller_stacklevel() -> int:
    """The ``stacklevel`` for ``warnings.warn`` that points at the first frame outside secateurs (the user's line),
    however many of secateurs' own functions lie between (``sc.prune`` calls ``pruning.prune``, a recipe stage
    calls ``sc.prune``, ...)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level
