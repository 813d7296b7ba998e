"""Choosing ``round_to`` from a measurement: the channel multiple below which narrowing a layer saves nothing.

On CPUs and GPUs a convolution's time is often a staircase in its channel count: the kernels work on vectors
of 4, 8 or 16 channels (SIMD lanes, tensor-core tiles), so a width inside one step costs as much as the
step's top. :func:`sweep` times one layer at every output width over 16 consecutive counts ending at a
multiple of 16; :func:`choose_round_to` reads the staircase: the largest multiple ``r`` (16, 8, 4, 2) such
that every width between two multiples of ``r`` is no faster, within the measured noise, than the multiple
above it. When nothing is a step (time proportional to width) or the times do not change beyond their noise,
it returns 1: rounding would then only keep channels for nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .table import LatencyTable, LayerSpec
from .timing import Timing

__all__ = ["CANDIDATES", "choose_round_to", "sweep"]

CANDIDATES = (16, 8, 4, 2)
"""The multiples considered, largest first."""


def _tolerance(a: Timing, b: Timing) -> float:
    """The difference two timings may show by noise alone: twice their spreads, and at least 3%."""
    return max(2 * (a.spread_ms + b.spread_ms), 0.03 * max(a.ms, b.ms))


def choose_round_to(times: Mapping[int, Timing], candidates: Sequence[int] = CANDIDATES) -> int:
    """The largest multiple whose steps the timings show (see the module's docstring), else 1.

    Args:
        times: ``{width: timing}`` over consecutive widths.
        candidates: the multiples tried, largest first.

    Example:
        >>> steps = {w: Timing(float(-(-w // 8)), 0.0, 5) for w in range(16, 33)}  # a staircase of 8
        >>> choose_round_to(steps), choose_round_to({w: Timing(float(w), 0.0, 5) for w in range(16, 33)})
        (8, 1)
    """
    widths = sorted(times)
    if len(widths) < 2 or times[widths[-1]].ms - times[widths[0]].ms <= _tolerance(times[widths[-1]],
                                                                                      times[widths[0]]):
        return 1  # flat: the layer's time does not follow its width here
    for r in candidates:
        ups = [(w, -(-w // r) * r) for w in widths if w % r]
        pairs = [(times[w], times[u]) for w, u in ups if u in times]
        if pairs and all(t_up.ms - t_w.ms <= _tolerance(t_w, t_up) for t_w, t_up in pairs):
            return r
    return 1


def sweep(spec: LayerSpec, table: LatencyTable, span: int = 16) -> dict[int, Timing]:
    """``{width: timing}`` of ``spec`` at output widths ``top - span .. top`` (``top``: the largest multiple of
    ``span`` not above its width; 1 .. width for a narrower layer), from ``table`` (measured if missing)."""
    top = spec.c_out // span * span
    low = max(1, top - span) if top >= span else 1
    top = top if top >= span else spec.c_out
    return {w: table.get(spec.at(spec.c_in, w)) for w in range(low, top + 1)}
