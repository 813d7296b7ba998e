"""``sc.fold``: data-free compression by folding clusters of similar channels into one.

After the method of Wang, Šikić, Thiele & Saukh (ICLR 2025, "Forget the Data and Fine-Tuning! Just
Fold the Network to Compress"), in our own code:

1. **Fold BatchNorm into its layer** (:mod:`.batchnorm`), so a channel is one row of weights plus one
   shift.
2. **Cluster** the channels of each coupled group (:mod:`.kmeans`). A group is the set of
   channels (union–find units of :mod:`secateurs.graph`) produced by the same layers: channels tied by
   residual adds are one unit across every layer that writes them, so they fold together; the
   attention heads and FFN neurons of a BERT-style encoder, and the gate/up rows of a gated MLP, are
   units the same way. A unit's point is the concatenation of its rows (weights and shifts) in each
   producing layer, each layer's block scaled to the same mean norm; its **weight** is the squared norm
   of its outgoing weights (every column that reads it), so a channel the next layers barely read costs
   little wherever it goes. The default clustering is weighted Ward agglomeration (``cluster="ward"``:
   deterministic, it joins the two clusters whose join raises the weighted error least; with one light
   channel against a heavy one that is the pairwise saliency of neuron merging, Srinivas & Babu 2015);
   ``cluster="kmeans"`` runs weighted k-means++ and Lloyd steps instead (as the paper; measured worse on
   our BN networks, see BENCHMARKS.md).
3. **Merge** each cluster into its first member: the producing rows become the members' weighted mean
   (the weights above), the consuming columns (every layer that reads the channel) the **sum** of the
   members' columns. If the members were identical, the outputs do not change; with one cluster per
   channel folding is the identity.
4. **Repair the statistics** of a merged channel that had a BatchNorm, with no data ("approximate
   repair"). The mean is exact: member ``i`` has mean ``β_i`` after its BatchNorm, so the merged
   channel's mean is the weighted mean of the ``β_i``. Its variance depends on how correlated the
   members are, which only data could tell. Taking the correlation of two channels to be the cosine of
   their weight rows (exact for uncorrelated inputs of equal variance) gives the merged channel's
   deviation ``σ_c = ‖Σ p_i |γ_i| u_i‖`` (``u_i`` the unit row, ``p_i`` the weights) against the
   members' ``σ = Σ p_i |γ_i|``; the factor ``σ / σ_c`` lies between 1 (perfectly correlated members)
   and ``1 / ‖p‖`` (independent ones). Real inputs are correlated, so the cosine underestimates the
   correlation and the full factor overshoots (measured: it halves the VGG's accuracy at 30%); we scale
   the merged channel around its mean by the geometric midpoint ``√(σ / σ_c)`` of the two bounds, so
   averaging does not shrink the activations layer after layer (the "variance collapse" the paper
   describes) nor blow them up. Channels without a BatchNorm are merged with no repair: there are no
   statistics to keep.
5. **Compact** (:func:`.compact.plan`): the folded-away channels are zeroed, then removed as
   :func:`secateurs.compact` removes dead channels; the change is recorded, so :func:`secateurs.save`
   and :func:`secateurs.load` work, and the BatchNorms get their statistics back (:func:`.batchnorm.unfold`).

``amount="auto"`` clusters each group at removal fractions 0.1, 0.2, … 0.9 and stops at the knee of
the (weighted) clustering-error curve (:func:`.merge.knee`).
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .. import masking
from ..errors import PruningError
from ..graph import ChannelGraph, analyse
from ..progress import track
from .batchnorm import Folded, repair_stats, unfold
from .batchnorm import fold as fold_batchnorm
from .batchnorm import pairs as batchnorm_pairs
from .compact import plan
from .kmeans import kmeans, ward
from .merge import knee
from .records import apply, record
from .tracing import trace_inputs

GRID = tuple(round(0.1 * i, 1) for i in range(1, 10))
"""Removal fractions tried by ``amount="auto"``."""


@dataclass
class FoldGroup:
    """One coupled group of channels and what folding did to it.

    Attributes:
        layers: the layers that produce the group's channels.
        before, after: channels before and after.
        error: the k-means error over the spread of the channels (0: the folded channels were identical).
    """

    layers: tuple[str, ...]
    before: int
    after: int
    error: float


@dataclass
class FoldResult:
    """The folded (smaller) model, a record per group, and the layers left alone (and why)."""

    model: nn.Module
    groups: list[FoldGroup]
    skipped: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        rows = [f"{', '.join(g.layers)[:40]:<40} {g.before:>6} -> {g.after:<6} error {g.error:.3f}"
                for g in self.groups]
        return "\n".join(["group                                    channels", *rows])


def fold(model: nn.Module, amount: float | str = 0.5, example_inputs: Any = None, *, repair: bool = True,
         cluster: str = "ward", seed: int = 0) -> FoldResult:
    """Fold clusters of similar channels into one, with no data and no fine-tuning.

    Args:
        model: the trained network (unchanged; masks, if any, are baked into the copy).
        amount: fraction of each group's channels removed, in [0, 1), or ``"auto"`` (the knee of
            each group's clustering-error curve).
        example_inputs: inputs to trace the model with (only their shapes matter); zoo models,
            BERT-style encoders and ``nn.Sequential`` MLPs need none.
        repair: rescale merged channels that had a BatchNorm towards their members' variance.
        cluster: ``"ward"`` (weighted agglomerative clustering, deterministic; the default) or
            ``"kmeans"`` (weighted k-means++ and Lloyd steps, seeded).
        seed: seed of the k-means draws (``cluster="kmeans"`` only).

    Returns:
        A :class:`FoldResult`: ``.model`` (a new, smaller dense model, recorded for
        :func:`secateurs.save`), ``.groups`` and ``.skipped``.

    Raises:
        PruningError: a bad ``amount`` or ``cluster``, or no group of channels that can be folded.

    Example:
        >>> import secateurs as sc, torch, torch.nn as nn
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> with torch.no_grad():
        ...     net[0].weight[1] = net[0].weight[0]; net[0].bias[1] = net[0].bias[0]
        >>> r = sc.fold(net, amount=0.25)
        >>> r.model[0].out_features, torch.allclose(r.model(torch.ones(1, 3)), net(torch.ones(1, 3)))
        (3, True)
    """
    if amount != "auto" and (isinstance(amount, bool) or not isinstance(amount, (int, float))
                             or not 0 <= amount < 1):
        raise PruningError(f"amount must be a fraction in [0, 1) or 'auto', got {amount!r}")
    if cluster not in ("ward", "kmeans"):
        raise PruningError(f"cluster must be 'ward' or 'kmeans', got {cluster!r}")
    inputs = trace_inputs(model, example_inputs, "fold")
    new = masking.finalize(copy.deepcopy(model))
    folded = fold_batchnorm(new, batchnorm_pairs(new, inputs))
    g = analyse(new, inputs)
    spaces, skipped = groups_of(g, folded)
    if not spaces:
        raise PruningError("fold found no group of channels to fold (Linear or conv layers whose outputs "
                           "reach other layers through elementwise ops, residual adds or folded BatchNorms)")
    if skipped:
        warnings.warn(f"fold leaves {len(skipped)} layer(s) alone: " + "; ".join(
            f"{k} ({v})" for k, v in list(skipped.items())[:5]), stacklevel=2)
    norm_of = {f.producer: (bn, f) for bn, f in folded.items()}
    done = []
    with torch.no_grad():
        for units in track(spaces, "fold", unit="group"):
            done.append(_fold_group(new, g, units, norm_of, amount, repair, cluster, seed))
    step = plan(new, g)
    apply(new, step)
    record(new, step)
    unfold(new, folded, {bn: step.get(bn, {}).get("norm") for bn in folded})
    return FoldResult(new, done, skipped)


def groups_of(g: ChannelGraph, folded: dict[str, Folded]) -> tuple[list[dict[int, dict[str, list[int]]]],
                                                                     dict[str, str]]:
    """The foldable groups (``{root: {layer: rows}}``, two units or more) and the layers skipped."""
    blocked = {g.atoms.find(a) for name, atoms in g.norms.items() if name not in folded for a in atoms}
    packed = g.attention | {f"{n}.out_proj" for n in g.attention}
    spaces: dict[frozenset[str], dict[int, dict[str, list[int]]]] = {}
    skipped: dict[str, str] = {}
    for root, members in g.units().items():
        rows: dict[str, list[int]] = {}
        for name, i in members:
            rows.setdefault(name, []).append(i)
        layers = frozenset(rows)
        why = ("a BatchNorm that is not right after its layer" if root in blocked
               else "packed multi-head attention" if layers & packed else None)
        if why:
            skipped.update({n: why for n in layers})
            continue
        spaces.setdefault(layers, {})[root] = {n: sorted(r) for n, r in rows.items()}
    out = []
    for units in spaces.values():
        shapes = {tuple(len(r) for _, r in sorted(u.items())) for u in units.values()}
        if len(units) >= 2 and len(shapes) == 1:
            out.append(units)
        elif len(shapes) > 1:
            skipped.update({n: "units of different sizes" for n in next(iter(units.values()))})
    return out, skipped


def _points(model: nn.Module, units: dict[int, dict[str, list[int]]],
            norm_of: dict[str, tuple[str, Folded]]) -> Tensor:
    """One point per unit: its rows and shifts in each producing layer, each layer's block scaled."""
    blocks = []
    for name in sorted(next(iter(units.values()))):
        w = _row_matrix(model, name, norm_of)
        block = torch.stack([w[u[name]].reshape(-1) for u in units.values()])
        scale = block.norm(dim=1).mean()
        blocks.append(block / scale if scale > 0 else block)
    return torch.cat(blocks, dim=1)


