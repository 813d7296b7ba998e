"""report.html: the run's report as one self-contained page (plots embedded, no scripts, readable offline).

The page is rendered from metrics.json's content through the same tables as
report.md (:mod:`.tables`). Each number's cell carries ``data-key`` (its dotted
place in metrics.json) and ``data-value`` (the exact value, as JSON), so a test
or a script can check the page against the file.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..files import write_text
from .tables import (FLOPS_NOTE, PLOT_TITLES, Cell, Table, latency_note, layers, recipe_yaml, run_info, stages,
                     title, totals)

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1f2933;
       background: #ffffff; margin: 0; }
header { background: #1f2933; color: #ffffff; padding: 18px 32px; }
header h1 { margin: 0; font-size: 24px; }
header p { margin: 6px 0 0; color: #cbd2d9; font-size: 14px; }
main { padding: 8px 32px 32px; max-width: 1280px; }
h2 { font-size: 18px; border-bottom: 2px solid #e4e7eb; padding-bottom: 4px; margin-top: 28px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e4e7eb; text-align: left; }
th { background: #f5f7fa; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.row { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
figure { margin: 8px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #e4e7eb; }
figcaption { font-size: 12px; color: #52606d; }
p.note { font-size: 12px; color: #52606d; max-width: 900px; }
"""


def _cell(c: Cell, tag: str = "td") -> str:
    attrs = ' class="num"' if c.kind != "text" else ""
    if c.key is not None:
        attrs += f' data-key="{html.escape(c.key)}" data-value="{html.escape(json.dumps(c.value))}"'
    return f"<{tag}{attrs}>{html.escape(c.text)}</{tag}>"


def table_html(table: Table, table_id: str) -> str:
    """The table as HTML, every number marked with its metrics.json key and exact value."""
    num = ' class="num"'
    head = "".join(f"<th{num if table.numeric(i) else ''}>{html.escape(h)}</th>" for i, h in enumerate(table.header))
    body = "\n".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in table.rows)
    return f'<table id="{table_id}">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>'


def figure_html(path: Path, caption: str) -> str:
    """The PNG at ``path`` embedded as a data URI, with a caption."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    alt = html.escape(caption)
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">'
            f"<figcaption>{alt} ({html.escape(path.name)})</figcaption></figure>")


def page(heading: str, subtitle: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """A whole page: a dark header, then ``(id, title, inner html)`` sections."""
    parts = [f'<section id="{sid}"><h2>{html.escape(name)}</h2>\n{inner}\n</section>' for sid, name, inner in sections]
    return ("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(heading)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<header><h1>{html.escape(heading)}</h1><p>{html.escape(subtitle)}</p></header>\n"
            "<main>\n" + "\n".join(parts) + "\n</main>\n</body>\n</html>\n")


def _subtitle(metrics: Mapping[str, Any]) -> str:
    f = metrics["final"]
    acc = "" if f["accuracy"] is None else f"accuracy {f['accuracy']:.2%}, "
    return (f"{len(metrics['stages']) - 1} stage(s): {acc}sparsity {f['sparsity']:.2%}, "
            f"compression {f['compression']:.2f}x" + (", compacted" if metrics.get("compacted") else "")
            + f"; run time {metrics['seconds']:.1f} s" + (f" on {metrics['device']}" if metrics.get("device") else ""))


def write_html(path: str | os.PathLike[str], metrics: Mapping[str, Any], image_dir: str | os.PathLike[str]) -> None:
    """Write report.html from ``metrics``, embedding the plots it lists (found in ``image_dir``).

    Args:
        path: the page to write (atomically).
        metrics: the content of metrics.json; ``metrics["plots"]`` names the PNGs to embed.
        image_dir: the folder holding those PNGs.
    """
    figures = {k: figure_html(Path(image_dir) / v, PLOT_TITLES[k]) for k, v in metrics.get("plots", {}).items()}
    notes = (FLOPS_NOTE + " " + latency_note(metrics)).strip()
    sections = [
        ("totals", "Totals",
         table_html(totals(metrics), "totals-table") + f'\n<p class="note">{html.escape(notes)}</p>'),
        ("stages", "Accuracy per stage",
         f'<div class="row">{table_html(stages(metrics), "stages-table")}{figures.get("accuracy", "")}</div>'),
    ]
    if "latency" in figures:
        sections.append(("latency", PLOT_TITLES["latency"], figures["latency"]))
    if "weights" in figures:
        sections.append(("weights", "Weight distributions", figures["weights"]))
    layer_table = table_html(layers(metrics), "layers-table")
    sections.append(("layers", "Layers", f'<div class="row">{layer_table}{figures.get("sparsity", "")}</div>'))
    sections.append(("run", "Run", table_html(run_info(metrics), "run-table")
                     + f"\n<pre>{html.escape(recipe_yaml(metrics))}</pre>"))
    text = page(title(metrics), _subtitle(metrics), sections)
    write_text(path, text)
