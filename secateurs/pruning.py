"""``sc.prune`` and ``sc.score``: the pipeline criterion -> granularity -> allocation -> masks."""

from __future__ import annotations

import fnmatch
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from . import allocation, criteria, granularity as gran, masking
from .analysis.flops import as_inputs
from .analysis.summary import LayerStats, format_table
from .errors import PruningError, check_choice, check_sparsity

SCOPES = ("global", "local")


@dataclass(frozen=True)
class Target:
    """A prunable layer, the sparsity asked of it, and whether ``layers=`` set it (``own``)."""

    module_name: str
    module: nn.Module
    sparsity: float | None
    own: bool = False

    @property
    def param(self) -> str:
        return masking.param_name(self.module_name)


@dataclass
class PruneResult:
    """What :func:`prune` did: one row per pruned layer (counted from its mask) and the totals.

    Attributes:
        layers: per-layer statistics after pruning.
        sparsity: fraction of the pruned layers' weights now removed.
        shortfall: groups (weights, for unstructured pruning) that the target asked
            for and ``min_density`` kept.
    """

    layers: list[LayerStats]
    sparsity: float
    shortfall: int = 0

    def __str__(self) -> str:
        return format_table(self.layers) + f"\nsparsity {self.sparsity:.4f}"


def resolve_layers(
    model: nn.Module, layers: Mapping[str, float | None] | None, default: float
) -> list[Target]:
    """Pair each prunable layer with its target; ``None`` excludes it.

    Patterns are globs matched against the module name (``"fc3"``, ``"blocks.*"``)
    or the parameter name (``"fc3.weight"``); when several match, the last one wins.

    Raises:
        PruningError: no prunable layer, a pattern that matches nothing, or a bad value.
    """
    found = [(n, m) for n, m in masking.prunable_layers(model) if masking.original(m).numel() > 0]
    if not found:
        raise PruningError(
            f"model {type(model).__name__} has no prunable layers "
            "(Linear or Conv1d/2d/3d); nothing to prune"
        )
    if layers is not None and not isinstance(layers, Mapping):
        raise PruningError(f"layers must be a dict of name or pattern -> sparsity or None, got {layers!r}")
    chosen: dict[str, tuple[float | None, bool]] = {name: (default, False) for name, _ in found}
    for pattern, value in (layers or {}).items():
        if not isinstance(pattern, str):
            raise PruningError(f"layers keys must be names or glob patterns, got {pattern!r}")
        if value is not None:
            value = check_sparsity(value, f"layers[{pattern!r}]")
        hits = [n for n, _ in found if _matches(pattern, n)]
        if not hits:
            raise PruningError(
                f"layers pattern {pattern!r} matches no prunable layer; "
                f"prunable layers are: {', '.join(n for n, _ in found)}"
            )
        chosen.update(dict.fromkeys(hits, (value, True)))
    targets = [Target(n, m, *chosen[n]) for n, m in found if chosen[n][0] is not None]
    if not targets:
        raise PruningError(f"layers={dict(layers or {})!r} excludes every prunable layer; nothing to prune")
    _check_shared(targets)
    return targets


def _check_shared(targets: list[Target]) -> None:
    """Tied weights (one tensor in two layers) would get two masks that multiply."""
    owner: dict[int, str] = {}
    for t in targets:
        key = id(masking.original(t.module))
        if key in owner:
            raise PruningError(
                f"{t.param} shares its weight with {owner[key]}; prune only one of them: "
                f"layers={{{t.module_name!r}: None}}"
            )
        owner[key] = t.param


def _matches(pattern: str, module_name: str) -> bool:
    return fnmatch.fnmatchcase(module_name, pattern) or fnmatch.fnmatchcase(
        masking.param_name(module_name), pattern
    )


def _prepare(
    model: nn.Module,
    criterion: str | criteria.Criterion,
    targets: list[Target],
    ctx: criteria.Context,
    seed: int,
) -> criteria.Criterion:
    crit = criteria.get(criterion, seed=seed)
    if crit.needs_data and ctx.data is None:
        raise PruningError(f"criterion {crit.name!r} needs data=: an iterable of batches")
    if crit.needs_loss and ctx.loss_fn is None:
        raise PruningError(f"criterion {crit.name!r} needs loss_fn=(outputs, targets) -> loss")
    ctx.layers = {t.param: t.module for t in targets}
    crit.prepare(ctx)
    return crit


