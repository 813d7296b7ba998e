"""``sc.accelerate``: turn a pruned model into a faster inference model, by measuring.

Sparsity saves time only where a kernel skips the zeros, and which kernel wins depends
on the layer's shape, its sparsity, the batch and the machine. So instead of guessing,
:func:`accelerate` times the candidates on the model's real inputs and keeps the fastest:

1. whole model: a finalized copy (``dense``) against :func:`secateurs.compact` (``compact``,
   when whole channels are zero and the model can be traced) — this is what pays off for
   channel-pruned CNNs;
2. then each Linear (and each 1×1 convolution, as a Linear over its channels) with zeros in its weight: ``dense`` against ``csr`` (CSR weight,
   ``torch.sparse``), ``compact`` (its all-zero rows/columns dropped), ``2:4``
   (``torch.sparse.to_sparse_semi_structured``, CUDA with fp16/bf16 weights only), and
   secateurs' own CPU kernels (:mod:`.fast`): ``bitmask`` (kept values + a bitmask, any
   sparsity), ``index16`` (kept values + their 16-bit columns: work in proportion to the kept
   weights, for high sparsity) and ``n:m`` (N:M-sparse weights, e.g. 2:4, half the values +
   2-bit indices); these three are not offered where the kernels could not be compiled (one
   warning says so).

A candidate is kept only when it is at least ``min_gain`` faster than dense and its
outputs match; otherwise the layer stays dense (masks baked in), so the result is never
meant to be slower than the finalized model.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .. import masking
from ..errors import PruningError
from ..inputs import as_inputs, call_model, check_same, run_example, same
from ..surgery.compact import compact
from .fast import bitmask_linear, index16_linear, nm_linear
from .kernels import CsrLinear, Pointwise, as_linear, compact_linear, is_pointwise, semi_structured_linear

PATHS = ("dense", "csr", "compact", "2:4", "bitmask", "index16", "n:m")
"""Every path :func:`accelerate` knows, in the order it tries them."""

Timer = Callable[[str, dict[str, Callable[[], object]]], dict[str, float]]
"""``timer(layer_name, {path: run})`` -> ``{path: seconds per run}``; ``layer_name`` is ``""`` for the whole model."""

_BUILDERS: dict[str, Callable[[nn.Linear], nn.Module | None]] = {
    "csr": CsrLinear,
    "compact": compact_linear,
    "2:4": semi_structured_linear,
    "bitmask": bitmask_linear,
    "index16": index16_linear,
    "n:m": nm_linear,
}


@dataclass(frozen=True)
class LayerChoice:
    """What :func:`accelerate` chose for one Linear or 1×1 convolution.

    Attributes:
        name: qualified module name.
        path: one of :data:`PATHS`.
        density: fraction of the weight's entries that are non-zero.
        input_shape: shape of the input it was timed on (from ``example_inputs``).
        times: seconds per call of every candidate that applied and gave the same outputs.
    """

    name: str
    path: str
    density: float
    input_shape: tuple[int, ...]
    times: dict[str, float]

    @property
    def speedup(self) -> float:
        """Dense time / chosen time (1.0 when dense was kept)."""
        return self.times["dense"] / self.times[self.path] if self.times.get(self.path) else 1.0


@dataclass
class AccelerateResult:
    """The inference model and what was chosen, layer by layer.

    Attributes:
        model: a new model in eval mode, for inference only (the input model is unchanged).
        structure: ``"compact"`` when the whole model was compacted first, else ``"dense"``.
        model_times: seconds per forward pass of the whole-model candidates (empty when
            compaction did not apply).
        layers: one :class:`LayerChoice` per Linear or 1×1 convolution that has zeros in its weight.
    """

    model: nn.Module
    structure: str = "dense"
    model_times: dict[str, float] = field(default_factory=dict)
    layers: list[LayerChoice] = field(default_factory=list)

    def table(self) -> str:
        """A plain-text table: the whole-model choice, then one row per layer (times in ms)."""
        lines = [f"whole model: {self.structure}" + "".join(
            f", {k} {v * 1e3:.3f} ms" for k, v in self.model_times.items())]
        lines.append(f"{'layer':<24} {'path':<8} {'density':>8} {'input':<16}"
                     + "".join(f" {p + ' ms':>11}" for p in PATHS) + f" {'speedup':>8}")
        for c in self.layers:
            times = "".join(f" {c.times[p] * 1e3:>11.3f}" if p in c.times else f" {'-':>11}" for p in PATHS)
            shape = "x".join(map(str, c.input_shape))
            lines.append(f"{c.name:<24} {c.path:<8} {c.density:>8.4f} {shape:<16}{times} {c.speedup:>7.2f}x")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def accelerate(model: nn.Module, example_inputs: Any, *, repeats: int = 10, min_gain: float = 0.1,
               candidates: Sequence[str] = PATHS, timer: Timer | None = None) -> AccelerateResult:
    """Measure dense, CSR, compacted, 2:4, bitmask and N:M execution of a pruned model and keep the fastest.

    Args:
        model: a model, masked (``sc.prune``) or finalized; it is not changed.
        example_inputs: a tuple of inputs (or one tensor) of the shape and batch size the
            model will serve; every candidate is timed on them (or on what each layer gets).
        repeats: timed runs per candidate (after 2 warm-up runs); the median counts.
        min_gain: a candidate replaces dense only if it takes at most ``(1 - min_gain)`` of
            dense's time, so noise does not pick a path that is no faster.
        candidates: the paths to try, a subset of :data:`PATHS` (dense is always measured).
        timer: replaces the clock (tests); see :data:`Timer`.

    Returns:
        An :class:`AccelerateResult`; ``result.model`` gives the same outputs as ``model``
        (≤ 1e-4 relative) and is meant for inference (eval mode, buffers, no gradients).

    Raises:
        PruningError: a bad argument (the message names it), or a model that fails on
            ``example_inputs``.
    """
    inputs = _check(model, example_inputs, repeats, min_gain, candidates, timer)
    time_all = timer or _clock(repeats, _is_cuda(model))
    with torch.no_grad():
        reference = run_example(model, inputs)
        fast, structure, model_times = _whole_model(model, inputs, candidates, time_all, min_gain)
        layers = [_choose(fast, name, x, candidates, time_all, min_gain)
                  for name, x in _layer_inputs(fast, inputs).items()]
        check_same(reference, run_example(fast, inputs), "accelerate")
    fast.requires_grad_(False)  # for inference: the layers kept dense must not build autograd graphs either
    return AccelerateResult(fast, structure, model_times, layers)


def _check(model: Any, example_inputs: Any, repeats: Any, min_gain: Any, candidates: Any,
           timer: Any) -> tuple[Any, ...]:
    if not isinstance(model, nn.Module):
        raise PruningError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    inputs = as_inputs(example_inputs)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise PruningError(f"repeats must be a positive integer, got {repeats!r}")
    if isinstance(min_gain, bool) or not isinstance(min_gain, (int, float)) or not 0 <= min_gain < 1:
        raise PruningError(f"min_gain must be a number in [0, 1), got {min_gain!r}")
    if isinstance(candidates, str) or not all(c in PATHS for c in candidates):
        raise PruningError(f"candidates must be a list of paths from {', '.join(PATHS)}; got {candidates!r}")
    if timer is not None and not callable(timer):
        raise PruningError(f"timer must be callable, got {type(timer).__name__}")
    return inputs


def _is_cuda(model: nn.Module) -> bool:
    return any(t.is_cuda for t in model.parameters())


def _clock(repeats: int, cuda: bool) -> Timer:
    """The default timer: 2 warm-up rounds, then ``repeats`` rounds, candidates interleaved in each round
    (so a change in machine load hits them alike), the median per candidate."""

    def sync() -> None:
        if cuda:  # kernels run asynchronously: wait for them, or we time the launch only
            torch.cuda.synchronize()

    def time_all(_: str, runs: dict[str, Callable[[], object]]) -> dict[str, float]:
        samples: dict[str, list[float]] = {path: [] for path in runs}
        for i in range(repeats + 2):
            for path, run in runs.items():
                sync()
                start = time.perf_counter()
                run()
                sync()
                if i >= 2:
                    samples[path].append(time.perf_counter() - start)
        return {path: statistics.median(ts) for path, ts in samples.items()}

    return time_all


def _whole_model(model: nn.Module, inputs: tuple[Any, ...], candidates: Sequence[str], time_all: Timer,
                 min_gain: float) -> tuple[nn.Module, str, dict[str, float]]:
    """A finalized copy, or the compacted model when that is measurably faster."""
    dense = masking.finalize(copy.deepcopy(model)).eval()
    if "compact" not in candidates or not _has_dead_rows(dense):
        return dense, "dense", {}
    try:
        small = compact(model, inputs).eval()
    except (PruningError, RuntimeError):  # not traceable by torch.fx, or nothing safe to remove
        return dense, "dense", {}
    times = time_all("", {"dense": lambda: call_model(dense, inputs), "compact": lambda: call_model(small, inputs)})
    if times["compact"] <= times["dense"] * (1 - min_gain):
        return small, "compact", times
    return dense, "dense", times


def _has_dead_rows(model: nn.Module) -> bool:
    """Whether some prunable layer has an output row (neuron, filter) that is entirely zero."""
    for _, layer in masking.prunable_layers(model):
        w = layer.weight.detach()
        if w.numel() and not w.reshape(w.shape[0], -1).any(dim=1).all():
            return True
    return False


def _layer_inputs(model: nn.Module, inputs: tuple[Any, ...]) -> dict[str, Tensor]:
    """``{name: its first input}`` for every Linear and 1×1 convolution with a zero in its weight, from one
    forward pass."""
    seen: dict[str, Tensor] = {}
    hooks = []
    for name, layer in model.named_modules():
        if (isinstance(layer, nn.Linear) or is_pointwise(layer)) and not bool(layer.weight.detach().all()):
            def keep(_: nn.Module, args: tuple[Any, ...], name: str = name) -> None:
                seen.setdefault(name, args[0].detach())
            hooks.append(layer.register_forward_pre_hook(keep))
    try:
        call_model(model, inputs)
    finally:
        for h in hooks:
            h.remove()
    return seen


def _choose(model: nn.Module, name: str, x: Tensor, candidates: Sequence[str], time_all: Timer,
            min_gain: float) -> LayerChoice:
    """Time the candidates for one Linear (or 1×1 convolution) on its input ``x``; put the winner in place."""
    layer = model.get_submodule(name)
    reference = layer(x)
    options: dict[str, nn.Module] = {"dense": layer}
    pointwise = is_pointwise(layer)
    linear = as_linear(layer) if pointwise else layer
    for path in candidates:
        built = _BUILDERS[path](linear) if path in _BUILDERS else None
        if built is not None and pointwise:
            built = Pointwise(built, layer.stride)
        if built is not None and _agrees(built, x, reference):
            options[path] = built
    times = time_all(name, {path: (lambda m=m: m(x)) for path, m in options.items()})
    best = min(times, key=lambda p: times[p])
    if best != "dense" and times[best] > times["dense"] * (1 - min_gain):
        best = "dense"
    if best != "dense":
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, options[best])
    density = float((layer.weight != 0).float().mean())
    return LayerChoice(name, best, density, tuple(x.shape), times)


def _agrees(candidate: nn.Module, x: Tensor, reference: Tensor) -> bool:
    """Whether ``candidate`` runs on ``x`` and gives ``reference``: a kernel that fails on this input
    (say, a 2:4 kernel missing for this GPU or shape) or disagrees is not a candidate."""
    try:
        return same(candidate(x), reference)
    except (RuntimeError, NotImplementedError):
        return False


__all__ = ["PATHS", "AccelerateResult", "LayerChoice", "Timer", "accelerate"]
