"""Latency: the median wall time of one forward pass and the spread of the timings, for the report."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..inputs import as_inputs, call_model, evaluating


def latency_ms(model: nn.Module, example_inputs: Any, repeats: int = 25, budget_s: float = 1.0) -> float | None:
    """Median milliseconds of ``model(*example_inputs)`` in eval mode, without gradients.

    Two warm-up calls first (allocator, lazy initialisation), then up to ``repeats`` timed
    calls, stopping early once ``budget_s`` is spent so that a big model costs about a second.
    The median, not the mean, because other processes on the machine add rare long outliers.

    Args:
        model: the network; its train/eval modes are restored afterwards.
        example_inputs: a tuple of inputs (or one tensor), usually one example.
        repeats: timed calls at most.
        budget_s: seconds of timed calls at most (at least one call is timed).

    Returns:
        Milliseconds, or ``None`` when there are no example inputs.

    Example:
        >>> import torch, torch.nn as nn
        >>> latency_ms(nn.Linear(4, 2), (torch.ones(1, 4),)) > 0
        True
    """
    spread = latency_spread(model, example_inputs, repeats, budget_s)
    return None if spread is None else spread[1]


def latency_spread(model: nn.Module, example_inputs: Any, repeats: int = 25,
                   budget_s: float = 1.0) -> tuple[float, float, float] | None:
    """The first quartile, the median and the third quartile of the calls :func:`latency_ms` times, in ms:
    two timings whose middle halves overlap show no measurable difference (see :func:`compare_spreads`).

    Example:
        >>> import torch, torch.nn as nn
        >>> low, mid, high = latency_spread(nn.Linear(4, 2), (torch.ones(1, 4),))
        >>> 0 < low <= mid <= high
        True
    """
    if example_inputs is None:
        return None
    inputs = as_inputs(example_inputs)
    cuda = any(p.is_cuda for p in model.parameters())  # GPU kernels run asynchronously: wait for them

    def call() -> None:
        call_model(model, inputs)
        if cuda:
            torch.cuda.synchronize()

    times: list[float] = []
    with torch.no_grad(), evaluating(model):
        for _ in range(2):
            call()
        end = time.perf_counter() + budget_s
        while len(times) < repeats and (not times or time.perf_counter() < end):
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
    low, mid, high = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else times * 3
    return 1000.0 * low, 1000.0 * mid, 1000.0 * high


def compare_spreads(dense: Sequence[float], final: Sequence[float]) -> str:
    """A sentence comparing two :func:`latency_spread` results ``(low, median, high)``.

    Example:
        >>> compare_spreads((1.0, 1.1, 1.2), (1.1, 1.2, 1.4))
        'no measurable difference (the middle halves of the timings overlap)'
        >>> compare_spreads((2.0, 2.1, 2.2), (0.9, 1.0, 1.0))
        'final 2.10x faster (the middle halves of the timings do not overlap)'
    """
    d_low, d_mid, d_high = dense
    f_low, f_mid, f_high = final
    if d_low <= f_high and f_low <= d_high:
        return "no measurable difference (the middle halves of the timings overlap)"
    faster = d_mid > f_mid
    ratio = d_mid / f_mid if faster else f_mid / d_mid
    return f"final {ratio:.2f}x {'faster' if faster else 'slower'} (the middle halves of the timings do not overlap)"
