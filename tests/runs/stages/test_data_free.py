"""The data-free stage: method merge (default, old recipes keep their meaning) or fold."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from secateurs import zoo
from secateurs.runs import recipes, stages

RECIPE = "model: mlp\nmodel_args: {widths: [16]}\ndata: digits\nprune:\n  - {criterion: data-free, amount: 0.5%s}\n"


def test_method_defaults_to_merge_and_fold_runs(tmp_path) -> None:
    assert recipes.parse(RECIPE % "").prune[0].method == "merge"
    recipe = recipes.parse(RECIPE % ", method: fold")
    ds = zoo.dataset("digits")
    test = TensorDataset(*(t[:64] for t in ds.test.tensors))
    torch.manual_seed(0)
    model = zoo.model("mlp", in_features=64, widths=[16])
    ctx = stages.StageContext(recipe, 1, model, tmp_path, train_data=test, test_data=test, quiet=True)
    new, rows = recipe.prune[0].run(ctx)
    assert new.fc1.out_features == 8 and rows[0]["name"].startswith("fold 1: data-free")


@pytest.mark.parametrize("extra, words", [(", method: fold, scaled: true", "neither scaled nor layers"),
                                          (", method: squash", "method")])
def test_bad_method_settings_name_the_key(extra: str, words: str) -> None:
    with pytest.raises(recipes.RecipeError, match=words):
        recipes.parse(RECIPE % extra)
