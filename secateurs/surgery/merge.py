"""Data-free pruning by merging redundant neurons (Srinivas & Babu, BMVC 2015).

For a layer ``z = h(W x + b)`` read by ``y = A z``, two neurons whose incoming
weights are nearly equal compute nearly the same thing. Removing neuron ``j``
and adding its outgoing weights to neuron ``i``'s (``a_i ← a_i + a_j``) changes
the output by about ``a_j · (h(W_j x) − h(W_i x))``, so the saliency of the pair is

    s_ij = ⟨a_j²⟩ · ‖ε_ij‖²,   ε_ij = W_i − W_j  (the bias counted as a weight)

with ``⟨a_j²⟩`` the mean of the squared outgoing weights of ``j``. We repeatedly
take the pair with the smallest saliency. No data is needed, and the network
keeps its structure (a smaller layer of the same kind), so it can be
fine-tuned afterwards.

Speed: all ``‖W_i − W_j‖²`` come from one Gram matrix (``‖W_i‖² + ‖W_j‖² −
2 W_i·W_j``) and never change (incoming weights are not modified). Since
``s_ij = ⟨a_j²⟩ · D_ij``, the best partner of ``j`` is its nearest alive row,
whatever ``a``: we keep it per neuron and recompute it only for the neurons
whose partner was just removed, so a removal costs O(n) instead of O(n²).

``scaled=True`` (beyond the paper): for positively homogeneous activations
(ReLU, LeakyReLU), ``h(α u) = α h(u)`` for α > 0, so if ``W_j ≈ α W_i`` the
merge ``a_i ← a_i + α a_j`` is exact; α is the least-squares ratio
``W_i·W_j / ‖W_i‖²`` (pairs with α ≤ 0 fall back to α = 1) and
``‖ε_ij‖² = ‖W_j − α W_i‖²``.

``amount="auto"`` computes the whole greedy sequence and stops at the knee of
the log-saliency curve (Kneedle: both axes scaled to [0, 1], the point farthest
below the chord from the first to the last merge), where saliency starts to rise
sharply (see :func:`knee`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .. import masking
from ..allocation import one_thread
from ..errors import PruningError
from ..graph import ChannelGraph, analyse
from ..layers import assign
from ..progress import track
from . import batchnorm
from .records import apply, record
from .tracing import trace_inputs

HOMOGENEOUS = {"ReLU", "relu", "relu_", "LeakyReLU", "leaky_relu", "Dropout", "dropout", "Identity", "flatten",
               "MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d", "AdaptiveAvgPool2d", "max_pool2d", "avg_pool2d"}


@dataclass
class LayerMerge:
    """What happened to one layer.

    Attributes:
        layer: the layer whose neurons were merged (its rows).
        reader: the layer that reads them (its columns absorbed the removed neurons).
        before, after: neurons before and after.
        merges: ``(kept, removed, alpha, saliency)`` in the order they were done,
            indices into the original layer.
    """

    layer: str
    reader: str
    before: int
    after: int
    merges: list[tuple[int, int, float, float]] = field(default_factory=list)


@dataclass
class MergeResult:
    """The merged (smaller) model and a record per layer."""

    model: nn.Module
    layers: list[LayerMerge]

    def __str__(self) -> str:
        rows = [f"{r.layer:<24} {r.before:>6} -> {r.after:<6} into {r.reader}" for r in self.layers]
        return "\n".join(["layer                    neurons", *rows])


def pairs(g: ChannelGraph, model: nn.Module, folded: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """``(layer, reader)`` pairs whose neurons can be merged: each neuron is read by one layer only,
    through elementwise ops, with no norm (but the BatchNorms ``folded`` into their layer), residual
    tie or output in between."""
    readers: dict[int, set[str]] = {}
    for name, atoms in g.cols.items():
        for a in atoms:
            readers.setdefault(g.atoms.find(a), set()).add(name)
    normed = {g.atoms.find(a) for name, atoms in g.norms.items() if name not in folded for a in atoms}
    units = g.units()
    out = []
    for name, atoms in g.rows.items():
        module = model.get_submodule(name)
        if name in g.depthwise or name in g.attention or not isinstance(module, (nn.Linear, nn.Conv2d)):
            continue
        roots = [g.atoms.find(a) for a in atoms]
        if any(g.atoms.is_frozen(a) for a in atoms) or any(r in normed for r in roots):
            continue
        if any(len(units.get(r, [])) != 1 for r in roots):
            continue
        reader = {frozenset(readers.get(r, set())) for r in roots}
        if len(reader) == 1 and len(next(iter(reader))) == 1:
            out.append((name, next(iter(next(iter(reader))))))
    return out


def _incoming(module: nn.Module, norm: nn.Module | None = None) -> Tensor:
    """Each neuron's incoming weights with its bias as one more weight: (n, fan_in + 1); the bias
    includes the shift of a BatchNorm folded into the layer (``norm``)."""
    w = module.weight.detach().reshape(module.weight.shape[0], -1).double()
    b = module.bias.detach().double() if module.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
    if norm is not None:
        b = b + norm.bias.detach().double()
    return torch.cat([w, b[:, None]], dim=1)


def _columns(g: ChannelGraph, layer: str, reader: str) -> list[list[int]]:
    """For each neuron of ``layer``, the reader's input columns that read it."""
    where: dict[int, list[int]] = {}
    for j, a in enumerate(g.cols[reader]):
        where.setdefault(g.atoms.find(a), []).append(j)
    return [where[g.atoms.find(a)] for a in g.rows[layer]]


