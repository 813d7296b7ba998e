"""Weight-distribution plots (matplotlib, written as PNG)."""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor

from ..export import atomic_write


def weight_histograms(
    before: dict[str, Tensor], after: dict[str, Tensor], path: str | os.PathLike[str], bins: int = 80
) -> None:
    """Small multiples, one panel per layer: weight values before and after pruning.

    Pruned (zero) entries are left out of the "after" histogram so the survivors'
    distribution is visible; counts are on a log scale.

    Args:
        before: ``{layer: weight}`` of the dense model.
        after: ``{layer: weight}`` of the pruned model; layers missing from it are not drawn.
        path: the PNG to write (atomically).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in before if n in after]  # a layer renamed by surgery (a gated conv) is left out
    if not names:
        names = list(before)
        after = before
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        dense = before[name].detach().float().reshape(-1).cpu()
        kept = after[name].detach().float().reshape(-1).cpu()
        kept = kept[kept != 0]
        lim = max(float(dense.abs().max()), float(kept.abs().max()) if kept.numel() else 0.0) or 1.0
        edges = torch.linspace(-lim, lim, bins + 1).numpy()
        ax.hist(dense.numpy(), bins=edges, color="#9aa5b1", label=f"dense ({dense.numel():,})")
        ax.hist(kept.numpy(), bins=edges, color="#d9480f", alpha=0.8, label=f"pruned, non-zero ({kept.numel():,})")
        ax.set_yscale("log")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("weight value", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, frameon=False)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle("Weight distributions before and after pruning (log counts)", fontsize=11)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
