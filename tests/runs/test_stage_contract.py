"""Every registered stage kind keeps the contract of secateurs.runs.stages: a new stage file is tested here
the moment it exists (documented, its example parses, round-trips, rejects unknown keys and runs)."""

from __future__ import annotations

import re

import pytest
import torch
import yaml
from torch import nn
from torch.utils.data import TensorDataset

from secateurs import zoo
from secateurs.runs import recipes, stages

KINDS = stages.names()


def _recipe(stage: dict) -> str:
    return yaml.safe_dump({"model": "mlp", "model_args": {"widths": [8]}, "data": "digits", "prune": [stage]},
                          sort_keys=False)


def _tiny_model() -> nn.Module:
    """A conv (for stages that gate convolutions) and two linear layers, for 8×8 digits."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 10))


def test_every_stage_file_registered_a_kind() -> None:
    assert {"oneshot", "data-free", "iterative", "gradual", "movement", "rigl", "set", "l0", "runtime"} <= set(KINDS)
    assert stages.get("oneshot") is stages.once()[0]


@pytest.mark.parametrize("name", KINDS)
def test_kind_is_documented(name: str) -> None:
    kind = stages.get(name)
    assert issubclass(kind, stages.StageBase) and kind.name == name
    assert (kind.__dict__.get("__doc__") or "").strip(), f"{kind.__name__} has no docstring of its own"
    for field, info in kind.model_fields.items():
        assert info.description, f"{name}: field {field} has no description"
    assert kind.example, f"{kind.__name__} declares no example"


@pytest.mark.parametrize("name", KINDS)
def test_example_parses_from_yaml_as_its_kind(name: str) -> None:
    kind = stages.get(name)
    assert stages.kind_of(kind.example) == name
    defaults = {k: f.default for k, f in kind.model_fields.items() if k in ("schedule", "criterion")}
    assert stages.kind_of(defaults) == name  # an instance built in Python dumps as its own kind
    stage = recipes.parse(_recipe(kind.example)).prune[0]
    assert type(stage) is kind and isinstance(stage, recipes.Stage)


@pytest.mark.parametrize("name", KINDS)
def test_example_round_trips_through_model_dump(name: str) -> None:
    stage = recipes.parse(_recipe(stages.get(name).example)).prune[0]
    dumped = stage.model_dump()
    assert set(dumped) == set(type(stage).model_fields)
    again = recipes.parse(_recipe(dumped)).prune[0]
    assert again == stage and again.model_dump() == dumped


@pytest.mark.parametrize("name", KINDS)
def test_unknown_key_names_the_key_the_kind_and_the_line(name: str) -> None:
    kind = stages.get(name)
    text = _recipe({**kind.example, "no_such_key": 1})
    with pytest.raises(recipes.RecipeError) as info:
        recipes.parse(text)
    msg = str(info.value)
    assert "prune.0.no_such_key: unknown key for " + kind.selector() in msg, msg
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "no_such_key" in t)
    assert re.search(rf"\bline {line}\b", msg), msg


@pytest.mark.parametrize("name", KINDS)
def test_example_runs_on_a_tiny_model(name: str, tmp_path) -> None:
    recipe = recipes.parse(_recipe(stages.get(name).example))
    ds = zoo.dataset("digits")
    train = TensorDataset(*(t[:128] for t in ds.train.tensors))  # two batches: one epoch is two steps
    test = TensorDataset(*(t[:64] for t in ds.test.tensors))
    ctx = stages.StageContext(recipe, 1, _tiny_model(), tmp_path, train_data=train, test_data=test,
                              example=(test.tensors[0][:1],), quiet=True)
    model, rows = recipe.prune[0].run(ctx)
    assert isinstance(model, nn.Module)
    assert rows, f"{name} added no row to metrics.json"
    for row in rows:
        assert isinstance(row["name"], str) and row["name"]
        assert 0.0 <= row["accuracy"] <= 1.0
        assert row["sparsity"] <= 1.0
