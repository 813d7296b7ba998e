"""Choosing layers: patterns, exclusions, tied and empty weights (secateurs.layers)."""

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.layers import assign, include, matches, resolve_layers, select


def test_tied_weights_share_one_mask():
    a, b = nn.Linear(4, 4), nn.Linear(4, 4)
    b.weight = a.weight
    net = nn.Sequential(a, nn.ReLU(), b)
    r = sc.prune(net, 0.5)
    assert [row.name for row in r.layers] == ["0.weight"]  # one weight, counted once
    masks = sc.masks(net)
    assert set(masks) == {"0.weight", "2.weight"} and masks["0.weight"] is masks["2.weight"]
    sc.finalize(net)
    assert net[0].weight is net[2].weight and int((net[0].weight == 0).sum()) == 8


def test_empty_layers_are_skipped():
    net = nn.Sequential(nn.Linear(0, 4), nn.Linear(4, 2))
    r = sc.prune(net, 0.5)
    assert [row.name for row in r.layers] == ["1.weight"]


def test_patterns_match_module_and_weight_names_last_one_wins():
    assert matches("fc*", "fc3") and matches("fc3.weight", "fc3") and not matches("fc1", "fc3")
    got = assign(["fc1", "fc2", "head"], {"fc*": 0.5, "fc2": 0.9, "head.weight": None}, 0.1)
    assert got == {"fc1": (0.5, True), "fc2": (0.9, True)}
    assert assign(["a", "b"], None, 0.3) == {"a": (0.3, False), "b": (0.3, False)}


@pytest.mark.parametrize(
    ("layers", "match"),
    [
        ({"fc9": 0.5}, "layers pattern 'fc9' matches no prunable layer; prunable layers are: fc1, fc2"),
        (["fc1"], "layers must be a dict of name or pattern -> sparsity or None"),
        ({3: 0.5}, "layers keys must be names or glob patterns, got 3"),
    ],
)
def test_assign_names_what_is_wrong(layers, match):
    with pytest.raises(sc.PruningError, match=match):
        assign(["fc1", "fc2"], layers, 0.0)


def test_assign_checks_values_and_names_the_candidates_kind():
    with pytest.raises(sc.PruningError, match=r"layers\['\*'\] must be in \[0, 1\)"):
        resolve_layers(nn.Sequential(nn.Linear(2, 2)), {"0": 0.5, "*": 1.5}, 0.0)
    with pytest.raises(sc.PruningError, match="matches no mergeable layer; mergeable layers are: a"):
        assign(["a"], {"b": 0.5}, 0.0, kind="mergeable layer", value="amount")


def test_include_reads_names_lists_and_dicts_as_which_layers():
    assert include(None) is None
    assert include("fc1") == {"*": None, "fc1": 0.0}
    assert include(["fc1", "fc2"]) == {"*": None, "fc1": 0.0, "fc2": 0.0}
    assert include({"fc1": 0.9, "fc2": None}) == {"fc1": 0.0, "fc2": None}  # any value includes


def test_select_returns_the_chosen_prunable_layers_in_model_order():
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 3), nn.Linear(3, 1))
    assert [n for n, _ in select(net, None)] == ["0", "2", "3"]
    assert [n for n, _ in select(net, ["3", "0"])] == ["0", "3"]
    assert [n for n, _ in select(net, {"2": None})] == ["0", "3"]
    with pytest.raises(sc.PruningError, match="matches no prunable layer"):
        select(net, "fc")
    assert all(isinstance(m, nn.Linear) for _, m in select(net, None))


def test_params_prunes_any_named_parameter_as_torch_prune_allows():
    net = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4))
    r = sc.prune(net, 0.5, params=["0.weight", "*.bias"], scope="local")
    assert [row.name for row in r.layers] == ["0.weight", "1.weight", "1.bias"]
    assert [int((~m).sum()) for m in sc.masks(net).values()] == [20, 8, 2]
    with pytest.raises(sc.PruningError, match="params pattern 'nope.*' matches no parameter of Sequential"):
        sc.prune(net, 0.5, params=["nope.*"])


def test_multihead_attention_in_proj_weight_is_prunable_by_default():
    net = nn.Sequential(nn.MultiheadAttention(8, 2))
    r = sc.prune(net, 0.5, scope="local")
    assert [row.name for row in r.layers] == ["0.in_proj_weight", "0.out_proj.weight"]
    assert int((~sc.masks(net)["0.in_proj_weight"]).sum()) == 96
    x = torch.randn(3, 1, 8)
    out = net[0](x, x, x)[0]
    assert out.shape == (3, 1, 8)


def test_layers_patterns_name_a_tensor_or_its_module():
    net = nn.Sequential(nn.MultiheadAttention(8, 2))
    r = sc.prune(net, 0.5, layers={"0": None})  # the module name excludes its in_proj_weight too
    assert [row.name for row in r.layers] == ["0.out_proj.weight"]
