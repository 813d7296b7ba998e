"""Recipes: YAML validated before anything runs; errors name the key and its line."""

from __future__ import annotations

import re

import pytest

from secateurs import PruningError
from secateurs.runs import recipes
from secateurs.runs.recipes import RecipeError, parse


def _line(message: str) -> int:
    found = re.search(r"\bline (\d+)\b", message)
    assert found, f"no line number in {message!r}"
    return int(found.group(1))


def _error(text: str) -> str:
    with pytest.raises(RecipeError) as info:
        parse(text)
    return str(info.value)


def test_recipe_error_is_a_pruning_error_and_a_value_error() -> None:
    assert issubclass(RecipeError, PruningError)
    assert issubclass(RecipeError, ValueError)


def test_demo_recipe_parses() -> None:
    r = parse(recipes.DEMO, "demo recipe")
    assert r.model == "lenet-300-100" and r.data == "mnist"
    assert r.train.epochs == 10 and r.train.lr == pytest.approx(1e-3)
    assert len(r.prune) == 1
    stage = r.prune[0]
    assert (stage.sparsity, stage.criterion, stage.scope) == (0.9, "magnitude", "global")
    assert stage.finetune is not None and stage.finetune.epochs == 5
    assert r.report is True


def test_defaults_do_nothing_surprising() -> None:
    r = parse("model: mlp\n")
    assert r.data is None and r.train.epochs == 0 and r.prune == [] and r.model_args == {}


