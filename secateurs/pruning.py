"""``sc.prune`` and ``sc.score``: the pipeline criterion -> granularity -> allocation -> masks.

This module only orchestrates: layers are chosen by :mod:`.layers`, scored by :mod:`.criteria`,
grouped by :mod:`.granularity` and kept by :mod:`.selection` (layer by layer) or :mod:`.coupled`
(channels coupled across layers, when the granularity removes whole units and the model can be traced).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from . import criteria, devices, masking
from . import granularity as gran
from .analysis.summary import LayerStats, format_table
from .coupled import coupled_masks, over_kept_channels
from .errors import PruningError, caller_stacklevel, check_choice, check_sparsity
from .graph.outputs import output_layers
from .inputs import as_inputs
from .layers import Target, resolve_layers
from .modules.attention import row_tensors
from .selection import keep_masks

SCOPES = ("global", "local")


@dataclass
class PruneResult:
    """What :func:`prune` did: one row per pruned layer (counted from its mask) and the totals.

    Attributes:
        layers: per-layer statistics after pruning.
        sparsity: fraction of the pruned layers' weights now removed.
        shortfall: groups (weights, for unstructured pruning) that the target asked
            for and ``min_density`` kept.
        asked: the ``sparsity`` asked for.
        notes: one line per layer that was pruned less than asked, or skipped, and why
            (channels coupled to the model's output or to an op secateurs does not follow,
            a layer that cannot take the granularity, channels ``round_to`` kept); empty when everything
            asked was done.
        sliced_norms: with ``hidden=True``, the norms over the residual stream that lost channels: they
            now normalise over the kept channels only, so the outputs differ from those of the removed
            weights alone (:func:`secateurs.compact` then gives exactly these outputs).
    """

    layers: list[LayerStats]
    sparsity: float
    shortfall: int = 0
    asked: float | None = None
    notes: list[str] = field(default_factory=list)
    sliced_norms: list[str] = field(default_factory=list)

    @property
    def reached(self) -> float:
        """The fraction of the pruned layers' weights removed (the same as :attr:`sparsity`)."""
        return self.sparsity

    def __str__(self) -> str:
        notes = "".join(f"\n  less than asked: {n}" for n in self.notes)
        norms_ = (f"\n  hidden=True: {len(self.sliced_norms)} norms normalise over the kept channels: "
                  + ", ".join(self.sliced_norms)) if self.sliced_norms else ""
        return format_table(self.layers) + f"\nsparsity {self.sparsity:.4f}" + notes + norms_