def _row_matrix(model: nn.Module, name: str, norm_of: dict[str, tuple[str, Folded]]) -> Tensor:
    """A layer's rows with its bias and its folded BatchNorm's shift as two more columns (float64)."""
    layer = model.get_submodule(name)
    w = layer.weight.detach().reshape(layer.weight.shape[0], -1).double()
    zero = torch.zeros(w.shape[0], 1, dtype=w.dtype, device=w.device)
    bias = layer.bias.detach().double()[:, None] if getattr(layer, "bias", None) is not None else zero
    shift = model.get_submodule(norm_of[name][0]).bias.detach().double()[:, None] if name in norm_of else zero
    return torch.cat([w, bias, shift], dim=1)


def _clusters(x: Tensor, amount: float | str, cluster: str, seed: int, weights: Tensor) -> tuple[Tensor, float]:
    """Cluster labels for the points of one group, and the relative error (weighted error over total spread)."""
    n = x.shape[0]
    centre = (weights[:, None] * x).sum(0) / weights.sum() if float(weights.sum()) > 0 else x.mean(0)
    spread = float((weights * (x - centre).pow(2).sum(1)).sum())

    def run(k: int) -> tuple[Tensor, float]:
        return kmeans(x, k, seed, weights=weights) if cluster == "kmeans" else ward(x, k, weights)[:2]

    if amount == "auto":
        runs = [run(max(1, n - round(f * n))) for f in GRID]
        labels, err = runs[knee([e / spread if spread > 0 else 0.0 for _, e in runs]) - 1]
    else:
        labels, err = run(max(1, n - math.floor(float(amount) * n + 0.5)))
    return labels, err / spread if spread > 0 else 0.0


