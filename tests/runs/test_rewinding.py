"""Rewinding after a stage that changed the architecture: the initial weights follow the surgery."""

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.runs import recipes, runner
from secateurs.runs.rewinding import carried
from secateurs.surgery.records import SURGERY_ATTR
from secateurs.training.schedules import rewind, snapshot


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))


def test_initial_weights_follow_a_merge_unit_by_unit():
    model = _mlp()
    init = snapshot(model)
    merged = sc.merge_neurons(model, amount=0.5).model
    state = carried(init, model, merged)
    rows = getattr(merged, SURGERY_ATTR)[-1]["0"]["rows"]
    assert state["0.weight"].shape == merged[0].weight.shape == (6, 6)
    assert torch.equal(state["0.weight"], init["0.weight"][rows])  # each surviving neuron: its own start
    assert torch.equal(state["2.weight"], init["2.weight"][:, rows])
    rewind(merged, state)  # fits now
    assert carried(init, model, model) is init  # nothing changed: the same state


def test_shapes_that_no_record_explains_are_one_clear_error():
    model, other = _mlp(), nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    with pytest.raises(sc.PruningError, match=r"do not fit the model after its surgery \(0.weight"):
        carried(snapshot(model), model, other)
    with pytest.raises(sc.PruningError, match="cannot rewind 0.weight"):
        rewind(other, snapshot(model))


def test_a_merge_stage_then_iterative_with_rewind_init_runs(tmp_path):
    recipe = recipes.parse("""\
model: mlp
model_args: {widths: [32]}
data: digits
train: {epochs: 1}
prune:
  - {criterion: data-free, amount: 0.25}
  - {schedule: iterative, rounds: 1, rate: 0.5, epochs: 1, rewind: init}
""")
    metrics = runner.run(recipe, tmp_path, quiet=True)  # was an internal error: pre-merge weights, smaller layers
    assert [s["name"] for s in metrics["stages"]][-1] == "iterative 2"
    assert sc.load(tmp_path / "model.safetensors").fc1.weight.shape[0] == 24
