"""``secateurs compare``: several pruning methods on the same model and data, one frontier plot.

Each recipe is one method, named after its file (``magnitude.yaml`` -> ``magnitude``).
The recipes must agree on everything that makes the dense model (model,
model_args, data, seed, train, penalty), so the dense model is trained once: the
first method trains it, the others start from a copy of its ``dense.safetensors``
(the runner reuses a dense file whose recorded settings match). Each method runs
into ``OUT/<name>/`` as ``secateurs run`` would; then ``compare.json``,
``compare.png`` (accuracy against sparsity, one line per method, points from
every stage), ``compare.md`` and ``compare.html`` are written into ``OUT``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import PruningError
from ..files import atomic_write, check_writable, write_text
from ..progress import track
from ..reports import plots
from ..reports.html import figure_html, page, table_html
from ..reports.latency import latency_frontier
from ..reports.tables import Cell, Table, markdown_table
from . import runner
from .recipes import DENSE_FIELDS, Recipe

SHARED = DENSE_FIELDS
"""The recipe fields every compared method must share: together they make the dense model."""


def method_names(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Each recipe's file stem, made unique (``a``, ``a-2``) when two files share one.

    Example:
        >>> method_names(["x/magnitude.yaml", "y/magnitude.yaml", "snip.yaml"])
        ['magnitude', 'magnitude-2', 'snip']
    """
    names: list[str] = []
    for p in paths:
        stem, k = Path(p).stem, 2
        name = stem
        while name in names:
            name, k = f"{stem}-{k}", k + 1
        names.append(name)
    return names


def check_shared(recipes: Mapping[str, Recipe]) -> None:
    """Raise :class:`PruningError` naming the first field in :data:`SHARED` on which two methods differ."""
    if len(recipes) < 2:
        raise PruningError(f"compare needs at least two recipes, got {len(recipes)}")
    (first, base), *rest = recipes.items()
    for name, r in rest:
        for key in SHARED:
            a, b = getattr(base, key), getattr(r, key)
            if a != b:
                raise PruningError(f"recipes must share {key} to be compared: {first} has {_shown(a)}, "
                                   f"{name} has {_shown(b)}")


def _shown(value: Any) -> str:
    """A recipe field as one line of JSON (a nested settings block as its plain fields)."""
    return json.dumps(value.model_dump() if hasattr(value, "model_dump") else value)


def compare(recipes: Mapping[str, Recipe], out_dir: str | os.PathLike[str], quiet: bool = False) -> dict[str, Any]:
    """Run every method into ``out_dir/<name>/`` and write the comparison beside them.

    Args:
        recipes: ``{method name: recipe}``, in the order they are run and drawn.
        out_dir: the output folder.
        quiet: no progress output.

    Returns:
        The content written to ``compare.json``.

    Raises:
        PruningError: fewer than two recipes, recipes that differ in a :data:`SHARED` field, or
            a recipe whose stages do not fit its model (checked for all before any runs).
    """
    check_shared(recipes)
    for recipe in recipes.values():  # every method's stages, before the first one trains
        runner.check(recipe)
    out = Path(out_dir)
    check_writable(out)
    results: dict[str, dict[str, Any]] = {}
    dense: Path | None = None
    for name in track(list(recipes), "compare", unit="method", enabled=not quiet):
        folder = out / name
        if dense is not None and not (folder / "dense.safetensors").exists():
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(folder / "dense.safetensors", lambda tmp: shutil.copyfile(dense, tmp))
        if not quiet:
            print(f"== {name}", flush=True)
        results[name] = runner.run(recipes[name], folder, quiet=quiet)
        if (folder / "dense.safetensors").is_file():
            dense = folder / "dense.safetensors"
    summary = _summary(results)
    write_outputs(out, summary)
    return summary