def greedy(w: Tensor, a2: Tensor, steps: int, scaled: bool = False,
           outgoing: Tensor | None = None) -> list[tuple[int, int, float, float]]:
    """The greedy merge sequence: ``steps`` merges ``(kept, removed, alpha, saliency)``.

    Args:
        w: incoming weights (bias included), one row per neuron (float64).
        a2: mean squared outgoing weight of each neuron.
        steps: how many merges.
        scaled: allow ``a_i ← a_i + α a_j`` with the least-squares α > 0.
        outgoing: outgoing weights, one row per neuron (updated to track ``a2``); when
            ``None``, ``a2`` is not updated after a merge (for tests of the formula).
    """
    n = w.shape[0]
    gram = w @ w.T
    sq = torch.diagonal(gram).clone()
    if scaled:  # merge j into i with α = W_i·W_j / ‖W_i‖²: residual ‖W_j‖² − (W_i·W_j)²/‖W_i‖²
        alpha = torch.where(gram > 0, gram / sq.clamp_min(1e-300)[:, None], torch.ones_like(gram))
        dist = sq[None, :] - 2 * alpha * gram + alpha.pow(2) * sq[:, None]
    else:
        alpha = None
        dist = sq[:, None] + sq[None, :] - 2 * gram
    dist = dist.clamp_min_(0.0)
    dist.fill_diagonal_(math.inf)
    alive = torch.ones(n, dtype=torch.bool, device=dist.device)
    best, partner = dist.min(dim=0)  # for each source column j: nearest target row i
    out_w = None if outgoing is None else outgoing.clone()
    a2 = a2.clone()
    merges: list[tuple[int, int, float, float]] = []
    with one_thread():  # thousands of vector-sized ops: no thread barrier to wait at on a busy machine
        _greedy_steps(min(steps, n - 1), dist, alpha, alive, best, partner, out_w, a2, merges)
    return merges


