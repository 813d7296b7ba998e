"""Weighted clustering in torch for :func:`secateurs.fold`: a seeded k-means (k-means++ seeding, Lloyd
iterations) and Ward agglomeration.

Written here rather than taken from scikit-learn because scikit-learn is an optional extra and folding
is part of the library core. Both take a weight per point (folding weighs a channel by its outgoing
weights), are deterministic (k-means for a seed, with its own ``torch.Generator``, never the global
one; Ward always), and return exactly ``k`` non-empty clusters, which folding needs to remove exactly
the channels it was asked to. Ward keeps, per row, its best partner and recomputes only the rows whose
partner changed, so a join costs O(n·d) plus the stale rows, not a scan of all pairs' recomputation.
"""

from __future__ import annotations

import torch
from torch import Tensor

inf = float("inf")


def _sq_dist(x: Tensor, centres: Tensor) -> Tensor:
    return (x.pow(2).sum(1, keepdim=True) - 2 * x @ centres.T + centres.pow(2).sum(1)[None]).clamp_min(0)


def _seed(x: Tensor, w: Tensor, k: int, gen: torch.Generator) -> Tensor:
    """k-means++: each next centre drawn with probability proportional to its weighted squared distance."""
    picked = [int(torch.multinomial(w.cpu(), 1, generator=gen))]
    d2 = _sq_dist(x, x[picked])[:, 0]
    for _ in range(1, k):
        p = w * d2
        i = int(torch.multinomial(p.cpu(), 1, generator=gen)) if float(p.sum()) > 0 else int(d2.argmax())
        picked.append(i)
        d2 = torch.minimum(d2, _sq_dist(x, x[i : i + 1])[:, 0])
    return x[picked].clone()


def _fill_empty(x: Tensor, labels: Tensor, d2: Tensor, k: int) -> Tensor:
    """Give each empty cluster the point farthest from its centre among clusters of two or more."""
    for c in range(k):
        counts = torch.bincount(labels, minlength=k)
        if counts[c] > 0:
            continue
        movable = counts[labels] > 1
        i = int(torch.where(movable, d2, torch.full_like(d2, -1.0)).argmax())
        labels[i] = c
        d2[i] = 0
    return labels


def _centres(x: Tensor, w: Tensor, labels: Tensor, k: int) -> Tensor:
    """The weighted mean of each cluster."""
    mass = torch.zeros(k, dtype=x.dtype, device=x.device).index_add_(0, labels, w)
    return torch.zeros(k, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, labels, x * w[:, None]) / mass[:, None]


def kmeans(x: Tensor, k: int, seed: int = 0, iters: int = 50, weights: Tensor | None = None) -> tuple[Tensor, float]:
    """Cluster the rows of ``x`` into exactly ``k`` non-empty clusters (weighted k-means).

    Args:
        x: ``(n, d)`` points.
        k: clusters, ``1 <= k <= n``.
        seed: seed of the k-means++ draws.
        iters: most Lloyd iterations (it stops earlier when no label changes).
        weights: ``(n,)`` non-negative weight of each point (default: all 1); a cluster's centre is
            the weighted mean of its points and the error the weighted sum of squared distances.

    Returns:
        ``(labels, inertia)``: the cluster of each row (``0 … k-1``) and the (weighted) sum of
        squared distances of the rows to their cluster centres.

    Example:
        >>> labels, err = kmeans(torch.tensor([[0.0], [0.1], [5.0], [5.2]]), 2)
        >>> bool(labels[0] == labels[1]) and bool(labels[2] == labels[3]) and bool(labels[0] != labels[2])
        True
    """
    x = x.double().cpu()  # a small problem (channels x fan-in); the CPU draws the same seeds everywhere
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    w = torch.ones(n, dtype=x.dtype, device=x.device) if weights is None else weights.double().clamp_min(0)
    w = w + 1e-12 * (float(w.mean()) or 1.0)  # every point counts a little: no cluster of zero mass
    gen = torch.Generator().manual_seed(seed)
    centres = _seed(x, w, k, gen)
    labels = torch.full((n,), -1, dtype=torch.long, device=x.device)
    for _ in range(iters):
        d = _sq_dist(x, centres)
        new = _fill_empty(x, d.argmin(1), d.min(1).values.clone(), k)
        if torch.equal(new, labels):
            break
        labels = new
        centres = _centres(x, w, labels, k)
    centres = _centres(x, w, labels, k)
    return labels, float((w * (x - centres[labels]).pow(2).sum(1)).sum())