def _importance(model: nn.Module, cols: dict[str, dict[int, list[int]]], roots: list[int]) -> Tensor:
    """Each unit's squared outgoing weights, summed over every column that reads it (float64)."""
    device = next(model.parameters()).device
    out = torch.zeros(len(roots), dtype=torch.float64, device=device)
    where = {r: i for i, r in enumerate(roots)}
    for reader, by_root in cols.items():
        w = model.get_submodule(reader).weight.detach().double()
        sq = w.transpose(0, 1).reshape(w.shape[1], -1).pow(2).sum(1)
        for r, js in by_root.items():
            out[where[r]] += sq[js].sum()
    return out


def _fold_group(model: nn.Module, g: ChannelGraph, units: dict[int, dict[str, list[int]]],
                norm_of: dict[str, tuple[str, Folded]], amount: float | str, repair: bool, cluster: str,
                seed: int) -> FoldGroup:
    roots = list(units)
    cols = _columns(g, set(roots))
    weight = _importance(model, cols, roots)
    labels, error = _clusters(_points(model, units, norm_of), amount, cluster, seed, weight)
    for c in labels.unique().tolist():
        idx = sorted((labels == c).nonzero().squeeze(1).tolist(), key=lambda i: min(map(min, units[roots[i]].values())))
        if len(idx) < 2:
            continue
        mass = weight[idx]
        share = mass / mass.sum() if float(mass.sum()) > 0 else torch.full_like(mass, 1 / len(idx))
        members = [units[roots[i]] for i in idx]
        for name in members[0]:
            _merge_rows(model, name, [u[name] for u in members], norm_of.get(name), repair, share)
        for reader, where in cols.items():
            if roots[idx[0]] in where:
                _sum_columns(model.get_submodule(reader), [where[roots[i]] for i in idx])
    layers = tuple(sorted(next(iter(units.values()))))
    return FoldGroup(layers, len(roots), int(labels.unique().numel()), error)


