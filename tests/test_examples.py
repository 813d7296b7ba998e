"""Every recipe in ``examples/`` runs: one per method family, each at a tiny size (an MLP of 16 hidden units on
the 8x8 digits, one epoch wherever the recipe trains, at most two rounds). The files themselves are run as they
are written by ``secateurs run FILE --check`` (validated against LeNet-300-100 and MNIST, nothing trained)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from secateurs import cli
from secateurs.runs import compare, recipes, runner

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FAMILIES = ["structured-compact", "wanda-obs", "2-4", "iterative-rewind", "gradual", "rigl", "data-free"]


def _tiny(path: Path) -> recipes.Recipe:
    """The recipe at ``path`` shrunk: same stages and settings, a tiny model and data, one epoch each."""
    raw: dict[str, Any] = yaml.safe_load(path.read_text())
    raw.update(model="mlp", model_args={"widths": [16, 16]}, data="digits", report=False)
    if "train" in raw:
        raw["train"]["epochs"] = 1
    for stage in raw["prune"]:
        for key, most in (("epochs", 1), ("rounds", 2)):
            if key in stage:
                stage[key] = min(stage[key], most)
        if "finetune" in stage:
            stage["finetune"]["epochs"] = 1
    return recipes.Recipe.model_validate(raw)


def test_there_is_one_example_per_method_family_and_each_file_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    found = sorted(p.stem for p in EXAMPLES.glob("*.yaml"))
    assert found == sorted([*FAMILIES, "lenet-300-100"])
    for path in [*EXAMPLES.glob("*.yaml"), *EXAMPLES.glob("compare/*.yaml")]:
        assert cli.main(["run", str(path), "--check"]) == 0, path
        assert path.read_text().startswith("#"), f"{path.name}: say what it shows in a comment first"
    capsys.readouterr()


@pytest.mark.parametrize("family", FAMILIES)
def test_each_example_runs_at_a_tiny_size(tmp_path: Path, family: str) -> None:
    metrics = runner.run(_tiny(EXAMPLES / f"{family}.yaml"), tmp_path, quiet=True)
    assert metrics["stages"][0]["name"] == "dense" and len(metrics["stages"]) >= 2
    assert (tmp_path / "model.safetensors").is_file()
    if family == "structured-compact":  # neurons gone for real, the logits kept
        assert metrics["compacted"] and metrics["final"]["params"] < metrics["dense"]["params"]
    elif family != "data-free":
        assert metrics["final"]["sparsity"] > 0.4


def test_the_compare_example_runs_at_a_tiny_size(tmp_path: Path) -> None:
    paths = sorted((EXAMPLES / "compare").glob("*.yaml"))
    found = dict(zip(compare.method_names(paths), (_tiny(p) for p in paths)))
    compare.check_shared(found)
    result = compare.compare(found, tmp_path, quiet=True)
    assert [m["name"] for m in result["methods"]] == ["magnitude", "wanda"]
    assert (tmp_path / "compare.png").is_file()