def test_load_reads_a_file(tmp_path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("model: mlp\nmodel_args: {widths: [8, 4]}\ndata: digits\nprune:\n  - {sparsity: 0.25}\n")
    r = recipes.load(path)
    assert r.model_args == {"widths": [8, 4]} and r.prune[0].sparsity == 0.25


def test_load_of_a_missing_file_is_a_recipe_error(tmp_path) -> None:
    with pytest.raises(RecipeError, match="nope.yaml"):
        recipes.load(tmp_path / "nope.yaml")


def test_unknown_top_level_key_names_key_and_line() -> None:
    msg = _error("model: mlp\ndata: digits\n\ntrian: {epochs: 1}\n")
    assert "trian" in msg and "unknown key" in msg
    assert _line(msg) == 4


def test_unknown_key_inside_a_prune_stage_names_key_and_line() -> None:
    text = ("# comment line\n"
            "model: mlp\n"
            "data: digits\n"
            "prune:\n"
            "  - {sparsity: 0.5}\n"
            "  - sparsity: 0.8\n"
            "    criterion: magnitude\n"
            "    sparsty: 0.9\n")
    msg = _error(text)
    assert "prune.1.sparsty" in msg and "unknown key" in msg
    assert _line(msg) == 8


def test_unknown_key_inside_finetune_names_key_and_line() -> None:
    msg = _error("model: mlp\ndata: digits\nprune:\n  - sparsity: 0.5\n    finetune:\n      epochs: 1\n"
                 "      learning_rate: 0.1\n")
    assert "learning_rate" in msg
    assert _line(msg) == 7


@pytest.mark.parametrize(
    ("stage", "words", "line"),
    [
        ("sparsity: 1.5", ["prune.0.sparsity", "1.5"], 4),
        ("sparsity: -0.1", ["prune.0.sparsity"], 4),
        ("sparsity: 1.0", ["prune.0.sparsity"], 4),
        ("sparsity: 0.5\n    criterion: nope", ["prune.0.criterion", "nope", "magnitude", "random"], 5),
        ("sparsity: 0.5\n    scope: wide", ["prune.0.scope", "global", "local"], 5),
        ("sparsity: 0.5\n    granularity: bricks", ["prune.0.granularity"], 5),
    ],
)
def test_bad_stage_values_are_recipe_errors(stage: str, words: list[str], line: int) -> None:
    msg = _error("model: mlp\ndata: digits\nprune:\n  - " + stage + "\n")
    for word in words:
        assert word in msg, (word, msg)
    assert _line(msg) == line


def test_good_stage_values_are_accepted() -> None:
    r = parse("model: mlp\nprune:\n  - {sparsity: 0.0, criterion: random, scope: local}\n  - {sparsity: 0.99}\n")
    assert [s.sparsity for s in r.prune] == [0.0, 0.99]
    assert (r.prune[0].criterion, r.prune[0].scope) == ("random", "local")


def test_missing_sparsity_in_a_stage_is_an_error() -> None:
    msg = _error("model: mlp\nprune:\n  - {criterion: magnitude}\n")
    assert "sparsity" in msg


@pytest.mark.parametrize(
    ("text", "key", "line"),
    [
        ("model: mlp\ndata: digits\ntrain:\n  epochs: -1\n", "train.epochs", 4),
        ("model: mlp\ndata: digits\nprune:\n  - sparsity: 0.5\n    finetune: {epochs: -2}\n",
         "prune.0.finetune.epochs", 5),
        ("model: mlp\ndata: digits\ntrain: {epochs: 1, lr: 0}\n", "train.lr", 3),
    ],
)
def test_negative_epochs_and_bad_numbers_are_errors(text: str, key: str, line: int) -> None:
    msg = _error(text)
    assert key in msg
    assert _line(msg) == line


def test_training_without_data_is_an_error() -> None:
    msg = _error("model: mlp\ntrain: {epochs: 2}\n")
    assert "data" in msg


def test_finetuning_without_data_is_an_error() -> None:
    msg = _error("model: mlp\nprune:\n  - sparsity: 0.5\n    finetune: {epochs: 1}\n")
    assert "data" in msg


def test_no_training_needs_no_data() -> None:
    assert parse("model: mlp\ntrain: {epochs: 0}\nprune:\n  - {sparsity: 0.5}\n").data is None


@pytest.mark.parametrize("written", ["1e-3", "1.0e-3", "0.001", "1E-3"])
def test_scientific_notation_is_a_float(written: str) -> None:
    # YAML 1.1 (PyYAML) reads "1e-3" as a string; a recipe must still accept it.
    r = parse(f"model: mlp\ndata: digits\ntrain: {{epochs: 1, lr: {written}}}\n"
              f"prune:\n  - sparsity: 0.5\n    finetune: {{epochs: 1, lr: {written}}}\n")
    assert isinstance(r.train.lr, float) and r.train.lr == pytest.approx(1e-3)
    assert r.prune[0].finetune.lr == pytest.approx(1e-3)


@pytest.mark.parametrize("text", ["model: [mlp\n", "model: mlp\n  data: x\n bad", "model: {a: 1\n"])
def test_malformed_yaml_is_a_recipe_error(text: str) -> None:
    msg = _error(text)
    assert "YAML" in msg


@pytest.mark.parametrize("text", ["", "- model: mlp\n", "just a string\n"])
def test_a_recipe_must_be_a_mapping(text: str) -> None:
    assert "model" in _error(text)


def test_missing_model_is_an_error() -> None:
    assert "model" in _error("data: digits\n")


def test_data_free_stage():
    r = recipes.parse("model: lenet-300-100\nprune:\n  - {criterion: data-free, amount: auto, scaled: true}\n")
    assert r.prune[0].amount == "auto" and r.prune[0].scaled and "sparsity" not in r.prune[0].model_dump()
    with pytest.raises(recipes.RecipeError, match="line 3: prune.0: criterion data-free needs amount"):
        recipes.parse("model: lenet-300-100\nprune:\n  - {criterion: data-free}\n")
    with pytest.raises(recipes.RecipeError, match="needs sparsity"):
        recipes.parse("model: lenet-300-100\nprune:\n  - {criterion: magnitude}\n")
    with pytest.raises(recipes.RecipeError, match="amount"):
        recipes.parse("model: lenet-300-100\nprune:\n  - {criterion: data-free, amount: 1.5}\n")


def test_schedule_stages_validate():
    r = recipes.parse("model: mlp\ndata: digits\npenalty: {kind: group_lasso, weight: 1.0e-5}\nprune:\n"
                      "  - {schedule: gradual, sparsity: 0.9, epochs: 3, every: 20}\n"
                      "  - {schedule: iterative, rounds: 3, rate: 0.2, rewind: 10, epochs: 1}\n"
                      "  - {schedule: set, sparsity: 0.9, epochs: 2, distribution: uniform}\n")
    assert [s.schedule for s in r.prune] == ["gradual", "iterative", "set"]
    assert r.penalty is not None and r.penalty.kind == "group_lasso"
    with pytest.raises(recipes.RecipeError, match="needs epochs"):
        recipes.parse("model: mlp\ndata: digits\nprune:\n  - {schedule: rigl, sparsity: 0.9}\n")
    with pytest.raises(recipes.RecipeError, match="line 4: prune.0: schedule gradual needs sparsity"):
        recipes.parse("model: mlp\ndata: digits\nprune:\n  - {schedule: gradual, epochs: 2}\n")
    with pytest.raises(recipes.RecipeError, match="needs data"):
        recipes.parse("model: mlp\nprune:\n  - {schedule: gradual, sparsity: 0.5, epochs: 2}\n")
    with pytest.raises(recipes.RecipeError, match="penalty.kind"):
        recipes.parse("model: mlp\ndata: digits\npenalty: {kind: l3}\n")
