"""report.html and report.md: rendered from metrics.json, images embedded and decodable."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from PIL import Image

from secateurs.runs import recipes, runner
from secateurs.reports import plots
from secateurs.reports.tables import fmt, lookup

RECIPE = """\
model: mlp
model_args: {widths: [32, 16]}
data: digits
train: {epochs: 1}
prune:
  - sparsity: 0.6
    finetune: {epochs: 1}
"""


class _Page(HTMLParser):
    """Collects the marked numbers (data-key, data-value, text), images and external references."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[tuple[str, str, str]] = []
        self.images: list[str] = []
        self.refs: list[str] = []
        self.tags: list[str] = []
        self._open: tuple[str, str] | None = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.images.append(a["src"] or "")
        self.refs += [v for k, v in a.items() if k in ("src", "href") and v and not v.startswith("data:")]
        if "data-key" in a:
            self._open, self._text = (a["data-key"] or "", a["data-value"] or ""), ""

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if self._open is not None and tag in ("td", "th"):
            self.cells.append((*self._open, self._text))
            self._open = None


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "out"
    runner.run(recipes.parse(RECIPE), out, quiet=True)
    return out


@pytest.fixture(scope="module")
def page(run_dir: Path) -> _Page:
    p = _Page()
    p.feed((run_dir / "report.html").read_text(encoding="utf-8"))
    return p


def _decode(src: str) -> Image.Image:
    assert src.startswith("data:image/png;base64,"), src[:40]
    img = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True)))
    img.load()
    return img


def _shown(text: str) -> float:
    """The number a cell shows: ``67.50%`` -> 0.675, ``1,234`` -> 1234, ``2.50x`` -> 2.5."""
    number = float(re.sub(r"[^0-9.\-]", "", text))
    return number / 100 if text.endswith("%") else number