def _greedy_steps(steps: int, dist: Tensor, alpha: Tensor | None, alive: Tensor, best: Tensor, partner: Tensor,
                  out_w: Tensor | None, a2: Tensor, merges: list[tuple[int, int, float, float]]) -> None:
    """The merge loop of :func:`greedy`, appending to ``merges`` (the tensors are updated in place)."""
    for _ in range(steps):
        sal = torch.where(alive, a2 * best, torch.full_like(best, math.inf))
        j = int(sal.argmin())
        i = int(partner[j])
        k = 1.0 if alpha is None else float(alpha[i, j])
        merges.append((i, j, k, float(sal[j])))
        alive[j] = False
        dist[j, :] = math.inf  # j is no longer a target
        best[j] = math.inf
        if out_w is not None:
            out_w[i] += k * out_w[j]
            a2[i] = out_w[i].pow(2).mean()
        stale = (partner == j) & alive
        if bool(stale.any()):
            cols = stale.nonzero().squeeze(1)
            best[cols], partner[cols] = dist[:, cols].min(dim=0)


def knee(saliency: Sequence[float]) -> int:
    """Merges up to and including the knee of the saliency curve.

    Kneedle on the running maximum of ``log10`` saliency (greedy saliencies need not rise
    monotonically, and they span orders of magnitude: on a linear scale the last few merges
    dwarf the rest and the knee lands at the very end), both axes scaled to [0, 1]: the point
    farthest below the chord from the first merge to the last. Zero saliencies are floored
    at the smallest positive one.

    Example:
        >>> knee([1e-6, 1e-6, 1e-6, 1e-5, 1e-1, 1.0, 10.0])
        4
    """
    n = len(saliency)
    if n < 3:
        return n
    s = torch.tensor(saliency, dtype=torch.float64)
    positive = s[s > 0]
    if positive.numel() == 0:
        return n  # every merge is free
    y = torch.cummax(torch.log10(s.clamp_min(float(positive.min()))), dim=0).values
    if float(y[-1] - y[0]) <= 0:
        return n
    y = (y - y[0]) / (y[-1] - y[0])
    x = torch.linspace(0, 1, n, dtype=torch.float64)
    return int((x - y).argmax()) + 1


def merge_neurons(
    model: nn.Module,
    amount: float | str = 0.5,
    *,
    layers: Mapping[str, float | str | None] | None = None,
    scaled: bool = False,
    example_inputs: Any = None,
) -> MergeResult:
    """Merge redundant neurons with no data (Srinivas & Babu, 2015): a smaller model.

    Args:
        model: the trained network (unchanged; masks, if any, are baked into the copy).
        amount: fraction of each mergeable layer's neurons to remove, in [0, 1), or
            ``"auto"`` to stop at the knee of each layer's saliency curve.
        layers: layer names or glob patterns -> amount for those layers, or ``None`` to
            leave them alone; the last matching pattern wins.
        scaled: also merge neurons whose weights are positive multiples of each other
            (only where the activation is ReLU-like).
        example_inputs: inputs to trace the model with; zoo models and ``nn.Sequential`` MLPs need
            none (zeros of the shape they read are traced instead). A BatchNorm after a merged
            layer is folded into it for the merge and put back after, so BN networks merge too.

    Returns:
        A :class:`MergeResult`: ``.model`` (a new, smaller model whose layers are of the same
        kind, recorded for :func:`secateurs.save`) and ``.layers`` (what was merged).

    Raises:
        PruningError: a bad ``amount`` or ``layers``, no mergeable layer pair, or ``scaled``
            where the activation is not positively homogeneous.

    Example:
        >>> import secateurs as sc, torch, torch.nn as nn
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> with torch.no_grad():
        ...     net[0].weight[1] = net[0].weight[0]; net[0].bias[1] = net[0].bias[0]
        >>> r = sc.merge_neurons(net, amount=0.25, example_inputs=torch.ones(1, 3))
        >>> r.model[0].out_features, torch.allclose(r.model(torch.ones(1, 3)), net(torch.ones(1, 3)))
        (3, True)
    """
    _check_amount(amount, "amount")
    inputs = _inputs(model, example_inputs)
    new = masking.finalize(copy.deepcopy(model))
    folded = batchnorm.fold(new, batchnorm.pairs(new, inputs))  # BN into its conv: rows + shifts
    norm_of = {f.producer: bn for bn, f in folded.items()}
    g = analyse(new, inputs)
    found = pairs(g, new, frozenset(folded))
    if not found:
        raise PruningError("no mergeable layer pair (Linear or conv -> elementwise activation -> Linear or conv)")
    chosen = _choose(found, layers, amount)
    _check_finite(new, {n for pair in chosen for n in pair})
    step: dict[str, dict[str, Any]] = {}
    records = []
    for name, reader in track(chosen, "merge", unit="layer"):  # in graph order; each pair sees the layers already merged before it
        rec = _merge_pair(new, g, name, reader, chosen[(name, reader)], scaled, norm_of.get(name))
        records.append(rec)
        removed = {j for _, j, _, _ in rec.merges}
        keep_rows = [i for i in range(rec.before) if i not in removed]
        cols = _columns(g, name, reader)
        change = {name: {"rows": keep_rows}, reader: {"cols": sorted(c for i in keep_rows for c in cols[i])}}
        if name in norm_of:
            change[norm_of[name]] = {"norm": keep_rows}
        apply(new, change)
        for module, entry in change.items():
            step.setdefault(module, {}).update(entry)
    record(new, step)
    batchnorm.unfold(new, folded, {bn: step.get(bn, {}).get("norm") for bn in folded})
    return MergeResult(new, records)


