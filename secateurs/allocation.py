"""Scores -> masks: local and global scope, per-layer targets, collapse guard.

Everything here works on flat score tensors, one per layer, and chooses exactly
how many entries each layer loses:

- *local*: layer ``l`` loses ``round(p_l · n_l)`` entries, its lowest scores.
- *global*: the pool of layers loses ``round(p · Σ n_l)`` entries, the lowest
  scores of the whole pool, so layers end with different sparsities.

A sparsity below 1 never rounds up to every entry (:func:`count`): each layer (local) or the
pool (global) keeps at least one.

Ties are broken deterministically: among equal scores, earlier layers (in model
order) and lower flat indices are pruned first. Entries already pruned keep
being pruned (they sort below every score), so pruning again compounds.

The global threshold is found without concatenating the scores: a two-level
radix select over order-preserving 32-bit integer keys of the float32 scores
(65,536 buckets on the high 16 bits, then on the low 16 bits inside the one
bucket that holds the threshold). Keys come from a :data:`KeyFn` that yields
each layer's keys chunk by chunk and is called once per pass, so the extra
memory is the bool masks plus a few chunk-sized temporaries, whatever the
model's size.

The keys, and so the masks chosen here, live on the CPU (:mod:`secateurs.selection` moves them there and
the masks back to each weight's device): every tensor made here says ``device=_CPU``.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from torch import Tensor

_CPU = torch.device("cpu")
_BINS = 1 << 16
CHUNK = 1 << 18
"""Entries per chunk: layers are scored and keyed in flat chunks of this size."""
FORCED = torch.iinfo(torch.int32).min  # key of an entry that is already pruned


@dataclass(frozen=True)
class Slot:
    """One layer's allocation problem.

    Attributes:
        numel: number of groups (entries) in the layer.
        sparsity: the layer's own target, or ``None`` to join the global pool.
        min_keep: entries that must survive (collapse guard).
        current: flat bool keep-mask already on the layer, or ``None``.
    """

    numel: int
    sparsity: float | None
    min_keep: int = 0
    current: Tensor | None = None

    @cached_property
    def forced(self) -> int:
        """Entries already pruned (they stay pruned)."""
        return 0 if self.current is None else self.numel - int(torch.count_nonzero(self.current))

    @property
    def cap(self) -> int:
        """Most entries this layer may lose."""
        return max(self.numel - self.min_keep, self.forced)


def count(sparsity: float, numel: int) -> int:
    """Entries removed for ``sparsity`` of ``numel``: the product rounded half up, but never all of them
    for a sparsity below 1 (``0.9999999`` of 220 weights removes 219: rounding alone collapses nothing).

    Example:
        >>> count(0.5, 5), count(0.9999999, 220), count(1.0, 220)
        (3, 219, 220)
    """
    n = int(math.floor(sparsity * numel + 0.5))
    return min(n, numel - 1) if sparsity < 1 and numel > 0 else n


def min_keep(min_density: float, numel: int) -> int:
    """Entries a layer keeps at least under ``min_density`` (rounded up)."""
    return min(numel, int(math.ceil(min_density * numel - 1e-9)))


def to_keys(scores: Tensor, nonnegative: bool = False, owned: bool = False) -> Tensor:
    """Order-preserving int32 keys of float scores: ``a < b`` iff ``key(a) < key(b)``.

    Args:
        scores: any float tensor (flattened here).
        nonnegative: every score is ``>= 0``; the float bits are then already ordered.
        owned: the caller gives ``scores`` up, so the keys may reuse its memory.

    Example:
        >>> k = to_keys(torch.tensor([-2.0, -0.0, 0.0, 1.5]))
        >>> bool((k[1:] >= k[:-1]).all()), int(k[1] == k[2])
        (True, 1)
    """
    s = scores.reshape(-1).to(torch.float32)
    if not owned and s.data_ptr() == scores.data_ptr():
        s = s.clone()
    bits = s.view(torch.int32)
    if nonnegative:
        # maps -0.0 to 0.0 and keeps the minimum key free for pruned entries
        return bits.bitwise_and_(0x7FFFFFFF)
    s.add_(0.0)  # -0.0 + 0.0 == 0.0: equal scores get equal keys
    return bits.bitwise_xor_((bits >> 31).bitwise_and_(0x7FFFFFFF))


def _high(chunk: Tensor, buf: Tensor) -> Tensor:
    """High 16 bits of ``chunk`` as bucket numbers in [0, 65536), written into ``buf``."""
    out = buf[: chunk.numel()]
    torch.bitwise_right_shift(chunk, 16, out=out)
    return out.add_(32768)


def lowest(keys: Tensor, n: int) -> Tensor:
    """Bool mask of the ``n`` lowest keys, ties to the lowest indices."""
    out = torch.zeros_like(keys, dtype=torch.bool)
    if n <= 0:
        return out
    if n >= keys.numel():
        return out.fill_(True)
    t = keys.kthvalue(n).values
    torch.lt(keys, t, out=out)
    need = n - int(torch.count_nonzero(out))
    if need > 0:
        out[(keys == t).nonzero().squeeze(1)[:need]] = True
    return out


KeyFn = Callable[[int], Iterator[Tensor]]
"""``keys_of(i)`` yields layer ``i``'s flat int32 keys in consecutive chunks of at
most :data:`CHUNK` entries, entries already pruned at :data:`FORCED`."""


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch ops on one intra-op thread inside, restoring the count after.

    The streaming selection issues hundreds of chunk-sized ops (``CHUNK`` entries each); with several
    threads each op ends at a barrier, and on a busy machine every barrier waits for a descheduled
    thread: measured 22 s instead of 0.5 s for 4 × 2048² weights beside other jobs
    (``benchmarks/global_magnitude.py --busy``). One thread never waits and, these ops being
    memory-bound, loses little on an idle machine.
    """
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _on_one_thread(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with one_thread():
            return fn(*args, **kwargs)

    return wrapper


def all_keys(keys_of: KeyFn, i: int) -> Tensor:
    """Layer ``i``'s keys in one flat tensor."""
    return torch.cat(list(keys_of(i)))


@_on_one_thread
def row_masks(
    slots: Sequence[Slot], keys_of: KeyFn, default: float, shapes: Sequence[tuple[int, ...]],
    min_density: float = 0.0,
) -> list[Tensor]:
    """Keep-masks where each output row of each layer loses its own share (Wanda's comparison).

    Row ``r`` of a layer with ``c`` entries per row loses ``round(p · c)`` entries, its
    lowest keys (ties to the lower index), or more if more are already pruned; the
    collapse guard applies per row.
    """
    out = []
    for i, (slot, shape) in enumerate(zip(slots, shapes)):
        p = default if slot.sparsity is None else slot.sparsity
        keys = all_keys(keys_of, i).reshape(shape[0], -1)
        cols = keys.shape[1]
        order = torch.sort(keys, dim=1, stable=True).indices
        ranks = torch.empty_like(order).scatter_(1, order, torch.arange(cols, device=order.device).expand_as(order).contiguous())
        forced = (keys == FORCED).sum(dim=1, keepdim=True)
        cap = cols - min_keep(min_density, cols)
        drop = torch.clamp(forced, min=min(count(p, cols), cap))
        out.append((ranks >= drop).reshape(-1))
    return out


def local_masks(slots: Sequence[Slot], keys_of: KeyFn, default: float) -> list[Tensor]:
    """Keep-masks for layers each pruned to its own sparsity (``default`` when unset)."""
    out = []
    for i, slot in enumerate(slots):
        p = default if slot.sparsity is None else slot.sparsity
        n = min(max(count(p, slot.numel), slot.forced), slot.cap)
        out.append(lowest(all_keys(keys_of, i), n).logical_not_())
    return out


def global_masks(slots: Sequence[Slot], keys_of: KeyFn, sparsity: float) -> tuple[list[Tensor], int]:
    """Keep-masks for a pool of layers that together lose ``round(sparsity · Σ n)`` entries.

    Returns:
        The keep-masks and the number of entries that could not be removed
        because of ``min_keep`` (0 when the target was met).
    """
    total = sum(s.numel for s in slots)
    k = max(count(sparsity, total), sum(s.forced for s in slots))
    caps = [s.cap for s in slots]
    shortfall = max(0, k - sum(caps))
    k -= shortfall
    if k == 0:
        return [torch.ones(s.numel, dtype=torch.bool, device=_CPU) for s in slots], shortfall
    b = _coarse_bucket(slots, keys_of, caps, k)
    prune, below, cands = _split_at_bucket(slots, keys_of, b)
    _fill_bucket(keys_of, caps, k, prune, below, cands)
    return [p.logical_not_() for p in prune], shortfall


def _capped_total(cum: Tensor, cap: int, acc: Tensor) -> None:
    acc += cum.clamp_(max=cap)


def _coarse_bucket(slots: Sequence[Slot], keys_of: KeyFn, caps: list[int], k: int) -> int:
    """First high-16-bit bucket where the capped cumulative count reaches ``k``."""
    acc = torch.zeros(_BINS, dtype=torch.int64, device=_CPU)
    buf = torch.empty(CHUNK, dtype=torch.int32, device=_CPU)
    for i in range(len(slots)):
        hist = torch.zeros(_BINS, dtype=torch.int64, device=_CPU)
        for chunk in keys_of(i):
            hist += torch.bincount(_high(chunk, buf), minlength=_BINS)
        _capped_total(hist.cumsum_(0), caps[i], acc)
    return int(torch.searchsorted(acc, k))


def _split_at_bucket(
    slots: Sequence[Slot], keys_of: KeyFn, b: int
) -> tuple[list[Tensor], list[int], list[tuple[Tensor, Tensor]]]:
    """Prune everything below bucket ``b``; collect (index, low bits) of entries in it."""
    # The masks are allocated before any temporary so that the temporaries
    # reuse one region instead of fragmenting the heap around them.
    prune = [torch.empty(slot.numel, dtype=torch.bool, device=_CPU) for slot in slots]
    below, cands = [], []
    buf = torch.empty(CHUNK, dtype=torch.int32, device=_CPU)
    hit = torch.empty(CHUNK, dtype=torch.bool, device=_CPU)
    for i, mask in enumerate(prune):
        idx_parts, low_parts, lo = [], [], 0
        for chunk in keys_of(i):
            high = _high(chunk, buf)
            n = high.numel()
            torch.lt(high, b, out=mask[lo : lo + n])
            idx = torch.eq(high, b, out=hit[:n]).nonzero().squeeze(1)
            idx_parts.append(idx + lo)
            low_parts.append(chunk[idx] & 0xFFFF)
            lo += n
        below.append(int(torch.count_nonzero(mask)))
        cands.append((torch.cat(idx_parts), torch.cat(low_parts)))
    return prune, below, cands


def _fill_bucket(
    keys_of: KeyFn,
    caps: list[int],
    k: int,
    prune: list[Tensor],
    below: list[int],
    cands: list[tuple[Tensor, Tensor]],
) -> None:
    """Choose the remaining entries inside the threshold bucket, honouring the caps."""
    need = k - sum(min(b, c) for b, c in zip(below, caps))
    room = [max(0, c - b) for b, c in zip(below, caps)]
    acc = torch.zeros(_BINS, dtype=torch.int64, device=_CPU)
    hists = []
    for (_, low), r in zip(cands, room):
        h = torch.bincount(low, minlength=_BINS)
        hists.append(h)
        _capped_total(h.cumsum(0), r, acc)
    f = int(torch.searchsorted(acc, need)) if need > 0 else 0
    takes = [min(int(h[:f].sum()), r) for h, r in zip(hists, room)]
    ties = need - sum(takes)
    for i, ((idx, low), h, r) in enumerate(zip(cands, hists, room)):
        if below[i] > caps[i]:  # saturated below the bucket: keep only its lowest `cap`
            prune[i] = lowest(all_keys(keys_of, i), caps[i])
            continue
        extra = min(int(h[f]), r - takes[i], ties) if f < _BINS else 0
        takes[i] += extra
        ties -= extra
        if takes[i]:
            # stable sort on the low bits keeps index order among equal keys
            order = torch.sort(low, stable=True).indices[: takes[i]]
            prune[i][idx[order]] = True


@_on_one_thread
def split_masks(slots: Sequence[Slot], keys_of: KeyFn, sparsity: float) -> tuple[list[Tensor], int]:
    """Keep-masks for slots with their own sparsity (local) and the rest pooled (global)."""
    pooled = [i for i, s in enumerate(slots) if s.sparsity is None]
    own = [i for i, s in enumerate(slots) if s.sparsity is not None]
    keep: list[Tensor] = [torch.ones(0, dtype=torch.bool, device=_CPU)] * len(slots)
    for i, m in zip(own, local_masks([slots[i] for i in own], lambda j: keys_of(own[j]), sparsity)):
        keep[i] = m
    shortfall = 0
    if pooled:
        masks, shortfall = global_masks([slots[i] for i in pooled], lambda j: keys_of(pooled[j]), sparsity)
        for i, m in zip(pooled, masks):
            keep[i] = m
    return keep, shortfall


def erk(shapes: Mapping[str, tuple[int, ...]], density: float) -> dict[str, float]:
    """Erdős–Rényi-Kernel layer densities (Evci et al., 2020) with the given overall density.

    A layer's density is proportional to ``Σ dims / Π dims``; layers that would exceed 1
    are kept dense and the others rescaled.
    """
    total = {n: math.prod(s) for n, s in shapes.items()}
    raw = {n: sum(s) / math.prod(s) for n, s in shapes.items()}
    dense: set[str] = set()
    while True:
        budget = density * sum(total.values()) - sum(total[n] for n in dense)
        eps = budget / sum(raw[n] * total[n] for n in shapes if n not in dense)
        over = {n for n in shapes if n not in dense and eps * raw[n] > 1}
        if not over:
            return {n: 1.0 if n in dense else eps * raw[n] for n in shapes}
        dense |= over


def uniform(shapes: Mapping[str, tuple[int, ...]], density: float) -> dict[str, float]:
    """Every layer keeps the same fraction ``density``."""
    return dict.fromkeys(shapes, density)


DISTRIBUTIONS: dict[str, Callable[[Mapping[str, tuple[int, ...]], float], dict[str, float]]] = {
    "erk": erk, "uniform": uniform,
}
"""Per-layer densities from an overall density (RigL / SET ``distribution=``)."""
