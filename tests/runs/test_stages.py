"""Recipes with scheduled stages run end to end (tiny model, tiny data)."""

import json

import pytest

import secateurs as sc
from secateurs.runs import recipes, runner

RECIPE = """\
model: mlp
model_args: {widths: [32]}
data: digits
train: {epochs: 1}
penalty: {kind: l1, weight: 1.0e-6}
prune:
  - {schedule: %s}
"""


@pytest.mark.parametrize("stage, rounds", [
    ("gradual, sparsity: 0.7, epochs: 1, every: 5", 0),
    ("movement, sparsity: 0.7, epochs: 1, every: 5", 0),
    ("rigl, sparsity: 0.7, epochs: 1, every: 5", 0),
    ("set, sparsity: 0.7, epochs: 1, every: 5, distribution: uniform", 0),
    ("iterative, rounds: 2, rate: 0.5, epochs: 1", 2),
])
def test_scheduled_stage_runs(tmp_path, stage, rounds):
    recipe = recipes.parse(RECIPE % stage)
    metrics = runner.run(recipe, tmp_path, quiet=True)
    names = [s["name"] for s in metrics["stages"]]
    assert names[0] == "dense" and len(names) == 2 + rounds
    masks = sc.masks(sc.load(tmp_path / "model.safetensors"))
    pruned = sum(int((~m).sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
    assert pruned == pytest.approx(0.7 if rounds == 0 else 0.75, abs=0.01)
    assert json.loads((tmp_path / "metrics.json").read_text())["stages"] == metrics["stages"]
    if rounds:
        assert (tmp_path / "stage-1-rounds" / "round-2.safetensors").is_file()


def test_iterative_rounds_of_another_recipe_are_not_resumed(tmp_path):
    first = recipes.parse(RECIPE % "iterative, rounds: 2, rate: 0.5, epochs: 1")
    runner.run(first, tmp_path, quiet=True)
    again = runner.run(first, tmp_path, quiet=True)  # the same recipe: both rounds are reused
    assert [s["name"] for s in again["stages"]][1:3] == ["iterative 1: round 1", "iterative 1: round 2"]
    changed = recipes.parse(RECIPE % "iterative, rounds: 2, rate: 0.2, epochs: 1")
    metrics = runner.run(changed, tmp_path, quiet=True)  # another rate: the old rounds must not be taken
    masks = sc.masks(sc.load(tmp_path / "model.safetensors"))
    pruned = sum(int((~m).sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
    assert pruned == pytest.approx(1 - 0.8 ** 2, abs=0.01)  # 36%, not the first recipe's 75%
    assert metrics["final"]["sparsity"] == pytest.approx(0.36, abs=0.01)


def test_l0_stage_closes_gates_and_masks_rows(tmp_path):
    recipe = recipes.parse(RECIPE % "l0, epochs: 2, l0_weight: 0.05")
    metrics = runner.run(recipe, tmp_path, quiet=True)
    assert metrics["stages"][-1]["name"] == "l0 1"
    masks = sc.masks(sc.load(tmp_path / "model.safetensors"))
    rows = masks["fc1.weight"]
    closed = ~rows.any(dim=1)
    assert int(closed.sum()) > 0  # some neurons were switched off by their gates
    assert bool((rows[~closed]).all())  # the rest are whole rows


def test_runtime_stage_gates_convs_reports_flops_and_reloads(tmp_path):
    recipe = recipes.parse("model: lenet-5\ndata: mnist\ntrain: {epochs: 1}\n"
                           "prune:\n  - {schedule: runtime, keep: 0.5, epochs: 1}\n")
    metrics = runner.run(recipe, tmp_path, quiet=True)
    stage = metrics["stages"][1]
    assert stage["name"].startswith("runtime 1: 2 gated convs")
    assert 0 < stage["flops_per_input"] < stage["flops_per_input_dense"]
    assert stage["accuracy"] > 0.5
    again = sc.load(tmp_path / "model.safetensors")  # the wrapping is replayed on a fresh lenet-5
    assert isinstance(again.conv1, sc.RuntimeGate) and again.conv1.keep == 0.5
    with pytest.raises(recipes.RecipeError, match="runtime"):
        recipes.parse("model: lenet-5\ndata: mnist\nexport: {compact: true}\n"
                      "prune:\n  - {schedule: runtime, epochs: 1}\n  - {sparsity: 0.5, granularity: channel}\n")


def test_train_hands_its_optimizer_over():
    import torch
    from torch.utils.data import TensorDataset

    from secateurs.training import train

    seen = []
    net = torch.nn.Sequential(torch.nn.Linear(4, 3))
    data = TensorDataset(torch.randn(16, 4), torch.randint(0, 3, (16,)))
    train(net, data, epochs=1, progress=False, on_optimizer=seen.append)
    assert len(seen) == 1 and isinstance(seen[0], torch.optim.Adam)
    assert seen[0].state  # the very optimizer that trained the model
