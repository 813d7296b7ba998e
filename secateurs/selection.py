"""Which weights to keep: scores -> group scores -> allocation -> element keep-masks.

:func:`keep_masks` is the one path from a prepared criterion's scores to the masks of a
list of layers, for every granularity that works layer by layer (unstructured, blocks, N:M,
channels without a traced graph). Coupled channels, which span layers, go through
:mod:`secateurs.coupled` instead; both end in :mod:`secateurs.allocation`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from typing import Protocol

import torch
from torch import Tensor

from . import allocation, masking
from .granularity import Granularity, normalise
from .layers import Target


class Scorer(Protocol):
    """What selection needs of a criterion (see :class:`secateurs.criteria.Criterion`)."""

    nonnegative: bool
    elementwise: bool
    compare_rows: bool

    def score(self, name: str, weight: Tensor) -> Tensor: ...


def keep_masks(
    targets: list[Target],
    crit: Scorer,
    group: Granularity,
    scope: str,
    sparsity: float,
    min_density: float,
) -> tuple[list[Tensor], int]:
    """Element keep-masks for ``targets`` (scored by a prepared criterion) and the global shortfall.

    Entries already pruned stay pruned. Warns when ``min_density`` kept groups the target would remove.
    """
    # Granularities see every weight with its output units first (transformers' Conv1D is stored (in, out)).
    shapes = [tuple(_rows(t, t.original).shape) for t in targets]
    currents = [masking.get_mask(t.module, t.tensor) for t in targets]
    slots = []
    for t, shape, cur in zip(targets, shapes, currents):
        flat = None if cur is None else group.group_keep(_rows(t, cur)).reshape(-1).cpu()
        n = group.groups(torch.empty(shape, device="meta")).numel()
        own = t.sparsity if (scope == "local" or t.own) else None
        slots.append(allocation.Slot(n, own, allocation.min_keep(min_density, n), flat))
    keys_of = _key_source(targets, slots, crit, group, scope)
    keep, shortfall = _choose(slots, keys_of, crit, group, scope, sparsity, shapes, min_density)
    if shortfall:
        warnings.warn(f"min_density={min_density} kept {shortfall} {group.unit} the target would remove",
                      stacklevel=3)
    out = []
    for t, k, shape, cur in zip(targets, keep, shapes, currents):
        elem = _rows(t, group.expand(k, shape)).contiguous().to(t.original.device)
        out.append(elem if cur is None else elem.logical_and_(cur))  # pruned entries stay pruned
    return out, shortfall


def _rows(t: Target, tensor: Tensor) -> Tensor:
    return masking.as_rows(t.module, tensor, t.tensor)


def _key_source(
    targets: list[Target], slots: list[allocation.Slot], crit: Scorer, group: Granularity, scope: str,
) -> allocation.KeyFn:
    elementwise = crit.elementwise and group.elementwise
    normalised = scope == "global" and group.structured

    def keys_of(i: int) -> Iterator[Tensor]:
        t, current = targets[i], slots[i].current
        with torch.no_grad():
            if elementwise and not masking.transposed(t.module):  # chunk by chunk; pruned entries forced below
                flat = t.original.detach().reshape(-1)
                parts: Iterable[Tensor] = (
                    crit.score(t.param, flat[lo : lo + allocation.CHUNK])
                    for lo in range(0, flat.numel(), allocation.CHUNK)
                )
            else:  # the masked weight is computed on demand, one layer at a time
                full = group.groups(_rows(t, crit.score(t.param, t.weight.detach())))
                full = (normalise(full) if normalised else full).reshape(-1)
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
    slots: list[allocation.Slot], keys_of: allocation.KeyFn, crit: Scorer,
    group: Granularity, scope: str, sparsity: float, shapes: list[tuple[int, ...]], min_density: float,
) -> tuple[list[Tensor], int]:
    """Group keep-masks: fixed patterns, per-row, local or global selection."""
    if group.fixed_pattern:  # N:M: the pattern inside each group decides, not a count
        return [group.select(allocation.all_keys(keys_of, i), s) for i, s in enumerate(shapes)], 0
    if crit.compare_rows and scope == "local" and group.elementwise:
        return allocation.row_masks(slots, keys_of, sparsity, shapes, min_density), 0
    return allocation.split_masks(slots, keys_of, sparsity)
