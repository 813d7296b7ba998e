"""``secateurs compare``: several methods on one model and data, a frontier plot and tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from secateurs.runs import recipes
from secateurs.reports.plots import frontier_points
from secateurs.reports.tables import lookup
from secateurs.runs.compare import check_shared, method_names
from secateurs.errors import PruningError

REPO = Path(__file__).resolve().parents[2]
BASE = "model: mlp\nmodel_args: {widths: [16]}\ndata: digits\nseed: 0\ntrain: {epochs: 1}\nprune:\n"
METHODS = {
    "magnitude": BASE + "  - {sparsity: 0.5}\n  - {sparsity: 0.8, finetune: {epochs: 1}}\n",
    "random": BASE + "  - {sparsity: 0.5, criterion: random}\n  - {sparsity: 0.8, criterion: random}\n",
}


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", "secateurs", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("compare")
    for name, text in METHODS.items():
        (cwd / f"{name}.yaml").write_text(text)
    r = _cli("compare", "magnitude.yaml", "random.yaml", "-o", "out", "-q", cwd=cwd)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == ""  # --quiet
    return cwd / "out"


class _Cells(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[str, object] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if "data-key" in a:
            self.cells[a["data-key"] or ""] = json.loads(a["data-value"] or "null")


def test_each_method_runs_into_its_folder_and_the_table_equals_its_metrics(compared: Path) -> None:
    summary = json.loads((compared / "compare.json").read_text())
    assert [m["name"] for m in summary["methods"]] == ["magnitude", "random"]
    cells = _Cells()
    cells.feed((compared / "compare.html").read_text(encoding="utf-8"))
    md = (compared / "compare.md").read_text()
    for i, m in enumerate(summary["methods"]):
        own = json.loads((compared / m["name"] / "metrics.json").read_text())
        assert m["final"] == own["final"]
        assert [(p["sparsity"], p["accuracy"]) for p in m["points"]] == \
            [(s["sparsity"], s["accuracy"]) for s in own["stages"]]
        for field in ("accuracy", "sparsity", "compression", "nonzero", "flops", "file_bytes"):
            key = f"methods.{i}.final.{field}"
            assert cells.cells[key] == own["final"][field] == lookup(summary, key), key
        assert f"| {m['name']} | {own['final']['accuracy']:.2%} | {own['final']['sparsity']:.2%} |" in md
        assert (compared / m["name"] / "report.html").is_file()
    assert summary["methods"][0]["final"]["sparsity"] == pytest.approx(0.8, abs=1e-3)


def test_the_dense_model_is_trained_once_and_shared(compared: Path) -> None:
    a, b = (json.loads((compared / n / "metrics.json").read_text()) for n in ("magnitude", "random"))
    assert a["dense"]["accuracy"] == b["dense"]["accuracy"]
    assert (compared / "magnitude" / "dense.safetensors").read_bytes() == \
        (compared / "random" / "dense.safetensors").read_bytes()
    # magnitude beats random at 80% on the same dense model: the frontier separates the methods
    assert a["final"]["accuracy"] > b["final"]["accuracy"]


def test_frontier_plot_decodes(compared: Path) -> None:
    img = Image.open(compared / "compare.png")
    img.load()
    assert img.size[0] >= 600 and img.size[1] >= 350
    assert "data:image/png;base64," in (compared / "compare.html").read_text(encoding="utf-8")


def test_recipes_that_differ_in_a_shared_field_exit_2_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(METHODS["magnitude"])
    (tmp_path / "b.yaml").write_text(METHODS["random"].replace("seed: 0", "seed: 1"))
    r = _cli("compare", "a.yaml", "b.yaml", "-o", "out", cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "seed" in lines[0] and lines[0].startswith("secateurs: error:"), r.stderr
    assert not (tmp_path / "out").exists()


def test_a_bad_stage_in_a_later_recipe_exits_2_before_the_first_runs(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(METHODS["magnitude"])
    (tmp_path / "b.yaml").write_text(BASE + "  - {sparsity: 0.5, layers: {'nosuch*': 0.3}}\n")
    r = _cli("compare", "a.yaml", "b.yaml", "-o", "out", cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "nosuch" in lines[0], r.stderr
    assert not (tmp_path / "out").exists()


def test_recipes_without_data_give_a_table_and_no_plot_quietly(tmp_path: Path) -> None:
    base = "model: mlp\nmodel_args: {in_features: 8, widths: [16], num_classes: 3}\nprune:\n"
    (tmp_path / "a.yaml").write_text(base + "  - {sparsity: 0.5}\n")
    (tmp_path / "b.yaml").write_text(base + "  - {sparsity: 0.5, criterion: random}\n")
    r = _cli("compare", "a.yaml", "b.yaml", "-o", "out", "-q", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stderr
    out = tmp_path / "out"
    assert {"compare.json", "compare.md", "compare.html"} <= {p.name for p in out.iterdir()}
    assert not (out / "compare.png").exists() and "compare.png" not in (out / "compare.md").read_text()


def test_check_shared_names_the_field_and_needs_two() -> None:
    a = recipes.parse(METHODS["magnitude"])
    with pytest.raises(PruningError, match="train"):
        check_shared({"a": a, "b": recipes.parse(METHODS["random"].replace("epochs: 1}", "epochs: 2}", 1))})
    with pytest.raises(PruningError, match="model_args"):
        check_shared({"a": a, "b": recipes.parse(METHODS["random"].replace("[16]", "[8]"))})
    with pytest.raises(PruningError, match="at least two"):
        check_shared({"a": a})
    check_shared({"a": a, "b": recipes.parse(METHODS["random"])})  # different stages are the point


def test_method_names_are_file_stems_made_unique() -> None:
    assert method_names(["x/magnitude.yaml", "y/magnitude.yaml", "snip.yml", "z/magnitude.yaml"]) == \
        ["magnitude", "magnitude-2", "snip", "magnitude-3"]


def test_frontier_keeps_the_last_stage_at_each_sparsity() -> None:
    # prune to 50% (0.7), fine-tune at 50% (0.85): the method delivers 0.85 there
    assert frontier_points([(0.0, 0.9), (0.5, 0.7), (0.5, 0.85), (0.8, 0.8)]) == [(0.0, 0.9), (0.5, 0.85), (0.8, 0.8)]
