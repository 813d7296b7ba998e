"""Prune to a measured latency: ``sc.prune(model, latency=0.5, granularity="channel", example_inputs=x)``.

How (the choice, and why): per-layer lookup tables rank the moves, whole-model measurements decide.

1. The latency model (:mod:`.plan`): every Conv/Linear is timed *in isolation* at the widths the allocation
   asks about (:class:`~.table.LatencyTable`, cached per machine), plus the rest of the dense model (norms,
   activations, pooling, additions) as a residual that shrinks with the activations. Timing layers alone is
   cheap (a few ms each) and tells which layer saves what, including the SIMD staircase; but the sum of
   isolated times misses what a whole network does (caches shared between layers, thread start-up per op),
   so on its own it would miss the target by a margin that depends on the machine.
2. The greedy path (:func:`.plan.descend`, NetAdapt / HALP): narrow the coupled group that loses the least
   importance per millisecond saved, step by step, from dense down past the target.
3. Closing the loop: a point of the path is compacted (:func:`secateurs.compact`) and timed whole, interleaved
   with the dense model; the measured / predicted ratio calibrates the prediction and the next point is
   chosen with it (at most ``tries`` measurements, a bisection along the path). The result is the least
   pruned point measured to reach the target within its spread, or, if none did, the most pruned one
   measured, stated as not reached (a warning and :attr:`LatencyResult.met`).
"""

from __future__ import annotations

import copy
import statistics
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from .. import criteria
from .. import granularity as gran
from ..errors import PruningError
from ..graph import analyse
from ..inputs import as_inputs
from ..pruning import PruneResult
from ..pruning import prune as prune_masks
from ..surgery.compact import compact
from .build import batched, build_problem, prepared, shapes, targets_of
from .plan import Problem, Step, descend
from .results import LatencyResult, Measured
from .rounding import choose_round_to, sweep
from .table import LatencyTable, LayerSpec, spec_of
from .timing import Timing, interleaved, spread, summarise

__all__ = ["LatencyResult", "Measured", "compare_latency", "measured_round_to", "prune_to_latency", "time_against"]

Timer = Callable[[Sequence[nn.Module], tuple[Any, ...]], list[list[float]]]
"""Times models interleaved: seconds per call per model (:func:`~.timing.interleaved`; tests inject one)."""


def _check(latency: object, group: gran.Granularity, example_inputs: object, tries: int) -> float:
    if isinstance(latency, bool) or not isinstance(latency, (int, float)) or not 0 < latency <= 1:
        raise PruningError(f"latency must be a fraction of the dense model's latency in (0, 1], got {latency!r}")
    if not group.units:
        raise PruningError(f"latency= removes whole channels: it needs granularity channel, neuron or filter, "
                           f"got {group.name!r}")
    if example_inputs is None:
        raise PruningError("latency= needs example_inputs=: the model is traced and timed on them")
    if isinstance(tries, bool) or not isinstance(tries, int) or tries < 1:
        raise PruningError(f"tries must be a whole number >= 1, got {tries!r}")
    return float(latency)


def _sparsities(problem: Problem, widths: Sequence[int], mods: Mapping[str, nn.Module]) -> dict[str, float | None]:
    """``layers=`` for :func:`secateurs.prune` (local scope) removing exactly the units ``widths`` leave out."""
    out: dict[str, float | None] = dict.fromkeys(mods)
    for space, w in zip(problem.spaces, widths):
        for name in space.members:
            out[name] = (space.width - w) / space.width
    return out