def _join(centres: Tensor, sq: Tensor, mass: Tensor, owner: Tensor, cost: Tensor, a: int, b: int,
          keep: Tensor) -> None:
    """Cluster ``b`` joins ``a``: its centre, weight and points move, and ``a``'s Ward costs are recomputed;
    the joined cluster keeps the representative of the heavier of the two."""
    if mass[b] > mass[a]:
        keep[a] = keep[b]
    total = mass[a] + mass[b]
    centres[a] = (mass[a] * centres[a] + mass[b] * centres[b]) / total
    sq[a] = centres[a].dot(centres[a])
    mass[a], mass[b] = total, 0.0
    owner[owner == b] = a
    cost[b, :] = inf
    cost[:, b] = inf
    alive = mass > 0
    alive[a] = False
    row = (sq[a] + sq - 2 * centres @ centres[a]).clamp_min(0) * (total * mass / (total + mass).clamp_min(1e-300))
    row = torch.where(alive, row, torch.full_like(row, inf))
    cost[a, :] = row
    cost[:, a] = row


def ward(x: Tensor, k: int, weights: Tensor | None = None) -> tuple[Tensor, float, Tensor]:
    """Agglomerative clustering with weighted Ward linkage into exactly ``k`` clusters (deterministic).

    Starting from one cluster per row, it repeatedly joins the two clusters whose join raises the
    weighted k-means error least: ``w_a w_b / (w_a + w_b) · ‖c_a − c_b‖²`` (``w`` the clusters'
    total weights, ``c`` their weighted means). With one light point against a heavy one this is
    ``w_light · ‖c_a − c_b‖²``, the saliency of pairwise neuron merging (Srinivas & Babu, 2015).

    Args:
        x: ``(n, d)`` points.
        k: clusters, ``1 <= k <= n``.
        weights: ``(n,)`` non-negative weights (default: all 1).

    Returns:
        ``(labels, inertia, kept)``: ``labels`` and ``inertia`` as :func:`kmeans`, and for each
        cluster the row that represents it: at each join, the representative of the heavier side
        (as pairwise merging keeps the neuron that absorbs the lighter one).

    Example:
        >>> labels, _, _ = ward(torch.tensor([[0.0], [0.1], [5.0], [5.2]]), 2)
        >>> labels.tolist()
        [0, 0, 1, 1]
    """
    x = x.double()
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    w = torch.ones(n, dtype=x.dtype, device=x.device) if weights is None else weights.double().clamp_min(0)
    w = w + 1e-12 * (float(w.mean()) or 1.0)
    centres, mass = x.clone(), w.clone()
    sq = centres.pow(2).sum(1)
    owner, keep = torch.arange(n, device=x.device), torch.arange(n, device=x.device)
    cost = _sq_dist(x, x) * (mass[:, None] * mass[None] / (mass[:, None] + mass[None]))
    cost.fill_diagonal_(inf)
    best, partner = cost.min(1)
    for _ in range(n - k):
        i = int(best.argmin())
        a, b = sorted((i, int(partner[i])))
        _join(centres, sq, mass, owner, cost, a, b, keep)
        best[b] = inf
        row = cost[a]
        best[a], partner[a] = row.min(0)
        better = row < best
        best[better], partner[better] = row[better], a
        stale = ((partner == b) | ((partner == a) & ~better)) & torch.isfinite(best)
        stale[a] = False
        if bool(stale.any()):
            rows = stale.nonzero().squeeze(1)
            best[rows], partner[rows] = cost[rows].min(1)
    roots, labels = torch.unique(owner, return_inverse=True)
    return labels, float((w * (x - _centres(x, w, labels, k)[labels]).pow(2).sum(1)).sum()), keep[roots]