def _columns(g: ChannelGraph, roots: set[int]) -> dict[str, dict[int, list[int]]]:
    """For each reading layer: ``{root: its input columns}`` for the roots given."""
    out: dict[str, dict[int, list[int]]] = {}
    for reader, atoms in g.cols.items():
        for j, a in enumerate(atoms):
            r = g.atoms.find(a)
            if r in roots:
                out.setdefault(reader, {}).setdefault(r, []).append(j)
    return out


def _merge_rows(model: nn.Module, name: str, rows: list[list[int]], norm: tuple[str, Folded] | None,
                repair: bool, share: Tensor) -> None:
    """Rows ``rows[0]`` become the members' ``share``-weighted mean (repaired); the others are zeroed (so
    compaction drops them)."""
    layer = model.get_submodule(name)
    bn = model.get_submodule(norm[0]) if norm else None
    for p, keep in enumerate(rows[0]):
        idx = [r[p] for r in rows]
        w = layer.weight.detach()[idx].double()
        shift = bn.bias.detach()[idx].double() if bn is not None else torch.zeros(len(idx), dtype=torch.float64, device=w.device)
        merged = (share.reshape(-1, *([1] * (w.dim() - 1))) * w).sum(0)
        new_shift = (share * shift).sum()
        if bn is not None and repair:
            merged, new_shift = repair_stats(w.reshape(len(idx), -1), norm[1], idx, share, merged, new_shift)
        layer.weight[keep] = merged.reshape(layer.weight.shape[1:]).to(layer.weight.dtype)
        if layer.bias is not None:
            layer.bias[keep] = (share * layer.bias[idx].double()).sum().to(layer.bias.dtype)
        if bn is not None:
            bn.bias[keep] = new_shift.to(bn.bias.dtype)
        gone = idx[1:]
        layer.weight[gone] = 0
        for t in (layer.bias, *((bn.weight, bn.bias) if bn is not None else ())):
            if t is not None:
                t[gone] = 0


def _sum_columns(reader: nn.Module, cols: list[list[int]]) -> None:
    """The reader's columns ``cols[0]`` absorb the others (position by position); the others are zeroed."""
    w = reader.weight
    for p, keep in enumerate(cols[0]):
        idx = [c[p] for c in cols]
        w[:, keep] = w[:, idx].double().sum(1).to(w.dtype)
        w[:, idx[1:]] = 0

