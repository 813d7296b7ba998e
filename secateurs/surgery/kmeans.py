"""A small seeded k-means (k-means++ seeding, Lloyd iterations) in torch, for :func:`secateurs.fold`.

Written here rather than taken from scikit-learn because scikit-learn is an optional extra and folding
is part of the library core; it is a few dozen lines, deterministic for a seed (its own
``torch.Generator``, never the global one), and always returns exactly ``k`` non-empty clusters,
which folding needs to remove exactly the channels it was asked to.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _sq_dist(x: Tensor, centres: Tensor) -> Tensor:
    return (x.pow(2).sum(1, keepdim=True) - 2 * x @ centres.T + centres.pow(2).sum(1)[None]).clamp_min(0)


def _seed(x: Tensor, k: int, gen: torch.Generator) -> Tensor:
    """k-means++: each next centre drawn with probability proportional to its squared distance."""
    n = x.shape[0]
    picked = [int(torch.randint(n, (1,), generator=gen, device=x.device))]
    d2 = _sq_dist(x, x[picked])[:, 0]
    for _ in range(1, k):
        i = int(torch.multinomial(d2, 1, generator=gen)) if float(d2.sum()) > 0 else int(d2.argmax())
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


def kmeans(x: Tensor, k: int, seed: int = 0, iters: int = 50) -> tuple[Tensor, float]:
    """Cluster the rows of ``x`` into exactly ``k`` non-empty clusters.

    Args:
        x: ``(n, d)`` points.
        k: clusters, ``1 <= k <= n``.
        seed: seed of the k-means++ draws.
        iters: most Lloyd iterations (it stops earlier when no label changes).

    Returns:
        ``(labels, inertia)``: the cluster of each row (``0 … k-1``) and the sum of squared
        distances of the rows to their cluster means.

    Example:
        >>> labels, err = kmeans(torch.tensor([[0.0], [0.1], [5.0], [5.2]]), 2)
        >>> bool(labels[0] == labels[1]) and bool(labels[2] == labels[3]) and bool(labels[0] != labels[2])
        True
    """
    x = x.double().cpu()  # a small problem (channels x fan-in); the CPU draws the same seeds everywhere
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    gen = torch.Generator().manual_seed(seed)
    centres = _seed(x, k, gen)
    labels = torch.full((n,), -1, dtype=torch.long, device=x.device)
    for _ in range(iters):
        d = _sq_dist(x, centres)
        new = _fill_empty(x, d.argmin(1), d.min(1).values.clone(), k)
        if torch.equal(new, labels):
            break
        labels = new
        counts = torch.bincount(labels, minlength=k).double()
        centres = torch.zeros(k, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, labels, x) / counts[:, None]
    counts = torch.bincount(labels, minlength=k).double()
    centres = torch.zeros(k, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, labels, x) / counts[:, None]
    return labels, float((x - centres[labels]).pow(2).sum())
