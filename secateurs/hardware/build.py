"""From a model to a latency :class:`~.plan.Problem`: its spaces of coupled channels, timed layers and shapes.

The channel graph (:func:`secateurs.graph.analyse`) says which rows and columns of which layers each coupled
channel is; the criterion scores them as :func:`secateurs.prune` would (:func:`secateurs.coupled.row_scores`);
one forward pass at the measured batch size records every layer's input and output shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .. import criteria
from .. import granularity as gran
from ..coupled import row_scores, units_and_spaces
from ..errors import PruningError
from ..graph import ChannelGraph
from ..inputs import as_inputs, call_model, evaluating
from ..layers import resolve_layers
from ..modules.attention import ATTENTION
from ..pruning import prepare_criterion
from .plan import Layer, Problem, Space, levels
from .table import spec_of

__all__ = ["batched", "build_problem", "shapes", "targets_of"]


def batched(inputs: tuple[Any, ...], batch_size: int) -> tuple[Any, ...]:
    """``inputs`` with every tensor repeated (or cut) along its first dimension to ``batch_size`` rows."""
    def one(x: Any) -> Any:
        if not isinstance(x, Tensor) or x.dim() == 0:
            return x
        reps = -(-batch_size // x.shape[0])
        return x.repeat(reps, *([1] * (x.dim() - 1)))[:batch_size]

    return tuple({k: one(v) for k, v in x.items()} if isinstance(x, dict) else one(x) for x in inputs)


def shapes(model: nn.Module, inputs: tuple[Any, ...]) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """``{module name: (input shape, output shape)}`` of every Conv/Linear in one forward pass."""
    out: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            def hook(_m: nn.Module, args: tuple[Any, ...], result: Any, name: str = name) -> None:
                if isinstance(args[0], Tensor) and isinstance(result, Tensor):
                    out[name] = (tuple(args[0].shape), tuple(result.shape))
            handles.append(m.register_forward_hook(hook))
    try:
        with torch.inference_mode(), evaluating(model):
            call_model(model, inputs)
    finally:
        for h in handles:
            h.remove()
    return out


def targets_of(model: nn.Module, layers: Mapping[str, float | None] | None) -> dict[str, nn.Module]:
    """``{module name: module}`` of the layers latency pruning may narrow (``layers`` may only exclude).

    Raises:
        PruningError: ``layers`` gives a sparsity (the latency target chooses them).
    """
    for pattern, value in (layers or {}).items():
        if value is not None:
            raise PruningError(f"layers[{pattern!r}]={value!r}: with latency= the widths are chosen by the "
                               "target; layers= may only exclude (None)")
    return {t.module_name: t.module for t in resolve_layers(model, layers, 0.0) if t.tensor == "weight"}


def _scored_spaces(g: ChannelGraph, mods: dict[str, nn.Module], crit: criteria.Criterion,
                   group: gran.Granularity, round_to: int, min_density: float) -> list[Space]:
    """The spaces every member of which is a plain Conv/Linear target in no other space."""
    units, spaces = units_and_spaces(g, mods)
    owners: dict[str, int] = {}
    for members in spaces:
        for n in members:
            owners[n] = owners.get(n, 0) + 1
    rows = row_scores(mods, crit, group)
    out = []
    for members, roots in spaces.items():
        if any(owners[n] > 1 or isinstance(mods[n], ATTENTION) for n in members):
            continue  # a layer split over several spaces, or attention heads: left at full width
        scores = torch.stack([torch.stack([rows[n][i] for n, i in units[r]]).mean() for r in roots])
        least = int(-(-min_density * len(roots) // 1))
        out.append(Space(tuple(sorted(members)), list(roots), scores.float(), levels(len(roots), round_to, least)))
    return out


def _counts(g: ChannelGraph, table: dict[str, list[int]], name: str, where: dict[int, int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for a in table.get(name, []):
        s = where.get(g.atoms.find(a))
        if s is not None:
            out[s] = out.get(s, 0) + 1
    return out


def build_problem(model: nn.Module, g: ChannelGraph, mods: dict[str, nn.Module], crit: criteria.Criterion,
                  group: gran.Granularity, inputs: tuple[Any, ...], round_to: int, min_density: float) -> Problem:
    """The :class:`Problem` of ``model`` at the batch of ``inputs`` (residual left at 0: the caller measures)."""
    spaces = _scored_spaces(g, mods, crit, group, round_to, min_density)
    where = {r: s for s, space in enumerate(spaces) for r in space.roots}
    timed = []
    for name, (shape_in, shape_out) in shapes(model, inputs).items():
        spec = spec_of(model.get_submodule(name), shape_in)
        if spec is None:
            continue
        rows = _counts(g, g.rows, name, where)
        cols = {} if name in g.depthwise else _counts(g, g.cols, name, where)
        per_channel = float(torch.Size(shape_out).numel()) / max(1, spec.c_out)
        timed.append(Layer(name, spec, rows, cols, per_channel))
    if not spaces:
        raise PruningError("latency=: no channel can be removed (every layer's channels are coupled to the "
                           "model's inputs or outputs, to an op secateurs does not follow, or excluded)")
    return Problem(spaces, timed)


def prepared(model: nn.Module, mods: dict[str, nn.Module], criterion: str | criteria.Criterion,
             data: Iterable[Any] | None, loss_fn: Callable[..., Tensor] | None, example_inputs: Any,
             seed: int, group: gran.Granularity) -> criteria.Criterion:
    """The criterion ready to score ``mods``, as :func:`secateurs.prune` prepares it."""
    targets = [t for t in resolve_layers(model, None, 0.0) if t.module_name in mods and t.tensor == "weight"]
    ctx = criteria.Context(model, data=data, loss_fn=loss_fn, sparsity=0.0, scope="local",
                           granularity=group, example_inputs=as_inputs(example_inputs))
    return prepare_criterion(model, criterion, targets, ctx, seed)