class _Session:
    """One latency-targeted pruning: the problem, the table, and the points measured so far."""

    def __init__(self, model: nn.Module, problem: Problem, table: LatencyTable, inputs: tuple[Any, ...],
                 options: dict[str, Any], timer: Timer, rounds: int) -> None:
        self.model, self.problem, self.table, self.inputs = model, problem, table, inputs
        self.options, self.timer, self.rounds = options, timer, rounds
        self.base = compact(model, options["example_inputs"], options["leaf_modules"])  # plain, no masks
        self.mods = {n: model.get_submodule(n) for n in options["mods"]}
        self.small: dict[int, nn.Module] = {}

    def dense(self) -> Timing:
        return summarise(self.timer([self.base], self.inputs)[0])

    def layers(self, widths: Sequence[int]) -> dict[str, float | None]:
        return _sparsities(self.problem, widths, self.mods)

    def masks(self, model: nn.Module, widths: Sequence[int]) -> PruneResult:
        o = self.options
        return prune_masks(model, 0.0, criterion=o["criterion"], granularity=o["granularity"], scope="local",
                           layers=self.layers(widths), min_density=0.0, data=o["data"], loss_fn=o["loss_fn"],
                           example_inputs=o["example_inputs"], seed=o["seed"], leaf_modules=o["leaf_modules"])

    def measure(self, i: int, step: Step, dense_pred: float) -> Measured:
        trial = copy.deepcopy(self.model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.masks(trial, step.widths)
        small = compact(trial, self.options["example_inputs"], self.options["leaf_modules"])
        self.small[i] = small
        return time_against(self.timer, self.base, small, self.inputs, i, step.predicted_ms / dense_pred)


def time_against(timer: Timer, dense: nn.Module, small: nn.Module, inputs: tuple[Any, ...], step: int = 0,
           predicted: float = float("nan")) -> Measured:
    """``small`` timed against ``dense``, interleaved: the ratio per round, its median and spread."""
    d, p = timer([dense, small], inputs)
    ratios = [a / b for a, b in zip(p, d)]
    return Measured(step, predicted, statistics.median(ratios), spread(ratios), summarise(p), summarise(d))


def compare_latency(dense: nn.Module, pruned: nn.Module, example_inputs: Any, batch_size: int = 1,
                    leaf_modules: Sequence[str] = (), timer: Timer | None = None) -> Measured:
    """The compacted ``pruned`` model's latency as a fraction of the compacted ``dense`` one's, timed interleaved
    at ``batch_size`` (a recipe stage reports it; ``predicted`` is NaN)."""
    inputs = as_inputs(example_inputs)
    small, base = (compact(m, inputs, leaf_modules) for m in (pruned, dense))
    return time_against(timer or interleaved, base, small, batched(inputs, batch_size))


def _walk(session: _Session, path: list[Step], latency: float, tries: int) -> tuple[list[Measured], int | None]:
    """Measure points of ``path`` (a bisection steered by the calibrated prediction); the best that met."""
    dense_pred = path[0].predicted_ms
    calib, lo, hi, done = 1.0, None, 0, []  # lo: least pruned point that met; hi: most pruned that did not
    for _ in range(tries):
        upper = len(path) if lo is None else lo
        fits = [i for i in range(hi + 1, upper) if path[i].predicted_ms * calib <= latency * dense_pred]
        i = fits[0] if fits else (upper - 1 if lo is None and upper - 1 > hi else None)
        if i is None or any(m.step == i for m in done):
            break
        m = session.measure(i, path[i], dense_pred)
        done.append(m)
        calib = m.ratio / m.predicted if m.predicted > 0 else 1.0
        if m.meets(latency):
            lo = i
        else:
            hi = i
    return done, lo


def _round_to(round_to: int | str | None, problem: Problem, table: LatencyTable) -> int:
    """``round_to`` as given, or measured (``"auto"`` / ``None``) on the layer that takes the longest dense."""
    if round_to not in (None, "auto"):
        if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
            raise PruningError(f"round_to must be a whole number >= 1 or 'auto', got {round_to!r}")
        return round_to
    return _slowest_round_to([layer.spec for layer in problem.layers if layer.rows], table)


def _slowest_round_to(specs: list[LayerSpec], table: LatencyTable) -> int:
    if not specs:
        return 1
    slowest = max(specs, key=lambda spec: table.get(spec).ms)
    return choose_round_to(sweep(slowest, table))


def measured_round_to(model: nn.Module, example_inputs: Any, *, batch_size: int = 1,
                      layers: Mapping[str, float | None] | None = None, table: LatencyTable | None = None) -> int:
    """The channel multiple this machine rewards (:mod:`.rounding`), measured on the model's slowest prunable
    Conv/Linear at ``batch_size`` (the table is cached as :func:`prune_to_latency`'s)."""
    mods = targets_of(model, {k: v for k, v in (layers or {}).items() if v is None})
    param = next(model.parameters())
    table = table or LatencyTable(param.device, param.dtype, batch_size)
    found = shapes(model, batched(as_inputs(example_inputs), batch_size))
    specs = [spec_of(mods[n], found[n][0]) for n in mods if n in found]
    r = _slowest_round_to([s for s in specs if s is not None], table)
    table.save()
    return r


def prune_to_latency(
    model: nn.Module,
    latency: float,
    *,
    example_inputs: tuple[Any, ...] | Tensor,
    batch_size: int = 1,
    criterion: str | criteria.Criterion = "magnitude",
    granularity: object = "channel",
    layers: Mapping[str, float | None] | None = None,
    min_density: float = 0.0,
    data: Iterable[Any] | None = None,
    loss_fn: Callable[..., Tensor] | None = None,
    seed: int = 0,
    leaf_modules: tuple[str, ...] = (),
    round_to: int | str | None = "auto",
    table: LatencyTable | None = None,
    tries: int = 4,
    timer: Timer | None = None,
) -> LatencyResult:
    """Prune ``model``'s channels (masks, in place) until its compacted form runs in ``latency`` of the dense time.

    See the module's docstring for how. ``sc.prune(model, latency=..., ...)`` calls this.

    Args:
        model: the network (Conv/Linear layers; coupled channels are found by tracing it).
        latency: the target, a fraction of the dense model's measured latency in (0, 1].
        example_inputs: inputs to trace and time with; tensors are repeated along the first dimension to
            ``batch_size`` rows for timing.
        batch_size: the batch the latency is measured at (part of the table's key).
        criterion, granularity, layers, min_density, data, loss_fn, seed, leaf_modules: as
            :func:`secateurs.prune`; ``layers`` may only exclude (``None``).
        round_to: widths are multiples of this; ``"auto"`` (or ``None``) measures it (:mod:`.rounding`).
        table: the latency table (default: the cached one of this machine, device, dtype, batch size and
            thread count).
        tries: whole-model measurements at most.
        timer: how whole models are timed (default :func:`~.timing.interleaved`).

    Returns:
        A :class:`LatencyResult`: the per-layer table, the predicted and measured latency with their spread,
        whether the target was met, and the compacted model measured.

    Raises:
        PruningError: a bad argument, or no channel that can be removed.

    Warns:
        UserWarning: the target was not reached (naming the latency reached), or channels were kept (notes).
    """
    group = gran.parse(granularity)
    latency = _check(latency, group, example_inputs, tries)
    inputs = as_inputs(example_inputs)
    mods = targets_of(model, layers)
    param = next(model.parameters())
    table = table or LatencyTable(param.device, param.dtype, batch_size)
    if table.machine["batch_size"] != batch_size:
        raise PruningError(f"batch_size={batch_size!r} but the latency table given was measured at batch size "
                           f"{table.machine['batch_size']}")
    timed = batched(inputs, batch_size)
    crit = prepared(model, mods, criterion, data, loss_fn, inputs, seed, group)
    g = analyse(model, inputs, leaf_modules)
    problem = build_problem(model, g, mods, crit, group, timed, 1, min_density)
    round_to = _round_to(round_to, problem, table)
    problem = build_problem(model, g, mods, crit, group, timed, round_to, min_density) if round_to > 1 else problem
    options = {"criterion": criterion, "granularity": granularity, "data": data, "loss_fn": loss_fn,
               "example_inputs": inputs, "seed": seed, "leaf_modules": tuple(leaf_modules), "mods": list(mods)}
    session = _Session(model, problem, table, timed, options, timer or interleaved, 15)
    dense = session.dense()
    problem.residual_ms = max(0.0, dense.ms - problem.predict(problem.dense(), table))
    path = descend(problem, table, 0.5 * latency * problem.predict(problem.dense(), table))
    tried, best = _walk(session, path, latency, tries)
    table.save()
    chosen = best if best is not None else max(m.step for m in tried)
    return _finish(session, path, tried, chosen, best is not None, latency, round_to)


def _finish(session: _Session, path: list[Step], tried: list[Measured], chosen: int, met: bool, latency: float,
            round_to: int) -> LatencyResult:
    """Prune the model itself to the chosen point and say what was predicted and measured."""
    widths = path[chosen].widths
    base = session.masks(session.model, widths)
    measured = next(m for m in tried if m.step == chosen)
    small = session.small[chosen]
    result = LatencyResult(base.layers, base.sparsity, base.shortfall, None, list(base.notes), latency=latency,
                           met=met, measured=measured, predicted_ms=path[chosen].predicted_ms,
                           predicted_spread_ms=session.problem.spread(widths, session.table), tries=tried,
                           widths={n: m.out_channels if hasattr(m, "out_channels") else m.out_features
                                   for n, m in small.named_modules() if isinstance(m, (nn.Conv2d, nn.Conv1d,
                                                                                       nn.Conv3d, nn.Linear))},
                           round_to=round_to, table=session.table.as_dict(), compacted=small)
    if not met:
        result.notes.append(f"latency {latency:g} of dense not reached: {measured.ratio:.3f} ± "
                            f"{measured.ratio_spread:.3f} measured at the narrowest point tried")
        warnings.warn(f"sc.prune(latency={latency:g}) did not reach its target: the compacted model measures "
                      f"{measured.ratio:.3f} ± {measured.ratio_spread:.3f} of the dense latency "
                      f"({measured.ms.ms:.3f} ms vs {measured.dense_ms.ms:.3f} ms); see LatencyResult.tries",
                      stacklevel=3)
    return result
