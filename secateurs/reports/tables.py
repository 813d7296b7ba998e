"""The tables of a run's report: what a run did, in a page a person reads in a minute.

Both reports (:mod:`.markdown` and :mod:`.html`) are rendered from the
content of ``metrics.json`` through the same tables of :class:`Cell`, so the
numbers they show are the numbers in the file, by construction. Each cell
remembers where its value lives in metrics.json (``"final.accuracy"``,
``"stages.2.sparsity"``), which the HTML report writes beside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..analysis.latency import compare_spreads

FLOPS_NOTE = "FLOPs of masked layers are the dense-equivalent FLOPs times the layer's density."


def latency_note(metrics: Mapping[str, Any]) -> str:
    """What the latency row measured: the final model as ``sc.accelerate`` runs it, and the paths it chose."""
    final = metrics["final"]
    if final.get("latency_ms") is None:
        return ""
    text = ("Latency: median wall time of one forward pass on one example, on this machine's CPU, with the middle "
            "half (first to third quartile) of the timed calls.")
    inference = final.get("inference")
    if inference is None:  # accelerate could not handle this model: the masked model was timed
        return text + " The final model was timed masked: it runs dense kernels and applies its masks."
    paths = ", ".join(f"{name} {path}" for name, path in inference["layers"].items())
    return (text + f" The final model was timed as sc.accelerate builds it for inference (whole model: "
            f"{inference['structure']}" + (f"; layers: {paths}" if paths else "") + ").")


def fmt(value: Any, kind: str) -> str:
    """A value as the reports show it: ``pct`` 12.34%, ``int`` 1,234, ``ratio`` 10.00x, ``bytes``, ``ms``."""
    if value is None:
        return "n/a"
    if kind == "pct":
        return f"{value:.2%}"
    if kind == "int":
        return f"{value:,}"
    if kind == "ratio":
        return "inf" if value == float("inf") else f"{value:.2f}x"
    if kind == "bytes":
        return f"{value:,} B" if value < 1024 else f"{value / 1024:,.1f} KiB" if value < 1024**2 \
            else f"{value / 1024**2:,.2f} MiB"
    if kind == "ms":
        return f"{value:.3f} ms"
    return str(value)


@dataclass(frozen=True)
class Cell:
    """One table cell: a value, how to show it, and where it lives in metrics.json (if it does)."""

    value: Any
    kind: str = "text"
    key: str | None = None

    @property
    def text(self) -> str:
        return fmt(self.value, self.kind)


@dataclass
class Table:
    """A titled table: a header and rows of cells; columns holding numbers are right-aligned."""

    title: str
    header: list[str]
    rows: list[list[Cell]] = field(default_factory=list)

    def numeric(self, col: int) -> bool:
        return any(r[col].kind != "text" for r in self.rows)


def _pair(label: str, kind: str, dense: tuple[Any, str | None], final: tuple[Any, str | None]) -> list[Cell]:
    return [Cell(label), Cell(dense[0], kind, dense[1]), Cell(final[0], kind, final[1])]


def totals(metrics: Mapping[str, Any]) -> Table:
    """Dense against final: accuracy, parameters, sparsity, compression, FLOPs, file size, latency."""
    d, f = metrics["dense"], metrics["final"]
    t = Table("Totals", ["", "dense", "final"], [
        _pair("accuracy", "pct", (d["accuracy"], "dense.accuracy"), (f["accuracy"], "final.accuracy")),
        _pair("parameters (all)", "int", (d["params"], "dense.params"), (f["params"], "final.params")),
        _pair("non-zero parameters", "int", (d["params"], "dense.params"), (f["nonzero"], "final.nonzero")),
        _pair("sparsity of prunable weights", "pct", (0.0, None), (f["sparsity"], "final.sparsity")),
        _pair("density", "pct", (1.0, None), (f["density"], "final.density")),
        _pair("compression (1/density)", "ratio", (1.0, None), (f["compression"], "final.compression")),
    ])
    if f.get("flops") is not None:
        t.rows.append(_pair("FLOPs per example", "int", (f["flops_dense"], "final.flops_dense"),
                            (f["flops"], "final.flops")))
    if f.get("file_bytes") is not None:
        t.rows.append(_pair("model file", "bytes", (d.get("file_bytes"), "dense.file_bytes" if
                                                    d.get("file_bytes") is not None else None),
                            (f["file_bytes"], "final.file_bytes")))
    if f.get("latency_ms") is not None:
        t.rows.append(_pair("latency, batch 1 (median)", "ms", (d.get("latency_ms"), "dense.latency_ms"),
                            (f["latency_ms"], "final.latency_ms")))
        t.rows.extend(_latency_spread(d, f))
    return t


def _latency_spread(d: Mapping[str, Any], f: Mapping[str, Any]) -> list[list[Cell]]:
    """The middle half of each model's timings, and whether they differ measurably (spreads that overlap
    are noise: the same model timed twice differs by tens of percent on a busy machine)."""
    dq, fq = d.get("latency_ms_quartiles"), f.get("latency_ms_quartiles")
    if dq is None or fq is None:
        return []
    spread = [Cell("latency, middle half of the timings"), Cell(f"{dq[0]:.3f}–{dq[1]:.3f} ms"),
              Cell(f"{fq[0]:.3f}–{fq[1]:.3f} ms")]
    verdict = compare_spreads((dq[0], d["latency_ms"], dq[1]), (fq[0], f["latency_ms"], fq[1]))
    return [spread, [Cell("latency, final against dense"), Cell(""), Cell(verdict)]]


def run_info(metrics: Mapping[str, Any]) -> Table:
    """How the run was made: its seed and the versions of what computed it (the recipe is shown beside)."""
    recipe, found = metrics.get("recipe") or {}, metrics.get("versions") or {}
    rows = [[Cell("seed"), Cell(recipe.get("seed"), "text", "recipe.seed")]]
    rows += [[Cell(name), Cell(value, "text", f"versions.{name}")] for name, value in found.items()]
    return Table("Run", ["", "value"], rows)


def recipe_yaml(metrics: Mapping[str, Any]) -> str:
    """The recipe the run carried out, every setting spelled out (defaults included), as YAML."""
    return yaml.safe_dump(metrics.get("recipe") or {}, sort_keys=False, default_flow_style=None).strip()


def stages(metrics: Mapping[str, Any]) -> Table:
    """Accuracy and sparsity after each stage, in order."""
    return Table("Accuracy per stage", ["#", "stage", "accuracy", "sparsity"], [
        [Cell(str(i)), Cell(s["name"]), Cell(s["accuracy"], "pct", f"stages.{i}.accuracy"),
         Cell(s["sparsity"], "pct", f"stages.{i}.sparsity")] for i, s in enumerate(metrics["stages"])])


def layers(metrics: Mapping[str, Any]) -> Table:
    """The final model's prunable layers: shape, parameters, non-zero, sparsity."""
    rows = [[Cell(r["name"]), Cell(r["kind"]), Cell("×".join(map(str, r["shape"]))),
             Cell(r["params"], "int", f"layers.{i}.params"), Cell(r["nonzero"], "int", f"layers.{i}.nonzero"),
             Cell(r["sparsity"], "pct", f"layers.{i}.sparsity")] for i, r in enumerate(metrics["layers"])]
    f = metrics["final"]
    rows.append([Cell("total"), Cell(""), Cell(""), Cell(f["prunable"], "int", "final.prunable"),
                 Cell(f["prunable_nonzero"], "int", "final.prunable_nonzero"),
                 Cell(1.0 - f["prunable_nonzero"] / f["prunable"] if f["prunable"] else 0.0, "pct")])
    return Table("Layers", ["layer", "type", "shape", "params", "non-zero", "sparsity"], rows)


def title(metrics: Mapping[str, Any]) -> str:
    """``secateurs report: MODEL on DATA``."""
    return f"secateurs report: {metrics['model']}" + (f" on {metrics['data']}" if metrics.get("data") else "")


def markdown_table(table: Table) -> list[str]:
    """The table as GitHub-flavoured Markdown lines (``|`` in text escaped)."""
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in table.header) + " |",
             "|" + "|".join("---:" if table.numeric(c) else "---" for c in range(len(table.header))) + "|"]
    lines += ["| " + " | ".join(esc(c.text) for c in row) + " |" for row in table.rows]
    return lines


PLOT_TITLES = {"accuracy": "Accuracy across stages", "weights": "Weight distributions",
               "sparsity": "Sparsity per layer", "latency": "Accuracy against measured latency"}


def lookup(metrics: Mapping[str, Any], key: str) -> Any:
    """The value at a dotted ``key`` of metrics.json (``"stages.2.accuracy"``)."""
    node: Any = metrics
    for part in key.split("."):
        node = node[int(part)] if isinstance(node, Sequence) and not isinstance(node, str) else node[part]
    return node
