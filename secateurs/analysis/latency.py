"""Latency: the median wall time of one forward pass, for the report."""

from __future__ import annotations

import statistics
import time
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
    return 1000.0 * statistics.median(times)
