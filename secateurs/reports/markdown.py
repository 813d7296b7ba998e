"""report.md: the run's tables and plots as Markdown, rendered from metrics.json."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..files import write_text
from .tables import (FLOPS_NOTE, PLOT_TITLES, latency_note, layers, markdown_table, recipe_yaml, run_info, stages,
                     title, totals)


def write_markdown(path: str | os.PathLike[str], metrics: Mapping[str, Any]) -> None:
    """Write report.md from ``metrics`` (the content of metrics.json); plots are linked, not embedded."""
    figures = metrics.get("plots", {})
    lines = [f"# {title(metrics)}", ""]
    for table, plot, note in ((totals(metrics), None, FLOPS_NOTE), (stages(metrics), "accuracy", None),
                              (None, "latency", None), (None, "weights", None), (layers(metrics), "sparsity", None)):
        if table is not None:
            lines += [f"## {table.title}", "", *markdown_table(table), ""]
        if plot in figures:
            lines += ([f"## {PLOT_TITLES[plot]}", ""] if table is None else []) + \
                     [f"![{PLOT_TITLES[plot].lower()}]({figures[plot]})", ""]
        if note:
            lines += [(note + " " + latency_note(metrics)).strip(), ""]
    info = run_info(metrics)
    lines += [f"## {info.title}", "", *markdown_table(info), "", "Recipe:", "", "```yaml", recipe_yaml(metrics),
              "```", ""]
    on = f" on {metrics['device']}" if metrics.get("device") else ""
    lines += [f"Run time: {metrics['seconds']:.1f} s{on}.", ""]
    text = "\n".join(lines)
    write_text(path, text)
