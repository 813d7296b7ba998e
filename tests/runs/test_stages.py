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


# ---------------------------------------------------------------- stage kinds in recipes

ALL_KINDS = """\
model: mlp
data: digits
prune:
  - {sparsity: 0.5, criterion: snip, scope: local, granularity: neuron, layers: {fc1: 0.3}, finetune: {epochs: 1}}
  - {criterion: data-free, amount: auto, scaled: true}
  - {schedule: gradual, sparsity: 0.9, epochs: 3, every: 20}
  - {schedule: rigl, sparsity: 0.9, epochs: 2, distribution: uniform, alpha: 0.2}
  - {schedule: l0, epochs: 2, l0_weight: 0.05}
  - {schedule: iterative, rounds: 3, rate: 0.2, rewind: 10, epochs: 1}
"""

MORE_KINDS = """\
model: lenet-5
data: mnist
prune:
  - {schedule: movement, sparsity: 0.7, epochs: 1, every: 5, granularity: channel, min_density: 0.1}
  - {schedule: set, sparsity: 0.7, epochs: 1, every: 5, distribution: uniform, seed: 3}
  - {schedule: runtime, keep: 0.25, epochs: 2, layers: {conv1: null}}
  - {schedule: oneshot, criterion: data-free, amount: 0.3}
"""


@pytest.mark.parametrize("text, keys", [
    (RECIPE % "iterative, rounds: 2, rate: 0.5, epochs: 1", ["5b646577478373d5", "1807a59d3c762043"]),
    (ALL_KINDS, ["afd0cb0db308994b", "df4b44747396c926", "78c04936e0beea66", "a566814859397629",
                 "e0a38654ddb1845a", "7317cded8332ba3a", "90a6e0d9883b27d0"]),
    (MORE_KINDS, ["a56c6bf35de6648a", "94f8c37c37ddc8bf", "8a50b1d4ae8b2551", "9959ab33eca86a1c",
                  "f722bdff8c3dbd04"]),
    (recipes.DEMO, ["9672799a1588e8d2", "092088b47768369a"]),
])
def test_recipe_keys_are_those_of_the_single_stage_model(text, keys):
    # computed before stage kinds existed: saved dense models and iterative rounds are still reused
    r = recipes.parse(text)
    assert [recipes.key(r, stages=i) for i in range(len(r.prune) + 1)] == keys


def test_stages_are_read_as_their_kind():
    r = recipes.parse(ALL_KINDS)
    kinds = [type(s).__name__ for s in r.prune]
    assert kinds == ["OneShot", "DataFree", "Gradual", "RigL", "L0", "Iterative"]
    assert all(isinstance(s, recipes.Stage) for s in r.prune)
    assert type(recipes.parse(MORE_KINDS).prune[-1]).__name__ == "DataFree"  # schedule: oneshot + data-free
    assert r.prune[1].schedule == "oneshot" and r.prune[1].criterion == recipes.DATA_FREE


def test_the_stages_of_the_guide_and_the_design_parse():
    text = ("model: lenet-300-100\ndata: mnist\ntrain: {epochs: 20, lr: 1e-3}\nprune:\n"
            "  - sparsity: 0.9\n    criterion: magnitude\n    scope: global\n    granularity: unstructured\n"
            "    layers: {fc3: 0.5}\n    min_density: 0.0\n    seed: 0\n    calibration_batches: 8\n"
            "    schedule: oneshot\n    finetune: {epochs: 5, lr: 5.0e-4, batch_size: 64, weight_decay: 0}\n"
            "  - {criterion: data-free, amount: auto, scaled: false}\n"
            "  - {schedule: gradual, sparsity: 0.95, epochs: 10, every: 50}\n"
            "  - {schedule: movement, sparsity: 0.9, epochs: 10, every: 50}\n"
            "  - {schedule: l0, epochs: 5, l0_weight: 1.0e-3, l0_lr: 0.1}\n"
            "  - {schedule: runtime, keep: 0.5, epochs: 3}\n"
            "  - {schedule: iterative, rounds: 5, rate: 0.2, rewind: init, epochs: 3}\n"
            "  - {schedule: rigl, sparsity: 0.9, epochs: 10, every: 100, alpha: 0.3, distribution: erk}\n"
            "  - {sparsity: 0.9, criterion: magnitude, scope: global, finetune: {epochs: 5}}\n"
            "  - {schedule: rigl, sparsity: 0.9, epochs: 20}\n"
            "penalty: {kind: l1, weight: 1.0e-5}\nexport: {format: safetensors, compact: false}\nreport: true\n")
    assert [s.name for s in recipes.parse(text).prune] == [
        "oneshot", "data-free", "gradual", "movement", "l0", "runtime", "iterative", "rigl", "oneshot", "rigl"]


