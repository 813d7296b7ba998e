"""report.md: what a run did, in a page a person reads in a minute."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..export import atomic_write
from .summary import Summary


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2%}"


def write_markdown(path: str | os.PathLike[str], metrics: dict[str, Any], final: Summary,
                   plot: str | None) -> None:
    """Write the report from ``metrics`` (the content of metrics.json) and the final summary."""
    dense, fin = metrics["dense"], metrics["final"]
    lines = [
        f"# secateurs report: {metrics['model']}" + (f" on {metrics['data']}" if metrics.get("data") else ""),
        "",
        "| | dense | pruned |",
        "|---|---:|---:|",
        f"| accuracy | {_pct(dense['accuracy'])} | {_pct(fin['accuracy'])} |",
        f"| parameters | {dense['params']:,} | {fin['params']:,} ({fin['nonzero']:,} non-zero) |",
        f"| sparsity of prunable weights | 0.00% | {fin['sparsity']:.2%} |",
        f"| compression (1/density) | 1.00x | {fin['compression']:.2f}x |",
    ]
    if fin.get("flops") is not None:
        lines.append(f"| FLOPs per example | {fin['flops_dense']:,} | {fin['flops']:,} |")
    lines += ["", "FLOPs of masked layers are the dense-equivalent FLOPs times the layer's density.", ""]
    lines += ["## Stages", "", "| stage | accuracy | sparsity |", "|---|---:|---:|"]
    lines += [f"| {s['name']} | {_pct(s['accuracy'])} | {s['sparsity']:.2%} |" for s in metrics["stages"]]
    lines += ["", "## Layers", "", final.markdown(), ""]
    if plot:
        lines += ["## Weight distributions", "", f"![weight distributions]({plot})", ""]
    lines += [f"Run time: {metrics['seconds']:.1f} s.", ""]
    text = "\n".join(lines)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