def test_every_run_writes_both_reports_and_the_plots(run_dir: Path) -> None:
    names = {p.name for p in run_dir.iterdir()}
    assert {"report.md", "report.html", "weights.png", "sparsity.png", "accuracy.png", "metrics.json"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["plots"] == {"weights": "weights.png", "sparsity": "sparsity.png", "accuracy": "accuracy.png"}


def test_html_numbers_equal_metrics_json(run_dir: Path, page: _Page) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    keys = {k for k, _, _ in page.cells}
    # the totals, every stage and every layer are there, each marked with its place in metrics.json
    for key in ("dense.accuracy", "final.accuracy", "final.sparsity", "final.compression", "final.params",
                "final.nonzero", "final.flops", "final.file_bytes", "final.latency_ms", "dense.latency_ms"):
        assert key in keys, key
    assert {f"stages.{i}.accuracy" for i in range(len(metrics["stages"]))} <= keys
    assert {f"layers.{i}.nonzero" for i in range(len(metrics["layers"]))} <= keys
    for key, value, text in page.cells:
        expected = lookup(metrics, key)
        assert json.loads(value) == expected, key  # exact: the page was rendered from these numbers
        if text.endswith("%") or re.fullmatch(r"[0-9,]+", text):
            assert _shown(text) == pytest.approx(expected, abs=5e-5 if text.endswith("%") else 0), (key, text)


def test_file_size_in_the_report_is_the_saved_model(run_dir: Path) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["final"]["file_bytes"] == (run_dir / "model.safetensors").stat().st_size
    assert metrics["dense"]["file_bytes"] == (run_dir / "dense.safetensors").stat().st_size
    assert metrics["final"]["file_bytes"] < metrics["dense"]["file_bytes"]  # 60% sparse: the sparse format pays
    assert metrics["final"]["latency_ms"] > 0 and metrics["dense"]["latency_ms"] > 0
    inference = metrics["final"]["inference"]  # timed as sc.accelerate runs it, and the report says how
    assert inference["structure"] in ("dense", "compact")
    assert set(inference["layers"].values()) <= {"dense", "csr", "compact"}
    assert f"whole model: {inference['structure']}" in (run_dir / "report.md").read_text()


def test_html_is_self_contained_and_its_images_decode(run_dir: Path, page: _Page) -> None:
    assert page.refs == []  # no external image, stylesheet, font or link: readable offline
    assert "script" not in page.tags
    assert len(page.images) == 3
    sizes = [_decode(src).size for src in page.images]
    for (w, h), name in zip(sizes, ("accuracy.png", "weights.png", "sparsity.png")):
        assert (w, h) == Image.open(run_dir / name).size, name  # the very PNGs of the run
        assert w >= 400 and h >= 150, (name, w, h)
    weights = _decode(page.images[1])
    assert len(weights.convert("RGB").getcolors(maxcolors=1 << 20)) > 50  # histograms drawn, not an empty canvas


def test_markdown_shows_the_same_numbers(run_dir: Path) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    md = (run_dir / "report.md").read_text()
    assert md.startswith("# secateurs report: mlp on digits")
    for s in metrics["stages"]:
        assert f"| {s['name']} | {fmt(s['accuracy'], 'pct')} | {fmt(s['sparsity'], 'pct')} |" in md
    for row in metrics["layers"]:
        assert f"| {row['name']} |" in md and f"| {row['nonzero']:,} |" in md
    for png in ("weights.png", "sparsity.png", "accuracy.png"):
        assert f"]({png})" in md


def test_weight_distributions_show_three_stages_and_cap_the_layers(tmp_path: Path) -> None:
    torch.manual_seed(0)
    snaps = {label: {f"l{i}.weight": torch.randn(20, 20) for i in range(20)} for label in ("init", "trained")}
    snaps["pruned"] = {k: v * (v.abs() > 1) for k, v in snaps["trained"].items()}
    drawn = plots.weight_distributions(snaps, tmp_path / "w.png")
    assert drawn == plots.MAX_PANELS  # 20 layers: the first 16 are drawn
    assert Image.open(tmp_path / "w.png").size[1] > 600  # four rows of panels


def test_a_run_without_data_has_no_accuracy_plot(tmp_path: Path) -> None:
    m = runner.run(recipes.parse("model: mlp\nmodel_args: {widths: [8]}\nprune:\n  - {sparsity: 0.5}\n"),
                   tmp_path, quiet=True)
    assert "accuracy" not in m["plots"] and not (tmp_path / "accuracy.png").exists()
    p = _Page()
    p.feed((tmp_path / "report.html").read_text(encoding="utf-8"))
    assert [text for key, _, text in p.cells if key == "final.accuracy"] == ["n/a"]
    assert len(p.images) == 2


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium (Debian package chromium) is not installed")
def test_report_renders_in_headless_chromium(run_dir: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    r = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--screenshot={shot}", "--window-size=1280,2000", (run_dir / "report.html").as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert shot.is_file(), r.stderr[-2000:]
    img = Image.open(shot).convert("L")
    assert img.size == (1280, 2000)
    pixels = list(img.tobytes())  # grey levels, one byte per pixel
    mean = sum(pixels) / len(pixels)
    assert math.sqrt(sum((p - mean) ** 2 for p in pixels) / len(pixels)) > 20  # not a blank page
    band = img.crop((0, 0, 1280, 40)).tobytes()  # the dark header band holding the title
    assert sum(p < 80 for p in band) > 0.8 * len(band)
    title = img.crop((20, 10, 500, 50)).tobytes()  # white title text on it
    assert sum(p > 200 for p in title) > 100
    body = img.crop((0, 400, 1280, 2000)).tobytes()  # tables and the embedded plots below
    assert sum(p < 200 for p in body) > 0.02 * len(body)


def test_the_page_shows_the_recipe_seed_and_versions(run_dir: Path, page: _Page) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["versions"]["torch"] == torch.__version__ and metrics["versions"]["python"]
    keys = {k for k, _, _ in page.cells}
    assert {"recipe.seed", "versions.secateurs", "versions.torch", "versions.python"} <= keys
    md, html_text = (run_dir / "report.md").read_text(), (run_dir / "report.html").read_text()
    assert "## Run" in md and "```yaml\nmodel: mlp\n" in md and "sparsity: 0.6" in md
    assert "<pre>model: mlp\n" in html_text


def test_latency_shows_the_middle_half_and_says_when_there_is_no_measurable_difference(run_dir: Path) -> None:
    from secateurs.reports.tables import totals

    metrics = json.loads((run_dir / "metrics.json").read_text())
    low, high = metrics["final"]["latency_ms_quartiles"]
    assert low <= metrics["final"]["latency_ms"] <= high
    same = {**metrics, "dense": {**metrics["dense"], "latency_ms": 1.0, "latency_ms_quartiles": [0.8, 1.3]},
            "final": {**metrics["final"], "latency_ms": 1.5, "latency_ms_quartiles": [1.1, 1.9]}}  # 50% "slower"
    rows = {r[0].text: [c.text for c in r[1:]] for r in totals(same).rows}
    assert rows["latency, final against dense"][1].startswith("no measurable difference")
    assert rows["latency, middle half of the timings"] == ["0.800–1.300 ms", "1.100–1.900 ms"]
    apart = {**same, "final": {**same["final"], "latency_ms": 0.5, "latency_ms_quartiles": [0.45, 0.55]}}
    assert {r[0].text: r[2].text for r in totals(apart).rows}["latency, final against dense"].startswith(
        "final 2.00x faster")


def test_the_weights_plot_says_final_after_fine_tuning(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[list[str]] = []
    drawn = plots.weight_distributions

    def spy(snapshots, path, bins=80):
        seen.append(list(snapshots))
        return drawn(snapshots, path, bins)

    monkeypatch.setattr(plots, "weight_distributions", spy)
    runner.run(recipes.parse(RECIPE + "report: true\n"), tmp_path / "tuned", quiet=True)
    untuned = RECIPE.replace("    finetune: {epochs: 1}\n", "")
    runner.run(recipes.parse(untuned + "report: true\n"), tmp_path / "untuned", quiet=True)
    assert [labels[-1] for labels in seen] == ["final", "pruned"]


def test_the_accuracy_plot_marks_stages_without_joining_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig))
    stages = [{"name": "dense", "accuracy": 0.9, "sparsity": 0.0}, {"name": "prune 1", "accuracy": 0.8, "sparsity": 0.9}]
    assert plots.accuracy_vs_sparsity(stages, tmp_path / "a.png")
    (line,) = figures[0].axes[0].lines
    assert line.get_linestyle() == "None" and line.get_marker() == "o"  # nothing measured between two stages