@pytest.mark.parametrize("stage, words, line", [
    ("{sparsity: 1.5}", ["prune.0.sparsity", "1.5"], 4),
    ("{schedule: gradual, sparsity: 0.5, epochs: 1,\n     every: 0}", ["prune.0.every", "greater than or equal to 1"], 5),
    ("{sparsity: 0.5, rounds: 3}", ["prune.0.rounds", "unknown key for schedule oneshot", "sparsity"], 4),
    ("{criterion: data-free, amount: 0.5, sparsity: 0.5}", ["prune.0.sparsity", "unknown key for criterion data-free"], 4),
    ("{schedule: sometimes}", ["prune.0.schedule", "'sometimes'", "gradual", "rigl"], 4),
    ("0.5", ["prune.0", "mapping", "0.5"], 4),
    ("{sparsity: 0.5, criterion: movement}", ["prune.0.criterion", "schedule: movement", "sc.Movement"], 4),
    ("{schedule: gradual, sparsity: 0.5, epochs: 1, criterion: data-free}", ["prune.0.criterion", "runs once"], 4),
    ("{schedule: rigl, sparsity: 0.5, epochs: 1, distribution: even}", ["prune.0.distribution", "erk", "uniform"], 4),
    ("{schedule: movement, sparsity: 0.5, epochs: 1, criterion: magnitude}", ["prune.0.criterion", "unknown key"], 4),
])
def test_stage_errors_name_the_key_the_value_and_the_line(stage, words, line):
    with pytest.raises(recipes.RecipeError) as info:
        recipes.parse(f"model: mlp\ndata: digits\nprune:\n  - {stage}\n")
    msg = str(info.value)
    for word in words:
        assert word in msg, (word, msg)
    assert f"line {line}:" in msg, msg


def test_penalty_kinds_and_distributions_come_from_their_modules():
    from secateurs.allocation import DISTRIBUTIONS
    from secateurs.training.regularizers import PENALTIES

    for kind in PENALTIES:
        assert recipes.parse(f"model: mlp\npenalty: {{kind: {kind}}}\n").penalty.kind == kind
    for d in DISTRIBUTIONS:
        stage = f"{{schedule: set, sparsity: 0.5, epochs: 1, distribution: {d}}}"
        assert recipes.parse(f"model: mlp\ndata: digits\nprune:\n  - {stage}\n").prune[0].distribution == d


def test_finetune_after_a_stage_that_trains_while_pruning(tmp_path):
    recipe = recipes.parse(RECIPE % "gradual, sparsity: 0.5, epochs: 1, every: 5, finetune: {epochs: 1}")
    names = [s["name"] for s in runner.run(recipe, tmp_path, quiet=True)["stages"]]
    assert names == ["dense", "gradual 1", "finetune 1: 1 epochs"]


def test_latency_stage_prunes_to_a_measured_latency_and_reports_it(tmp_path):
    """A real, tiny measurement: the row carries what was measured (its value is not asserted: timings vary)."""
    recipe = recipes.parse("model: mlp\nmodel_args: {widths: [32]}\nprune:\n"
                           "  - {latency: 0.7, granularity: neuron, batch_size: 2, round_to: 2}\n")
    metrics = runner.run(recipe, tmp_path, quiet=True)
    row = metrics["stages"][1]
    assert row["name"] == "prune 1: magnitude latency 0.7" and row["latency_target"] == 0.7
    assert row["latency"] > 0 and row["latency_spread"] >= 0 and row["round_to"] == 2
    assert isinstance(row["latency_met"], bool) and row["sparsity"] > 0


@pytest.mark.parametrize("stage, words", [
    ("{sparsity: 0.5, latency: 0.5, granularity: channel}", "needs sparsity or latency"),
    ("{latency: 0.5}", "need granularity channel"),
    ("{sparsity: 0.5, round_to: 8}", "need granularity channel"),
    ("{latency: 1.5, granularity: channel}", "less than or equal to 1"),
    ("{sparsity: 0.5, granularity: channel, round_to: 0}", "round_to must be"),
    ("{sparsity: 0.5, hidden: true}", "hidden needs granularity channel"),
    ("{latency: 0.5, granularity: channel, hidden: true}", "hidden needs .* with latency"),
])
def test_latency_and_round_to_errors(stage, words):
    with pytest.raises(recipes.RecipeError, match=words):
        recipes.parse(f"model: mlp\ndata: digits\nprune:\n  - {stage}\n")
