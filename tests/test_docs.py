"""The README and the guide stay true."""

import re
from pathlib import Path

from secateurs.runs import recipes

ROOT = Path(__file__).resolve().parents[1]


def test_readme_shows_the_two_commands_first():
    text = (ROOT / "README.md").read_text()
    first_block = text.split("```bash", 1)[1].split("```", 1)[0]
    assert "make demo" in first_block and "make test" in first_block


def test_readme_python_example_runs(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert len(code.strip().splitlines()) <= 10
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    sc = scope["sc"]
    assert abs(sc.sparsity(scope["model"]) - 0.9) < 1e-6
    assert (tmp_path / "lenet.safetensors").is_file()
    assert scope["training"].evaluate(scope["model"], scope["data"].test) > 0.9


def test_guide_documents_every_recipe_field():
    guide = (ROOT / "docs" / "guide.md").read_text()
    for model in (recipes.Recipe, recipes.Stage, recipes.Train, recipes.Export):
        for field in model.model_fields:
            assert re.search(rf"\b{field}:", guide), f"{model.__name__}.{field} is not in docs/guide.md"


def test_example_recipe_is_valid_and_is_the_demo():
    path = ROOT / "examples" / "lenet-300-100.yaml"
    assert recipes.load(path) == recipes.parse(recipes.DEMO)
