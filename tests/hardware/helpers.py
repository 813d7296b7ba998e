"""A deterministic machine for latency tests: a layer's time is a staircase of 8 channels, a model's the sum."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from secateurs.hardware.build import shapes
from secateurs.hardware.table import LayerSpec, spec_of
from secateurs.hardware.timing import Timing


def fake_ms(spec: LayerSpec) -> float:
    """Milliseconds of ``spec``: proportional to the work, with channels counted in steps of 8 (SIMD lanes)."""
    steps = math.ceil(spec.c_out / 8) * (1 if spec.depthwise else math.ceil(spec.c_in / 8))
    return 1e-3 * steps * math.prod(spec.kernel or (1,)) * math.prod(spec.size or (1,)) * spec.batch


def fake_measure(spec: LayerSpec) -> Timing:
    return Timing(fake_ms(spec), 0.0, 3)


def fake_timer(models: Sequence[nn.Module], inputs: tuple[Any, ...]) -> list[list[float]]:
    """Each model's time: the sum of :func:`fake_ms` over its Conv/Linear layers, in seconds, three rounds."""
    out = []
    for model in models:
        found = shapes(model, inputs)
        total = sum(fake_ms(spec_of(model.get_submodule(n), s_in)) for n, (s_in, _) in found.items())
        out.append([total / 1000] * 3)
    return out


def cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU(),
        nn.Conv2d(24, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
    )
