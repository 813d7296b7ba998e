"""The plots of a report (matplotlib, written as PNG, atomically).

Every function draws on its own ``Figure`` with the Agg canvas, not through
``pyplot``: no global backend switch, nothing left open between runs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..files import atomic_write
from .latency import latency_frontier, latency_rows

MAX_PANELS = 16
"""Weight-distribution panels drawn at most; a note says how many layers were left out."""
MAX_BARS = 60
"""Layers drawn at most in the per-layer sparsity bars."""
COLORS = {"init": "#868e96", "trained": "#1c7ed6", "dense": "#1c7ed6", "pruned": "#e8590c", "final": "#e8590c"}


def _figure(width: float, height: float) -> Any:

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | os.PathLike[str]) -> None:
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


def weight_distributions(
    snapshots: Mapping[str, Mapping[str, Tensor]], path: str | os.PathLike[str], bins: int = 80
) -> int:
    """Small multiples, one panel per layer: the weights at each snapshot, overlaid, log counts.

    The last snapshot is the pruned model: its zero (pruned) entries are left out so the
    survivors' distribution is visible. Layers missing from a snapshot (renamed by surgery)
    are not drawn; at most :data:`MAX_PANELS` layers are.

    Args:
        snapshots: ordered ``{label: {layer: weight}}``, e.g. init, trained, pruned.
        path: the PNG to write.
        bins: histogram bins over the layer's symmetric value range.

    Returns:
        The number of layers drawn.
    """
    labels = list(snapshots)
    names = [n for n in snapshots[labels[0]] if all(n in s for s in snapshots.values())]
    shown = names[:MAX_PANELS]
    cols = min(4, max(1, len(shown)))
    rows = max(1, math.ceil(len(shown) / cols))
    fig = _figure(3.6 * cols, 2.7 * rows + 0.5)
    for k, name in enumerate(shown):
        ax = fig.add_subplot(rows, cols, k + 1)
        values = {lab: snapshots[lab][name].detach().float().reshape(-1).cpu() for lab in labels}
        values[labels[-1]] = values[labels[-1]][values[labels[-1]] != 0]
        lim = max((float(v.abs().max()) for v in values.values() if v.numel()), default=0.0) or 1.0
        edges = torch.linspace(-lim, lim, bins + 1).numpy()
        for i, lab in enumerate(labels):
            last = i == len(labels) - 1
            ax.hist(values[lab].numpy(), bins=edges, color=COLORS.get(lab, f"C{i}"),
                    histtype="stepfilled" if last else "step", alpha=0.75 if last else 1.0, linewidth=1.2,
                    zorder=1 if last else 2 + i,  # outlines over the filled pruned histogram
                    label=f"{lab}{' non-zero' if last else ''} ({values[lab].numel():,})")
        ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, frameon=False)
    more = f" (first {len(shown)} of {len(names)} layers)" if len(names) > len(shown) else ""
    fig.suptitle(f"Weight distributions: {', '.join(labels)} (log counts){more}", fontsize=11)
    _save(fig, path)
    return len(shown)


def sparsity_bars(layers: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> None:
    """Horizontal bars: each layer's sparsity, its parameter count beside it.

    Args:
        layers: ``metrics.json``'s ``layers`` rows (``name``, ``params``, ``sparsity``).
        path: the PNG to write.
    """
    rows = list(layers)[:MAX_BARS]
    fig = _figure(7.5, 0.9 + 0.32 * max(len(rows), 1))
    ax = fig.add_subplot()
    y = list(range(len(rows)))[::-1]  # first layer on top
    ax.barh(y, [r["sparsity"] for r in rows], color=COLORS["pruned"], height=0.7)
    ax.barh(y, [1.0 - r["sparsity"] for r in rows], left=[r["sparsity"] for r in rows], color="#dee2e6",
            height=0.7)
    ax.set_yticks(y, [f"{r['name']} ({r['params']:,})" for r in rows], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("sparsity (orange: removed, grey: kept)")
    for yy, r in zip(y, rows):
        ax.text(min(r["sparsity"], 0.88) + 0.01, yy, f"{r['sparsity']:.1%}", va="center", fontsize=7)
    more = f" (first {len(rows)} of {len(layers)})" if len(layers) > len(rows) else ""
    ax.set_title(f"Sparsity per layer{more}", fontsize=11)
    _save(fig, path)


def accuracy_vs_sparsity(stages: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> bool:
    """Accuracy against sparsity, one marker per stage, labelled in order; no line joins them (nothing was
    measured between two stages).

    Args:
        stages: ``metrics.json``'s ``stages`` rows (``name``, ``accuracy``, ``sparsity``).
        path: the PNG to write.

    Returns:
        ``False`` (and nothing written) when no stage has an accuracy (a run without data).
    """
    points = [s for s in stages if s.get("accuracy") is not None]
    if not points:
        return False
    fig = _figure(7.5, 4.2)
    ax = fig.add_subplot()
    ax.plot([s["sparsity"] for s in points], [s["accuracy"] for s in points], color=COLORS["trained"],
            marker="o", linestyle="none")
    for k, s in enumerate(points):
        ax.annotate(f"{k}: {s['name']}", (s["sparsity"], s["accuracy"]), textcoords="offset points",
                    xytext=(4, 4 + 8 * (k % 3)), fontsize=7)
    ax.set_xlabel("sparsity")
    ax.set_ylabel("accuracy")
    ax.set_xlim(-0.02, 1.0)
    ax.grid(alpha=0.3)
    ax.set_title("Accuracy across stages", fontsize=11)
    _save(fig, path)
    return True


def frontier(methods: Mapping[str, Sequence[Mapping[str, Any]]], dense_accuracy: float | None,
             path: str | os.PathLike[str]) -> bool:
    """The accuracy–sparsity frontier of several methods on one plot; ``False`` (nothing written) without accuracy.

    Each method's line joins, in order of sparsity, the last stage at each sparsity (after its
    fine-tuning, if any: what the method delivers there); every stage is also drawn as a hollow marker.

    Args:
        methods: ``{method: [{"sparsity", "accuracy"}, ...]}`` in stage order; points without
            accuracy are skipped.
        dense_accuracy: the shared dense model's accuracy, drawn as a dashed reference line.
        path: the PNG to write.
    """
    if not any(p.get("accuracy") is not None for points in methods.values() for p in points):
        return False  # recipes without data: there is no frontier to draw
    fig = _figure(7.5, 4.5)
    ax = fig.add_subplot()
    for i, (name, points) in enumerate(methods.items()):
        pts = [(p["sparsity"], p["accuracy"]) for p in points if p.get("accuracy") is not None]
        if pts:
            ax.scatter(*zip(*pts), s=18, facecolors="none", edgecolors=f"C{i}", linewidths=0.8)
            ax.plot(*zip(*frontier_points(pts)), marker="o", markersize=4, linewidth=1.4, color=f"C{i}",
                    label=name)
    if dense_accuracy is not None:
        ax.axhline(dense_accuracy, color="black", linestyle="--", linewidth=1, label="dense")
    ax.set_xlabel("sparsity")
    ax.set_ylabel("accuracy")
    ax.set_xlim(-0.02, 1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    ax.set_title("Accuracy–sparsity frontier", fontsize=11)
    _save(fig, path)
    return True


def frontier_points(points: Sequence[tuple[float, float]], digits: int = 4) -> list[tuple[float, float]]:
    """``(sparsity, accuracy)`` of the last point at each sparsity (rounded to ``digits``), by sparsity.

    Example:
        >>> frontier_points([(0.0, 0.9), (0.5, 0.7), (0.5, 0.85), (0.8, 0.8)])
        [(0.0, 0.9), (0.5, 0.85), (0.8, 0.8)]
    """
    last = {round(s, digits): (s, a) for s, a in points}
    return [last[k] for k in sorted(last)]


def run_plots(out: str | os.PathLike[str], metrics: Mapping[str, Any],
              snapshots: Mapping[str, Mapping[str, Tensor]]) -> dict[str, str]:
    """Draw a run's plots into ``out``; ``{plot: file name}`` of those written, for metrics.json."""

    out = Path(out)
    written = {"weights": "weights.png", "sparsity": "sparsity.png"}
    weight_distributions(snapshots, out / written["weights"])
    sparsity_bars(metrics["layers"], out / written["sparsity"])
    if accuracy_vs_sparsity(metrics["stages"], out / "accuracy.png"):
        written["accuracy"] = "accuracy.png"
    if latency_plot(metrics, out / "latency.png"):
        written["latency"] = "latency.png"
    return written


def latency_plot(metrics: Mapping[str, Any], path: str | os.PathLike[str]) -> bool:
    """The run's stages with a measured latency, accuracy against latency (:mod:`.latency`); ``False`` if none."""
    rows = latency_rows(metrics["stages"])
    return bool(rows) and latency_frontier({"this run": rows}, metrics.get("dense", {}).get("accuracy"), path)