def prepare_criterion(
    model: nn.Module,
    criterion: str | criteria.Criterion,
    targets: list[Target],
    ctx: criteria.Context,
    seed: int,
) -> criteria.Criterion:
    """The criterion ready to score ``targets`` (data and loss checked, :meth:`~criteria.Criterion.prepare` run)."""
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
    params: Iterable[str] | str | None = None,
    strict: bool = False,
    round_to: int | None = None,
    hidden: bool = False,
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
        params: more parameters to prune, by qualified name or glob pattern (``["emb.weight", "*.bias"]``),
            as :mod:`torch.nn.utils.prune` allows any parameter. Tied parameters (one tensor in two
            modules, e.g. a language model's head and its token embedding) share one mask.
        strict: raise instead of warning when less than asked can be removed (channels that
            cannot go, layers that cannot take the granularity).
        round_to: with a channel granularity and ``example_inputs``, round the channels each coupled
            group keeps up to a multiple of this (as Torch-Pruning's ``round_to``; 8 or 16 suit SIMD
            widths), so fewer are removed than ``sparsity`` asks; :attr:`PruneResult.notes` and the
            warning name every group so changed (``strict`` does not refuse what was asked this way).
            ``secateurs.prune`` also takes ``round_to="auto"`` (a measured choice).
        hidden: with a channel granularity and ``example_inputs``, prune the residual stream (hidden width)
            of transformers and norm-coupled CNNs too: its writers (embeddings, patch embedding, attention
            output and MLP down projections, ConvNeXt's convs, layer scales), readers (q/k/v, MLP inputs,
            classifier columns) and the LayerNorms / RMSNorms over it are one coupled group. Those norms
            then normalise over the kept channels only, which changes the outputs (a warning names them;
            :attr:`PruneResult.sliced_norms` lists them); :func:`secateurs.compact` stays exact.

    Returns:
        A :class:`PruneResult` with the per-layer sparsities.

    Raises:
        PruningError: a bad argument, a layers pattern that matches nothing, a model with
            no prunable layers or with NaN weights, or (``strict=True``) less than asked can be
            removed. The model is unchanged then.

    Warns:
        UserWarning: once, naming the layers pruned less than asked (or skipped) and why, and
            the sparsity reached; :attr:`PruneResult.notes` says the same.

    Example:
        >>> import secateurs as sc, torch.nn as nn
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> round(sc.prune(net, sparsity=0.5).sparsity, 2)
        0.5
    """
    sparsity = check_sparsity(sparsity)
    check_choice(scope, "scope", SCOPES)
    masking.adopt_torch_pruning(model)  # masks from torch.nn.utils.prune become ours (and compound)
    group = gran.parse(granularity)
    if isinstance(min_density, bool) or not isinstance(min_density, (int, float)) or not 0 <= min_density <= 1:
        raise PruningError(f"min_density must be a number in [0, 1], got {min_density!r}")
    round_to = check_round_to(round_to, group, example_inputs)
    _check_hidden(hidden, group, example_inputs)
    targets = resolve_layers(model, layers, sparsity, params=params, tensors=True)
    targets, notes = _check_targets(targets, group)
    ctx = criteria.Context(model, data=data, loss_fn=loss_fn, sparsity=sparsity, scope=scope,
                           granularity=group, example_inputs=example_inputs, min_density=float(min_density))
    chosen = targets  # the layers whose masks change; the others stay as they are, in the result too
    if group.units and example_inputs is None:  # traced, the channel graph keeps the outputs (coupled_masks)
        chosen, kept = _keep_outputs(model, targets, group.name)
        notes += kept
    crit = prepare_criterion(model, criterion, targets, ctx, seed)
    if group.units and example_inputs is not None:  # whole units, traced: coupled channels go together
        inputs = devices.move(as_inputs(example_inputs), devices.of(model))  # on the model's device
        rowwise = [t for t in targets if t.tensor == row_tensors(t.module)[0]]  # the rest: layer by layer
        table = {t.module_name: (t.module, t.sparsity, t.own) for t in rowwise}
        changes, shortfall, kept, rounded, sliced = coupled_masks(
            model, table, crit, group, scope, sparsity, float(min_density), inputs, tuple(leaf_modules), round_to,
            hidden)
        notes += kept
        rest = [t for t in targets if t not in rowwise]
        if rest:
            keep, more = keep_masks(rest, crit, group, scope, sparsity, float(min_density))
            changes += [(t.module, t.tensor, k) for t, k in zip(rest, keep)]
            shortfall += more
    else:
        keep, shortfall = keep_masks(chosen, crit, group, scope, sparsity, float(min_density))
        changes, rounded, sliced = [(t.module, t.tensor, k) for t, k in zip(chosen, keep)], [], []
    if notes and strict:
        raise PruningError("strict=True and sc.prune cannot remove all that was asked: " + "; ".join(notes))
    notes += rounded
    for module, tensor_name, k in changes:  # nothing is changed before every mask is known
        masking.set_mask(module, k, tensor_name, copy=False)
    masking.tie(model)  # tied tensors read the mask of the one pruned
    sliced_said = over_kept_channels(model, sliced)  # the norms over the residual stream
    by_key = {(id(m), tn): k for m, tn, k in changes}
    final = {t.param: by_key.get((id(t.module), t.tensor), _current(t)) for t in targets}
    for t in targets:
        crit.update(t.param, t.module, final[t.param])
    rows = [
        LayerStats(t.param, masking.kind(t.module), tuple(k.shape), k.numel(), int(torch.count_nonzero(k)))
        for t, k in ((t, final[t.param]) for t in targets)
    ]
    collapsed = [r.name for r in rows if r.nonzero == 0]
    if collapsed:
        warnings.warn(f"layers pruned to nothing (layer collapse): {', '.join(collapsed)}; "
                      "pass min_density= to keep some weights in every layer", stacklevel=caller_stacklevel())
    total = sum(r.params for r in rows)
    result = PruneResult(rows, 1 - sum(r.nonzero for r in rows) / total, shortfall, sparsity, notes, sliced)
    if sliced_said:
        warnings.warn(sliced_said, stacklevel=caller_stacklevel())
    if notes:
        warnings.warn(f"sc.prune pruned some layers less than asked (sparsity {sparsity:.10g} asked, {result.sparsity:.4f} "
                      f"reached over the pruned layers' weights, the columns that read removed channels included; "
                      f"strict=True makes this an error): " + "; ".join(notes), stacklevel=caller_stacklevel())
    return result


def check(
    model: nn.Module,
    sparsity: float,
    *,
    granularity: object = "unstructured",
    layers: Mapping[str, float | None] | None = None,
    params: Iterable[str] | str | None = None,
) -> None:
    """Raise what :func:`prune` would raise about these arguments on ``model``, without scoring or pruning
    (recipes check every stage this way before the first training step).

    Raises:
        PruningError: a bad sparsity or granularity, a layers pattern that matches nothing, weights with NaN,
            a layer shape a block cannot tile, or a sparsity an ``"N:M"`` pattern cannot give.

    Example:
        >>> check(nn.Sequential(nn.Linear(8, 4)), 0.7, granularity="2:4")
        Traceback (most recent call last):
        ...
        secateurs.errors.PruningError: granularity 2:4 prunes exactly 0.5 of each layer; got sparsity 0.7 for 0.weight
    """
    sparsity = check_sparsity(sparsity)
    group = gran.parse(granularity)
    _check_targets(resolve_layers(model, layers, sparsity, params=params, tensors=True), group)


def check_round_to(round_to: object, group: gran.Granularity, example_inputs: object) -> int:
    """``round_to`` as a whole number >= 1 (1 when ``None``).

    Raises:
        PruningError: not a whole number >= 1, or given without a channel granularity and ``example_inputs``.
    """
    if round_to is None:
        return 1
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise PruningError(f"round_to must be a whole number >= 1 (e.g. 8), got {round_to!r}")
    if round_to > 1 and not (group.units and example_inputs is not None):
        raise PruningError(f"round_to={round_to} rounds channel counts: it needs granularity channel, neuron or "
                           f"filter and example_inputs=, got granularity {group.name!r}"
                           + ("" if example_inputs is not None else " without example_inputs"))
    return round_to


def _check_hidden(hidden: object, group: gran.Granularity, example_inputs: object) -> None:
    """``hidden`` must be a bool, and ``True`` only with a channel granularity and ``example_inputs``.

    Raises:
        PruningError: not a bool, or ``True`` without what it needs.
    """
    if not isinstance(hidden, bool):
        raise PruningError(f"hidden must be True or False, got {hidden!r}")
    if hidden and not (group.units and example_inputs is not None):
        raise PruningError(f"hidden=True prunes the residual stream's channels: it needs granularity channel, "
                           f"neuron or filter and example_inputs=, got granularity {group.name!r}"
                           + ("" if example_inputs is not None else " without example_inputs"))


def _current(t: Target) -> Tensor:
    """The mask a target has now (all kept when it has none)."""
    mask = masking.get_mask(t.module, t.tensor)
    return torch.ones_like(t.original, dtype=torch.bool) if mask is None else mask


def _keep_outputs(model: nn.Module, targets: list[Target], group: str) -> tuple[list[Target], list[str]]:
    """The targets without the model's output layers (whose rows are the model's outputs: a class logit
    removed cannot be trained back), unless ``layers=`` named them; a note for each one kept whole.

    The output layers are found on a symbolic trace; a model torch.fx cannot trace has its last prunable
    layer taken as its output layer, and the note says so.
    """
    every = [n for n, m in masking.prunable_layers(model) if m is not model]  # excluded ones stand between too
    found = output_layers(model, every)
    how = "its neurons are the model's outputs"
    if found is None:
        found = every[-1:]
        how = "taken as the model's output layer, the last prunable one (torch.fx cannot trace the model)"
    outputs = {t.module_name for t in targets if t.module_name in found and t.tensor == "weight" and not t.own}
    if outputs and len(outputs) == len(targets):
        raise PruningError(f"granularity {group}: the only layers to prune, {', '.join(sorted(outputs))}, "
                           "produce the model's outputs; name them in layers= to remove output neurons")
    notes = [f"kept {layer} whole: {how}; name it in layers= to prune it" for layer in sorted(outputs)]
    return [t for t in targets if t.module_name not in outputs or t.tensor != "weight"], notes


def _check_targets(targets: list[Target], group: gran.Granularity) -> tuple[list[Target], list[str]]:
    """The targets that can take ``group`` and a note for each one skipped (every one, not the first)."""
    fit, notes = [], []
    for t in targets:
        w = masking.as_rows(t.module, t.original.detach(), t.tensor)
        lo, hi = torch.aminmax(w)  # NaN and inf propagate
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise PruningError(f"{t.param} has NaN or infinite values; fix the weights before pruning")
        try:
            group.check(t.param, tuple(w.shape))
        except PruningError as exc:
            if group.sparsity is None:  # blocks: the layer's shape is an error, as documented
                raise
            notes.append(f"skipped {exc}")  # N:M: a layer whose inputs do not fit the pattern
            continue
        fit.append(t)
        if group.sparsity is not None and abs(float(t.sparsity or 0) - group.sparsity) > 1e-9:
            raise PruningError(
                f"granularity {group.name} prunes exactly {group.sparsity:g} of each layer; "
                f"got sparsity {t.sparsity!r} for {t.param}"
            )
    if not fit:
        raise PruningError(f"no layer can take granularity {group.name}: " + "; ".join(notes))
    return fit, notes


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
    crit = prepare_criterion(model, criterion, targets, ctx, seed)
    with torch.no_grad():
        return {t.param: crit.score(t.param, t.weight.detach()) for t in targets}