def _summary(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    first = next(iter(results.values()))
    return {
        "model": first["model"], "data": first["data"], "dense": first["dense"],
        "methods": [{"name": name, "folder": name, "final": m["final"],
                     "points": [{"stage": s["name"], "sparsity": s["sparsity"], "accuracy": s["accuracy"], **lat}
                                for s, lat in zip(m["stages"], _latencies(m["stages"]))]}
                    for name, m in results.items()],
    }


def _latencies(stages: Sequence[Mapping[str, Any]]) -> list[dict[str, float]]:
    """Each stage's measured latency as a fraction of dense: the product of the stages' own ratios (each stage
    measures against the model before it), their relative spreads added in quadrature; a row without one
    (fine-tuning) keeps the latency before it; ``{}`` until a stage has measured one."""
    out: list[dict[str, float]] = []
    ratio, rel = None, 0.0
    for s in stages:
        if s.get("latency") is not None:
            ratio = (1.0 if ratio is None else ratio) * s["latency"]
            rel = (rel ** 2 + (s.get("latency_spread", 0.0) / s["latency"]) ** 2) ** 0.5 if s["latency"] else rel
        out.append({} if ratio is None else {"latency": ratio, "latency_spread": ratio * rel})
    return out


def table(summary: Mapping[str, Any]) -> Table:
    """One row per method: its final accuracy, sparsity, compression, non-zero parameters, FLOPs, file size."""
    rows = []
    for i, m in enumerate(summary["methods"]):
        f, key = m["final"], f"methods.{i}.final"
        rows.append([Cell(m["name"]), Cell(f["accuracy"], "pct", f"{key}.accuracy"),
                     Cell(f["sparsity"], "pct", f"{key}.sparsity"),
                     Cell(f["compression"], "ratio", f"{key}.compression"),
                     Cell(f["nonzero"], "int", f"{key}.nonzero"), Cell(f["flops"], "int", f"{key}.flops"),
                     Cell(f.get("file_bytes"), "bytes", f"{key}.file_bytes")])
    return Table("Methods", ["method", "accuracy", "sparsity", "compression", "non-zero params", "FLOPs",
                             "model file"], rows)


def write_outputs(out: Path, summary: Mapping[str, Any]) -> None:
    """compare.json, compare.png (with accuracies), compare.md and compare.html, each written atomically."""
    dense_acc = summary["dense"]["accuracy"]
    drawn = plots.frontier({m["name"]: m["points"] for m in summary["methods"]}, dense_acc, out / "compare.png")
    timed = latency_frontier({m["name"]: m["points"] for m in summary["methods"]}, dense_acc,
                             out / "compare-latency.png")
    text = json.dumps(summary, indent=2)
    write_text(out / "compare.json", text)
    heading = f"secateurs compare: {summary['model']}" + (f" on {summary['data']}" if summary["data"] else "")
    dense = "n/a" if dense_acc is None else f"{dense_acc:.2%}"
    t = table(summary)
    md = [f"# {heading}", "", f"Dense accuracy: {dense}.", "", *markdown_table(t), "",
          *(["![accuracy-sparsity frontier](compare.png)", ""] if drawn else []),
          *(["![accuracy against measured latency](compare-latency.png)", ""] if timed else []),
          "Each method's own report is in its folder: " + ", ".join(f"[{m['name']}]({m['folder']}/report.md)"
                                                                    for m in summary["methods"]) + ".", ""]
    write_text(out / "compare.md", "\n".join(md))
    sections = [("methods", "Methods", table_html(t, "methods-table"))]
    if drawn:
        sections.append(("frontier", "Accuracy–sparsity frontier",
                         figure_html(out / "compare.png", "Accuracy–sparsity frontier")))
    if timed:
        sections.append(("latency", "Accuracy against measured latency",
                         figure_html(out / "compare-latency.png", "Accuracy against measured latency")))
    html_text = page(heading, f"{len(summary['methods'])} methods; dense accuracy {dense}", sections)
    write_text(out / "compare.html", html_text)