def prune(
    model: nn.Module,
    sparsity: float,
    *,
    criterion: str | criteria.Criterion = "magnitude",
    granularity: object = "unstructured",
    scope: str = "global",
    layers: Mapping[str, float | None] | None = None,
    min_density: float = 0.0,
    data: Iterable[Any] | None = None,
    loss_fn: Callable[..., Tensor] | None = None,
    example_inputs: tuple[Any, ...] | None = None,
    seed: int = 0,
    leaf_modules: tuple[str, ...] = (),
) -> PruneResult:
    """Prune ``model`` in place by attaching masks to its prunable weights.

    Pruning again compounds: entries already pruned stay pruned, and
    ``sparsity=0.95`` means 95% of each layer (local) or of the pool (global)
    is removed in the end.

    Args:
        model: the network; weights of Linear and Conv1d/2d/3d layers are prunable.
        sparsity: fraction of weights to remove, in [0, 1). For ``"N:M"`` it must be ``1 - N/M``.
        criterion: a registered name (see :func:`secateurs.criteria`) or a Criterion.
        granularity: what is removed together: ``"unstructured"``, ``"N:M"`` (e.g. ``"2:4"``),
            ``"block:RxC"`` or ``(R, C)``, ``"neuron"`` / ``"channel"`` / ``"filter"``.
        scope: ``"global"`` (one threshold over the layers) or ``"local"`` (each layer loses ``sparsity``).
        layers: names or glob patterns -> sparsity for those layers, or ``None`` to exclude them.
            Layers given a value are pruned to it alone; ``sparsity`` applies to the rest.
        min_density: fraction of each layer's groups that must survive (collapse guard);
            under global scope the shortfall is taken from the other layers.
        data: batches for criteria that need data.
        loss_fn: ``loss_fn(outputs, targets)`` for criteria that need gradients.
        example_inputs: example inputs. With a channel granularity they let secateurs trace the
            model and remove coupled channels together (residual adds, concat, depthwise convs),
            biases and BatchNorm entries included, so that :func:`secateurs.compact` can then remove
            them physically. SynFlow uses their shape.
        seed: seed for stochastic criteria.
        leaf_modules: module names torch.fx should not trace into (their channels are kept).

    Returns:
        A :class:`PruneResult` with the per-layer sparsities.

    Raises:
        PruningError: a bad argument, a layers pattern that matches nothing, a model with
            no prunable layers or with NaN weights. The model is unchanged then.

    Example:
        >>> import secateurs as sc, torch.nn as nn
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> round(sc.prune(net, sparsity=0.5).sparsity, 2)
        0.5
    """
    sparsity = check_sparsity(sparsity)
    check_choice(scope, "scope", SCOPES)
    group = gran.parse(granularity)
    if isinstance(min_density, bool) or not isinstance(min_density, (int, float)) or not 0 <= min_density <= 1:
        raise PruningError(f"min_density must be a number in [0, 1], got {min_density!r}")
    targets = resolve_layers(model, layers, sparsity)
    _check_targets(targets, group)
    ctx = criteria.Context(model, data=data, loss_fn=loss_fn, sparsity=sparsity, scope=scope,
                           granularity=group, example_inputs=example_inputs, min_density=float(min_density))
    crit = _prepare(model, criterion, targets, ctx, seed)
    if isinstance(group, gran.Channels) and example_inputs is not None:
        from .surgery.channels import coupled_masks

        inputs = as_inputs(example_inputs)
        table = {t.module_name: (t.module, t.sparsity, t.own) for t in targets}
        changes, shortfall = coupled_masks(model, table, crit, group, scope, sparsity, float(min_density),
                                           inputs, tuple(leaf_modules))
    else:
        keep, shortfall = allocate(targets, crit, group, scope, sparsity, float(min_density))
        changes = [(t.module, "weight", k) for t, k in zip(targets, keep)]
    for module, tensor_name, k in changes:  # nothing is changed before every mask is known
        masking.set_mask(module, k, tensor_name, copy=False)
    by_module = {id(m): k for m, tn, k in changes if tn == "weight"}
    for t in targets:
        crit.update(t.param, t.module, by_module[id(t.module)])
    rows = [
        LayerStats(t.param, masking.kind(t.module), tuple(k.shape), k.numel(), int(torch.count_nonzero(k)))
        for t, k in ((t, by_module[id(t.module)]) for t in targets)
    ]
    collapsed = [r.name for r in rows if r.nonzero == 0]
    if collapsed:
        warnings.warn(f"layers pruned to nothing (layer collapse): {', '.join(collapsed)}; "
                      "pass min_density= to keep some weights in every layer", stacklevel=2)
    total = sum(r.params for r in rows)
    return PruneResult(rows, 1 - sum(r.nonzero for r in rows) / total, shortfall)


def _check_targets(targets: list[Target], group: gran.Granularity) -> None:
    for t in targets:
        w = masking.original(t.module).detach()
        lo, hi = torch.aminmax(w)  # NaN and inf propagate
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise PruningError(f"{t.param} has NaN or infinite values; fix the weights before pruning")
        group.check(t.param, tuple(w.shape))
        if isinstance(group, gran.NM) and abs(float(t.sparsity or 0) - group.sparsity) > 1e-9:
            raise PruningError(
                f"granularity {group.name} prunes exactly {group.sparsity:g} of each layer; "
                f"got sparsity {t.sparsity!r} for {t.param}"
            )


