"""The latency frontier: accuracy against measured latency (with its spread), one line per method.

Latency is a fraction of the dense model's, measured (the compacted model timed interleaved with the dense
one); the horizontal bars are the measured spread (half the interquartile range over rounds), the dotted
verticals the targets asked for, when given.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..files import atomic_write

__all__ = ["latency_frontier", "latency_rows"]


def latency_rows(stages: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The stage rows of ``metrics.json`` that carry a measured latency and an accuracy."""
    return [s for s in stages if s.get("latency") is not None and s.get("accuracy") is not None]


def latency_frontier(methods: Mapping[str, Sequence[Mapping[str, Any]]], dense_accuracy: float | None,
                     path: str | os.PathLike[str], title: str = "Accuracy against measured latency") -> bool:
    """Accuracy against measured latency for several methods; ``False`` (nothing written) with no point to draw.

    Args:
        methods: ``{method: [{"latency", "accuracy", "latency_spread"?, "latency_target"?, "accuracy_spread"?},
            ...]}``; a point without latency or accuracy is skipped.
        dense_accuracy: drawn as a dashed line (with the dense model at latency 1).
        path: the PNG to write.
        title: the plot's title.
    """
    drawn = {m: sorted((p for p in pts if p.get("latency") is not None and p.get("accuracy") is not None),
                       key=lambda p: p["latency"]) for m, pts in methods.items()}
    if not any(drawn.values()):
        return False
    fig = Figure(figsize=(7.5, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    targets = sorted({p["latency_target"] for pts in drawn.values() for p in pts if p.get("latency_target")})
    for t in targets:
        ax.axvline(t, color="#adb5bd", linestyle=":", linewidth=1)
    for i, (name, pts) in enumerate(drawn.items()):
        if pts:
            ax.errorbar([p["latency"] for p in pts], [p["accuracy"] for p in pts],
                        xerr=[p.get("latency_spread", 0.0) for p in pts],
                        yerr=[p.get("accuracy_spread", 0.0) for p in pts], marker="o", markersize=4,
                        linewidth=1.3, capsize=2, color=f"C{i}", label=name)
    if dense_accuracy is not None:
        ax.axhline(dense_accuracy, color="black", linestyle="--", linewidth=1, label="dense")
    ax.set_xlabel("measured latency (fraction of dense)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0.0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    return True