def _check_finite(model: nn.Module, names: set[str]) -> None:
    """Refuse NaN or infinite weights, as :func:`secateurs.prune` does (they would merge into every neuron)."""
    for name in sorted(names):
        for pname, p in model.get_submodule(name).named_parameters(recurse=False):
            if not bool(torch.isfinite(p).all()):
                raise PruningError(f"{name}.{pname} has NaN or infinite values; fix the weights before merging")


def _merge_pair(model: nn.Module, g: ChannelGraph, name: str, reader: str, amount: float | str,
                scaled: bool, norm: str | None = None) -> LayerMerge:
    layer, read = model.get_submodule(name), model.get_submodule(reader)
    if scaled and not g.via.get(reader, frozenset()) <= HOMOGENEOUS:
        ops = ", ".join(sorted(g.via.get(reader, frozenset()) - HOMOGENEOUS))
        raise PruningError(f"scaled=True needs a ReLU-like activation between {name} and {reader}, found {ops}")
    cols = _columns(g, name, reader)
    rw = read.weight.detach().double()
    outgoing = torch.stack([rw[:, c].reshape(-1) for c in cols])  # (n, out · block)
    w = _incoming(layer, model.get_submodule(norm) if norm else None)
    n = w.shape[0]
    steps = n - 1 if amount == "auto" else int(math.floor(float(amount) * n + 0.5))
    merges = greedy(w, outgoing.pow(2).mean(dim=1), steps, scaled, outgoing)
    if amount == "auto":
        merges = merges[: knee([s for *_, s in merges])]
    with torch.no_grad():  # a_i <- a_i + alpha a_j on the reader's columns
        acc = rw.clone()
        for i, j, alpha, _ in merges:
            acc[:, cols[i]] += alpha * acc[:, cols[j]]
        read.weight.copy_(acc.to(read.weight.dtype))
    return LayerMerge(name, reader, n, n - len(merges), merges)


def _check_amount(amount: object, what: str) -> object:
    if amount == "auto":
        return amount
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0 <= amount < 1:
        raise PruningError(f"{what} must be a fraction in [0, 1) or 'auto', got {amount!r}")
    return amount


def _inputs(model: nn.Module, example_inputs: Any) -> tuple[Any, ...]:
    return trace_inputs(model, example_inputs, "merge_neurons")


def _choose(found: list[tuple[str, str]], layers: Mapping[str, Any] | None,
            amount: float | str) -> dict[tuple[str, str], float | str]:
    """The amount of each mergeable ``(layer, reader)`` pair; ``layers`` patterns name the layer."""
    chosen = assign([p[0] for p in found], layers, amount, kind="mergeable layer", value="amount",
                    check=lambda pattern, v: _check_amount(v, f"layers[{pattern!r}]"))
    return {p: chosen[p[0]][0] for p in found if p[0] in chosen}
