"""OWL: outlier-weighted layer-wise sparsity (Yin et al., ICML 2024).

Yin, Wu, Shen, Wang, Zhu, Liu et al., "Outlier Weighed Layerwise Sparsity (OWL): A
Missing Secret Sauce for Pruning LLMs to High Sparsity". Layers whose Wanda scores
``|W_ij|·‖X_j‖`` hold more outliers (scores above ``M`` times the layer's mean score)
matter more and are pruned less. With ``D_l`` the outlier ratio of layer ``l``, the
densities are ``D_l`` rescaled to ``[0, 2λ]`` and shifted so their mean is ``1 - p``:
every layer stays within ``p ± λ`` and the average sparsity is ``p``. The ratios come from
a first pass over the dense model, layer by layer, on the calibration data.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from ..criteria.wanda import wanda_scores
from .layerwise import Forward, linears, statistics

HYPER_M = 5.0
"""A score is an outlier above ``M`` times its layer's mean score (the paper's setting for LLaMA)."""
LAMBDA = 0.08
"""Layer sparsities stay within ``p ± λ``."""


def outlier_ratio(layer: nn.Module, batches: Iterable[Tensor], forward: Forward, m: float = HYPER_M) -> float:
    """The fraction of the layer's Wanda scores (all its Linear weights) above ``m`` times their mean."""
    stats = statistics(layer, batches, forward, "wanda")
    scores = torch.cat([wanda_scores(lin.weight.detach().float(), stats[n].sqrt()).reshape(-1)
                        for n, lin in linears(layer).items() if n in stats])
    return float((scores > m * scores.mean()).double().mean())


def allocate(ratios: list[float], sparsity: float, lam: float = LAMBDA) -> list[float]:
    """Per-layer sparsities from outlier ratios: more outliers, lower sparsity; mean ``sparsity``.

    Example:
        >>> [round(s, 2) for s in allocate([0.01, 0.03, 0.02], 0.5)]
        [0.58, 0.42, 0.5]
    """
    r = torch.tensor(ratios, dtype=torch.float64)
    span = float(r.max() - r.min())
    if span == 0:
        return [sparsity] * len(ratios)
    density = (r - r.min()) / span * 2 * lam
    density = density - density.mean() + (1 - sparsity)
    return [min(max(1 - float(d), 0.0), 1.0) for d in density]