def allocate(
    targets: list[Target],
    crit: criteria.Criterion,
    group: gran.Granularity,
    scope: str,
    sparsity: float,
    min_density: float,
) -> tuple[list[Tensor], int]:
    """Element keep-masks for ``targets`` (a prepared criterion) and the global shortfall."""
    shapes = [tuple(masking.original(t.module).shape) for t in targets]
    currents = [masking.get_mask(t.module) for t in targets]
    slots = []
    for t, shape, cur in zip(targets, shapes, currents):
        flat = None if cur is None else group.group_keep(cur).reshape(-1).cpu()
        n = group.groups(torch.empty(shape, device="meta")).numel()
        own = t.sparsity if (scope == "local" or t.own) else None
        slots.append(allocation.Slot(n, own, allocation.min_keep(min_density, n), flat))
    keys_of = _key_source(targets, slots, crit, group, scope)
    keep, shortfall = _choose(slots, keys_of, crit, group, scope, sparsity, shapes, min_density)
    if shortfall:
        unit = "weights" if type(group) is gran.Unstructured else f"{group.name} groups"
        warnings.warn(f"min_density={min_density} kept {shortfall} {unit} the target would remove", stacklevel=3)
    out = []
    for t, k, shape, cur in zip(targets, keep, shapes, currents):
        elem = group.expand(k, shape).to(masking.original(t.module).device)
        out.append(elem if cur is None else elem.logical_and_(cur))  # pruned entries stay pruned
    return out, shortfall


def _key_source(
    targets: list[Target], slots: list[allocation.Slot], crit: criteria.Criterion,
    group: gran.Granularity, scope: str,
) -> allocation.KeyFn:
    elementwise = crit.elementwise and type(group) is gran.Unstructured
    normalise = scope == "global" and group.structured

    def keys_of(i: int) -> Iterator[Tensor]:
        t, current = targets[i], slots[i].current
        with torch.no_grad():
            if elementwise:  # score chunk by chunk; entries already pruned are forced below anyway
                flat = masking.original(t.module).detach().reshape(-1)
                parts: Iterable[Tensor] = (
                    crit.score(t.param, flat[lo : lo + allocation.CHUNK])
                    for lo in range(0, flat.numel(), allocation.CHUNK)
                )
            else:  # the masked weight is computed on demand, one layer at a time
                full = group.groups(crit.score(t.param, t.module.weight.detach()))
                full = (gran.normalise(full) if normalise else full).reshape(-1)
                parts = full.split(allocation.CHUNK)
            lo = 0
            for part in parts:
                keys = allocation.to_keys(part.cpu(), crit.nonnegative, owned=True)
                if current is not None:
                    keys.masked_fill_(~current[lo : lo + keys.numel()], allocation.FORCED)
                lo += keys.numel()
                yield keys

    return keys_of


def _choose(
    slots: list[allocation.Slot], keys_of: allocation.KeyFn, crit: criteria.Criterion,
    group: gran.Granularity, scope: str, sparsity: float, shapes: list[tuple[int, ...]], min_density: float,
) -> tuple[list[Tensor], int]:
    """Group keep-masks: fixed patterns, per-row, local or global selection."""
    if group.fixed_pattern:  # N:M: the pattern inside each group decides, not a count
        return [group.select(allocation.all_keys(keys_of, i), s) for i, s in enumerate(shapes)], 0
    if crit.compare_rows and scope == "local" and type(group) is gran.Unstructured:
        return allocation.row_masks(slots, keys_of, sparsity, shapes, min_density), 0
    return allocation.split_masks(slots, keys_of, sparsity)


def score(
    model: nn.Module,
    criterion: str | criteria.Criterion = "magnitude",
    *,
    data: Iterable[Any] | None = None,
    loss_fn: Callable[..., Tensor] | None = None,
    layers: Mapping[str, float | None] | None = None,
    example_inputs: tuple[Any, ...] | None = None,
    seed: int = 0,
) -> dict[str, Tensor]:
    """Scores of every prunable weight, without pruning anything.

    Returns:
        ``{qualified_param_name: score tensor of the weight's shape}``; higher = more important.

    Example:
        >>> import secateurs as sc, torch.nn as nn
        >>> list(sc.score(nn.Sequential(nn.Linear(2, 3))))
        ['0.weight']
    """
    targets = resolve_layers(model, layers, 0.0)
    ctx = criteria.Context(model, data=data, loss_fn=loss_fn, example_inputs=example_inputs)
    crit = _prepare(model, criterion, targets, ctx, seed)
    with torch.no_grad():
        return {t.param: crit.score(t.param, t.module.weight.detach()) for t in targets}
