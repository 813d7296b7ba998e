"""Wall-clock timing with its noise: medians and spreads of repeated calls, and the machine they ran on.

Timing on a shared machine is noisy (other processes take the cores, the allocator faults pages in), so every
figure here is a median over repeats with its *spread*: half the interquartile range of the repeats, the
noise a reader should allow for. Whole models are timed *interleaved* (one call of each per round), so that a
change of load during the measurement hits the dense and the pruned model alike, and their ratio per round
is reported too.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..inputs import call_model, evaluating

__all__ = ["Timing", "interleaved", "machine", "machine_key", "spread", "summarise", "time_call"]


@dataclass(frozen=True)
class Timing:
    """A measured duration: the median over ``n`` repeats and its spread (half the interquartile range).

    Example:
        >>> Timing(2.0, 0.1, 9).within(2.05)
        True
    """

    ms: float
    spread_ms: float
    n: int

    def within(self, limit: float) -> bool:
        """Whether ``limit`` is reached within the spread: ``ms - spread_ms <= limit``."""
        return self.ms - self.spread_ms <= limit

    def as_dict(self) -> dict[str, Any]:
        """``{"ms": .., "spread_ms": .., "n": ..}`` (JSON)."""
        return asdict(self)


def spread(values: Sequence[float]) -> float:
    """Half the interquartile range of ``values`` (0 for fewer than two).

    Example:
        >>> spread([1.0, 2.0, 3.0, 4.0, 5.0])
        1.0
    """
    if len(values) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return (q3 - q1) / 2


def summarise(seconds: Sequence[float]) -> Timing:
    """The :class:`Timing` of repeated durations given in seconds."""
    ms = [1000.0 * s for s in seconds]
    return Timing(statistics.median(ms), spread(ms), len(ms))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(call: Callable[[], Any], repeats: int = 9, warmup: int = 2, budget_s: float = 1.0,
              device: torch.device | str = "cpu") -> Timing:
    """Time ``call()``: ``warmup`` untimed calls, then up to ``repeats`` timed ones (at least 3, stopping
    once ``budget_s`` is spent), synchronising a CUDA device around each."""
    device = torch.device(device)
    for _ in range(warmup):
        call()
    times: list[float] = []
    end = time.perf_counter() + budget_s
    while len(times) < repeats and (len(times) < 3 or time.perf_counter() < end):
        _sync(device)
        t0 = time.perf_counter()
        call()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return summarise(times)


def interleaved(models: Sequence[nn.Module], inputs: tuple[Any, ...], rounds: int = 15, warmup: int = 2,
                budget_s: float = 3.0) -> list[list[float]]:
    """Seconds of ``model(*inputs)`` for each model, one call of each per round (eval mode, no gradients).

    Returns:
        One list of durations per model, of equal length (at least 3 rounds, more until ``rounds`` or
        ``budget_s`` is spent).
    """
    device = next((p.device for m in models for p in m.parameters()), torch.device("cpu"))
    out: list[list[float]] = [[] for _ in models]
    with torch.inference_mode(), evaluating(*models):
        for m in models:
            for _ in range(warmup):
                call_model(m, inputs)
        end = time.perf_counter() + budget_s
        while len(out[0]) < rounds and (len(out[0]) < 3 or time.perf_counter() < end):
            for m, times in zip(models, out):
                _sync(device)
                t0 = time.perf_counter()
                call_model(m, inputs)
                _sync(device)
                times.append(time.perf_counter() - t0)
    return out


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device | str, dtype: torch.dtype, batch_size: int) -> dict[str, Any]:
    """What a latency table depends on: processor, device, dtype, batch size, threads, torch version."""
    device = torch.device(device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    return {"processor": where, "cores": os.cpu_count(), "system": platform.system(), "device": str(device),
            "dtype": str(dtype).removeprefix("torch."), "batch_size": int(batch_size),
            "threads": torch.get_num_threads(), "torch": torch.__version__.split("+")[0]}


def machine_key(spec: dict[str, Any]) -> str:
    """A short hash of :func:`machine`'s mapping, as the recipe runner keys its saved states."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]
