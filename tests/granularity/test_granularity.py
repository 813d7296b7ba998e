"""Granularities of sc.prune: parsing, N:M, blocks, channels, and every granularity × scope."""

import math
import re
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import secateurs as sc
from secateurs import granularity as gran


def _removed(p: float, n: int) -> int:
    """Entries removed for sparsity ``p`` of ``n``: the product rounded half up, never all for ``p < 1``
    (as documented)."""
    removed = int(math.floor(p * n + 0.5))
    return min(removed, n - 1) if p < 1 and n else removed


def _set(layer: nn.Module, values) -> nn.Module:
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(values, dtype=torch.float32).reshape(layer.weight.shape))
    return layer


def _rows_pruned(mask: torch.Tensor) -> torch.Tensor:
    """Bool per output unit: the whole row/filter is pruned."""
    return ~mask.reshape(mask.shape[0], -1).any(dim=1)


def _is_row_structured(mask: torch.Tensor) -> bool:
    rows = mask.reshape(mask.shape[0], -1)
    return bool((rows.all(dim=1) | ~rows.any(dim=1)).all())


def _nm_groups(mask: torch.Tensor, m: int) -> torch.Tensor:
    """(groups, m): m consecutive entries along the input dimension at each other position."""
    return mask.movedim(1, -1).reshape(-1, m)


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "value, expected",
    [
        ("unstructured", gran.Unstructured()),
        ("block", gran.Block(4, 4)),
        ("block:2x3", gran.Block(2, 3)),
        ((2, 3), gran.Block(2, 3)),
        ("2:4", gran.NM(2, 4)),
        ("1:3", gran.NM(1, 3)),
    ],
)
def test_parse_names(value, expected):
    got = gran.parse(value)
    assert type(got) is type(expected)
    assert got == expected


def test_parse_block_and_nm_properties():
    b = gran.parse("block:2x3")
    assert (b.rows, b.cols, b.name, b.structured) == (2, 3, "block:2x3", True)
    assert gran.parse((2, 3)).name == "block:2x3"
    nm = gran.parse("1:3")
    assert (nm.n, nm.m, nm.name, nm.fixed_pattern) == (1, 3, "1:3", True)
    assert nm.sparsity == pytest.approx(2 / 3, abs=1e-15)
    assert gran.parse("2:4").sparsity == 0.5
    u = gran.parse("unstructured")
    assert (u.structured, u.fixed_pattern) == (False, False)


@pytest.mark.parametrize("name", ["neuron", "channel", "filter"])
def test_parse_channel_synonyms(name):
    g = gran.parse(name)
    assert type(g) is gran.Channels
    assert g.structured and not g.fixed_pattern
    assert g.name == name


def test_parse_passes_instances_through():
    g = gran.NM(3, 8)
    assert gran.parse(g) is g


@pytest.mark.parametrize(
    "bad",
    ["3:2", "0:4", "4:4", "block:0x2", "block:2x0", "block:2x", "octagon", "", 5, 2.5, None,
     (0, 2), (2, 3, 4), (2, -1)],
)
def test_bad_granularity_raises_naming_the_value(bad):
    with pytest.raises(sc.PruningError, match=re.escape(repr(bad))):
        gran.parse(bad)
    net = nn.Sequential(nn.Linear(8, 8))
    with pytest.raises(sc.PruningError, match=re.escape(repr(bad))):
        sc.prune(net, 0.5, granularity=bad)
    assert sc.masks(net) == {}


def test_bad_granularity_is_a_value_error():
    with pytest.raises(ValueError):
        gran.parse("octagon")


def test_unknown_granularity_lists_the_allowed_values():
    with pytest.raises(sc.PruningError, match="allowed: unstructured, neuron, channel, filter"):
        gran.parse("octagon")


def test_bool_block_size_is_rejected():
    # (True, 2) is not a block size; bools are ints in Python, so they need an explicit check
    with pytest.raises(sc.PruningError):
        gran.parse((True, 2))


# --------------------------------------------------------------------------- N:M


@st.composite
def _nm_case(draw):
    m = draw(st.integers(2, 6))
    n = draw(st.integers(1, m - 1))
    ins = m * draw(st.integers(1, 4))
    hidden = m * draw(st.integers(1, 3))
    outs = draw(st.integers(1, 5))
    scope = draw(st.sampled_from(["global", "local"]))
    criterion = draw(st.sampled_from(["magnitude", "random"]))
    seed = draw(st.integers(0, 2**16))
    return n, m, ins, hidden, outs, scope, criterion, seed


@settings(max_examples=30, deadline=None)
@given(_nm_case())
def test_nm_linear_every_group_has_exactly_n(case):
    n, m, ins, hidden, outs, scope, criterion, seed = case
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(ins, hidden), nn.ReLU(), nn.Linear(hidden, outs))
    weights = {k: v.detach().clone() for k, v in net.state_dict().items() if k.endswith("weight")}
    r = sc.prune(net, 1 - n / m, granularity=f"{n}:{m}", scope=scope, criterion=criterion, seed=seed)
    masks = sc.masks(net)
    assert set(masks) == {"0.weight", "2.weight"}
    for name, mask in masks.items():
        groups = _nm_groups(mask, m)
        assert torch.equal(groups.sum(dim=1), torch.full((groups.shape[0],), n))
        assert int((~mask).sum()) == mask.numel() * (m - n) // m
        if criterion == "magnitude":  # the kept entries are the n largest |w| of their group
            w = _nm_groups(weights[name].abs(), m)
            kept_min = torch.where(groups, w, torch.inf).min(dim=1).values
            pruned_max = torch.where(groups, -torch.inf, w).max(dim=1).values
            assert bool((kept_min >= pruned_max).all())
    expected = (m - n) / m
    for row in r.layers:
        assert (row.params - row.nonzero) / row.params == pytest.approx(expected, abs=1e-12)
    assert r.sparsity == pytest.approx(expected, abs=1e-12)
    assert sc.sparsity(net) == pytest.approx(expected, abs=1e-6)


@settings(max_examples=20, deadline=None)
@given(
    st.integers(2, 4).flatmap(lambda m: st.tuples(st.just(m), st.integers(1, m - 1))),
    st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3),
    st.sampled_from(["global", "local"]), st.sampled_from(["magnitude", "random"]), st.integers(0, 2**16),
)
def test_nm_conv_groups_run_along_input_channels(nm, k_in, out, kh, kw, scope, criterion, seed):
    m, n = nm
    torch.manual_seed(seed)
    conv = nn.Conv2d(m * k_in, out, (kh, kw))
    w = conv.weight.detach().clone()
    sc.prune(nn.Sequential(conv), 1 - n / m, granularity=f"{n}:{m}", scope=scope, criterion=criterion, seed=seed)
    mask = sc.masks(conv)["weight"]
    by_in = mask.permute(0, 2, 3, 1).reshape(-1, m)  # (out, kh, kw, in) -> groups of m along in
    assert torch.equal(by_in.sum(dim=1), torch.full((by_in.shape[0],), n))
    if criterion == "magnitude":
        a = w.abs().permute(0, 2, 3, 1).reshape(-1, m)
        kept_min = torch.where(by_in, a, torch.inf).min(dim=1).values
        pruned_max = torch.where(by_in, -torch.inf, a).max(dim=1).values
        assert bool((kept_min >= pruned_max).all())


def test_nm_conv_hand_example_groups_by_input_channel_not_flat_order():
    conv = nn.Conv2d(4, 1, (1, 2), bias=False)
    w = torch.zeros(1, 4, 1, 2)
    w[0, :, 0, 0] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    w[0, :, 0, 1] = torch.tensor([40.0, 30.0, 20.0, 10.0])
    _set(conv, w)
    sc.prune(conv, 0.5, granularity="2:4")
    mask = sc.masks(conv)["weight"]
    assert mask[0, :, 0, 0].tolist() == [False, False, True, True]
    assert mask[0, :, 0, 1].tolist() == [True, True, False, False]


def test_nm_keeps_the_n_largest_magnitudes():
    lin = _set(nn.Linear(8, 1, bias=False), [[0.5, -3.0, 2.0, 0.1, -0.2, 4.0, -1.0, 0.3]])
    sc.prune(lin, 0.5, granularity="2:4")
    assert sc.masks(lin)["weight"].tolist() == [[False, True, True, False, False, True, True, False]]
    assert lin.weight.tolist() == [[0.0, -3.0, 2.0, 0.0, 0.0, 4.0, -1.0, 0.0]]


def test_nm_one_of_four_keeps_the_largest():
    lin = _set(nn.Linear(8, 1, bias=False), [[0.5, -3.0, 2.0, 0.1, -0.2, 4.0, -1.0, 0.3]])
    sc.prune(lin, 0.75, granularity="1:4")
    assert sc.masks(lin)["weight"].tolist() == [[False, True, False, False, False, True, False, False]]


def test_nm_ties_prune_the_lower_index_first():
    lin = _set(nn.Linear(8, 1, bias=False), [[1.0, -1.0, 1.0, 2.0, 0.5, 0.5, -0.5, 0.5]])
    sc.prune(lin, 0.5, granularity="2:4")
    assert sc.masks(lin)["weight"].tolist() == [[False, False, True, True, False, False, True, True]]


def test_nm_layers_that_cannot_take_the_pattern_are_skipped_with_one_warning_naming_all():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 6, 1), nn.Conv2d(6, 4, 1), nn.Conv2d(4, 4, 1))
    with pytest.warns(UserWarning) as caught:
        result = sc.prune(net, 0.5, granularity="2:4")
    less = [w for w in caught if "less than asked" in str(w.message)]
    assert len(less) == 1
    assert "0.weight has 3 inputs" in str(less[0].message) and "2.weight has 6 inputs" in str(less[0].message)
    assert len(result.notes) == 2 and result.asked == 0.5
    assert set(sc.masks(net)) == {"1.weight", "3.weight"}


def test_nm_strict_lists_every_layer_that_cannot_take_the_pattern_and_leaves_no_masks():
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4))
    with pytest.raises(sc.PruningError, match=r"strict=True.*0\.weight has 6 inputs.*4\.weight has 6 inputs"):
        sc.prune(net, 0.5, granularity="2:4", strict=True)
    assert sc.masks(net) == {}
    assert sc.sparsity(net) == 0.0


def test_nm_no_layer_fits_is_an_error_naming_them():
    net = nn.Sequential(nn.Conv2d(6, 8, 3))  # 6*3*3 = 54 per filter, but 6 input channels
    with pytest.raises(sc.PruningError, match=r"no layer can take granularity.*0\.weight"):
        sc.prune(net, 0.5, granularity="2:4")
    assert sc.masks(net) == {}


@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.49, 0.75, 0.9])
def test_nm_sparsity_must_be_one_minus_n_over_m(sparsity):
    net = nn.Sequential(nn.Linear(8, 4))
    with pytest.raises(sc.PruningError, match=r"2:4.*0\.5"):
        sc.prune(net, sparsity, granularity="2:4")
    assert sc.masks(net) == {}


def test_nm_one_of_three_accepts_its_sparsity():
    net = nn.Sequential(nn.Linear(9, 4))
    r = sc.prune(net, 1 - 1 / 3, granularity="1:3")
    assert r.layers[0].nonzero == 12
    assert torch.equal(_nm_groups(sc.masks(net)["0.weight"], 3).sum(1), torch.ones(12, dtype=torch.long))


@pytest.mark.parametrize("scope", ["global", "local"])
def test_nm_compounds_with_an_earlier_unstructured_prune(scope):
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    w = {k: v.detach().clone() for k, v in net.state_dict().items() if k.endswith("weight")}
    sc.prune(net, 0.75, scope=scope)
    first = {k: v.clone() for k, v in sc.masks(net).items()}
    sc.prune(net, 0.5, granularity="2:4", scope=scope)
    second = sc.masks(net)
    fewer = 0
    for name in first:
        assert not bool((second[name] & ~first[name]).any()), "an earlier pruned entry came back"
        alive = _nm_groups(first[name], 4).sum(dim=1)
        kept = _nm_groups(second[name], 4).sum(dim=1)
        assert torch.equal(kept, alive.clamp(max=2))
        fewer += int((kept < 2).sum())
        # among the survivors of the first prune, the largest |w| are kept
        a = _nm_groups(w[name].abs(), 4)
        g1, g2 = _nm_groups(first[name], 4), _nm_groups(second[name], 4)
        kept_min = torch.where(g2, a, torch.inf).min(dim=1).values
        dropped_max = torch.where(g1 & ~g2, a, -torch.inf).max(dim=1).values
        assert bool((kept_min >= dropped_max).all())
    assert fewer > 0  # the example really has groups holding fewer than N


# --------------------------------------------------------------------------- blocks


def _tiles(mask: torch.Tensor, r: int, c: int) -> torch.Tensor:
    rows = mask.reshape(mask.shape[0], -1)
    return rows.reshape(rows.shape[0] // r, r, rows.shape[1] // c, c).transpose(1, 2).reshape(
        rows.shape[0] // r, rows.shape[1] // c, r * c
    )


def _constant_on_tiles(mask: torch.Tensor, r: int, c: int) -> bool:
    t = _tiles(mask, r, c)
    return bool((t.all(dim=2) | ~t.any(dim=2)).all())


@st.composite
def _block_case(draw):
    r = draw(st.integers(1, 4))
    c = draw(st.integers(1, 4))
    conv = draw(st.booleans())
    if conv:  # Conv2d (out, in, 1, k): rest = in * k, a multiple of c via in
        shape = (r * draw(st.integers(1, 3)), c * draw(st.integers(1, 2)), 1, draw(st.integers(1, 2)))
    else:
        shape = (r * draw(st.integers(1, 4)), c * draw(st.integers(1, 4)))
    second = (r * draw(st.integers(1, 3)), c * draw(st.integers(1, 3)))
    p = draw(st.floats(0.0, 0.95))
    scope = draw(st.sampled_from(["global", "local"]))
    granularity = draw(st.sampled_from(["tuple", "string"]))
    return r, c, shape, second, p, scope, granularity, draw(st.integers(0, 2**16))


def _layer(shape):
    if len(shape) == 4:
        return nn.Conv2d(shape[1], shape[0], shape[2:])
    return nn.Linear(shape[1], shape[0])


@settings(max_examples=40, deadline=None)
@given(_block_case())
def test_block_masks_are_constant_on_tiles_and_counts_are_exact(case):
    r, c, shape, second, p, scope, kind, seed = case
    torch.manual_seed(seed)
    model = nn.ModuleDict({"a": _layer(shape), "b": _layer(second)})
    g = (r, c) if kind == "tuple" else f"block:{r}x{c}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # layer collapse is allowed here
        sc.prune(model, p, granularity=g, scope=scope)
    masks = sc.masks(model)
    pruned_tiles = {}
    total_tiles = 0
    for name, mask in masks.items():
        assert _constant_on_tiles(mask, r, c)
        t = _tiles(mask, r, c)
        tiles = t.shape[0] * t.shape[1]
        total_tiles += tiles
        pruned_tiles[name] = int((~t.any(dim=2)).sum())
        assert int((~mask).sum()) == pruned_tiles[name] * r * c
        if scope == "local":
            assert pruned_tiles[name] == _removed(p, tiles)
    if scope == "global":
        assert sum(pruned_tiles.values()) == _removed(p, total_tiles)


@pytest.mark.parametrize("shape, block", [((6, 8), (4, 4)), ((8, 6), (4, 4)), ((4, 9), (2, 2)), ((4, 8), (3, 1))])
def test_block_shape_not_a_multiple_is_an_error_naming_the_layer(shape, block):
    net = nn.ModuleDict({"ok": nn.Linear(12, 12), "bad": nn.Linear(shape[1], shape[0])})
    with pytest.raises(sc.PruningError, match=r"bad\.weight is {}x{}.*block {}x{}".format(*shape, *block)):
        sc.prune(net, 0.5, granularity=block)
    assert sc.masks(net) == {}


def test_block_conv_rest_not_a_multiple_is_an_error():
    net = nn.Sequential(nn.Conv2d(3, 4, 3))  # 4 x 27 as a matrix
    with pytest.raises(sc.PruningError, match=r"0\.weight is 4x27"):
        sc.prune(net, 0.5, granularity="block:2x2")
    assert sc.masks(net) == {}


def test_block_tile_score_is_the_mean_not_the_max():
    # tiles of 2x2: left has mean 1.0 (max 1.0), right has mean 0.5 (max 1.7)
    lin = _set(nn.Linear(4, 2, bias=False), [[1.0, -1.0, 0.1, 0.1], [-1.0, 1.0, 0.1, -1.7]])
    sc.prune(lin, 0.5, granularity=(2, 2), scope="local")
    assert sc.masks(lin)["weight"].tolist() == [[True, True, False, False], [True, True, False, False]]


def test_block_groups_and_expand_by_hand():
    b = gran.Block(1, 2)
    scores = torch.tensor([[1.0, 3.0, 0.0, 2.0], [4.0, 4.0, 1.0, 0.0]])
    assert b.groups(scores).tolist() == [[2.0, 1.0], [4.0, 0.5]]
    keep = torch.tensor([[True, False], [False, True]])
    assert b.expand(keep, (2, 4)).tolist() == [[True, True, False, False], [False, False, True, True]]
    partly = torch.tensor([[True, False, False, False], [False, False, True, True]])
    assert b.group_keep(partly).tolist() == [[True, False], [False, True]]


# --------------------------------------------------------------------------- channels


@st.composite
def _channel_case(draw):
    conv = draw(st.booleans())
    outs = [draw(st.integers(1, 12)) for _ in range(2)]
    ins = [draw(st.integers(1, 6)) for _ in range(2)]
    p = draw(st.floats(0.0, 0.95))
    scope = draw(st.sampled_from(["global", "local"]))
    name = draw(st.sampled_from(["filter", "channel"] if conv else ["neuron", "channel"]))
    return conv, outs, ins, p, scope, name, draw(st.integers(0, 2**16))


@settings(max_examples=40, deadline=None)
@given(_channel_case())
def test_channels_prune_whole_rows_with_exact_counts(case):
    conv, outs, ins, p, scope, name, seed = case
    torch.manual_seed(seed)
    if conv:
        model = nn.ModuleDict({f"l{i}": nn.Conv2d(ins[i], outs[i], 2) for i in range(2)})
    else:
        model = nn.ModuleDict({f"l{i}": nn.Linear(ins[i], outs[i]) for i in range(2)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.prune(model, p, granularity=name, scope=scope)
    masks = sc.masks(model)
    rows = {k: int(_rows_pruned(m).sum()) for k, m in masks.items()}
    for k, mask in masks.items():
        assert _is_row_structured(mask), k
        if scope == "local":
            assert rows[k] == _removed(p, mask.shape[0])
    if scope == "global":
        assert sum(rows.values()) == _removed(p, sum(outs))


def test_channels_hand_example_prunes_rows_with_the_smallest_mean_magnitude():
    # mean |w| per row: 2.5, 0.5, 1.25; max |w| per row: 3, 0.5, 5
    lin = _set(nn.Linear(4, 3, bias=False), [[3.0, -2.0, 2.0, -3.0], [0.5, 0.5, -0.5, 0.5], [-5.0, 0.0, 0.0, 0.0]])
    sc.prune(lin, 1 / 3, granularity="neuron", scope="local")
    assert _rows_pruned(sc.masks(lin)["weight"]).tolist() == [False, True, False]
    # a mean, not a max: by max |w| row 0 (3) would go before row 2 (5)
    sc.restore(lin)
    sc.prune(lin, 2 / 3, granularity="neuron", scope="local")
    assert _rows_pruned(sc.masks(lin)["weight"]).tolist() == [False, True, True]


def test_normalise_by_hand():
    assert gran.normalise(torch.tensor([1.0, 3.0])).tolist() == [0.5, 1.5]
    assert torch.allclose(gran.normalise(torch.tensor([-2.0, 2.0, 4.0])), torch.tensor([-0.75, 0.75, 1.5]))
    assert gran.normalise(torch.tensor([1000.0, 3000.0])).tolist() == [0.5, 1.5]
    zeros = torch.zeros(3)
    assert torch.equal(gran.normalise(zeros), zeros)  # no division by zero


def _two_scales():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16))
    with torch.no_grad():
        net[0].weight.mul_(1000.0)
    return net


def _headed() -> nn.Sequential:
    """:func:`_two_scales` with an output layer after it, which neuron pruning keeps whole."""
    return nn.Sequential(*_two_scales(), nn.Linear(16, 2))


def test_global_channels_normalise_per_layer_so_both_layers_lose_rows():
    net = _headed()
    w = {k: v.detach().clone() for k, v in net.state_dict().items() if k.endswith("weight")}
    sc.prune(net, 0.5, granularity="neuron", scope="global")
    masks = sc.masks(net)
    lost = {k: int(_rows_pruned(m).sum()) for k, m in masks.items()}
    assert sum(lost.values()) == 16
    assert lost["0.weight"] > 0 and lost["2.weight"] > 0, lost
    # and the choice is by normalised mean |w| per row: within the pool, pruned <= kept
    s = torch.cat([gran.normalise(w[k].abs().mean(dim=1)) for k in ("0.weight", "2.weight")])
    pr = torch.cat([_rows_pruned(masks[k]) for k in ("0.weight", "2.weight")])
    assert float(s[pr].max()) <= float(s[~pr].min())
    # without the normalisation every pruned row would come from the small-scale layer
    raw = torch.cat([w[k].abs().mean(dim=1) for k in ("0.weight", "2.weight")])
    assert bool((raw.argsort()[:16] >= 16).all())


def test_global_unstructured_on_two_scales_prunes_only_the_small_layer():
    net = _two_scales()
    sc.prune(net, 0.5, scope="global")
    masks = sc.masks(net)
    assert bool(masks["0.weight"].all())
    assert int((~masks["2.weight"]).sum()) == _removed(0.5, 8 * 16 + 16 * 16)


def test_local_channels_compound():
    torch.manual_seed(1)
    net = nn.ModuleDict({"fc": nn.Linear(12, 10), "conv": nn.Conv2d(3, 6, 3)})
    sc.prune(net, 0.5, granularity="channel", scope="local")
    first = {k: _rows_pruned(m).clone() for k, m in sc.masks(net).items()}
    assert {k: int(v.sum()) for k, v in first.items()} == {"fc.weight": 5, "conv.weight": 3}
    sc.prune(net, 0.75, granularity="channel", scope="local")
    masks = sc.masks(net)
    for k, m in masks.items():
        assert _is_row_structured(m)
        second = _rows_pruned(m)
        assert bool(second[first[k]].all()), "a pruned row came back"
        assert int(second.sum()) == _removed(0.75, m.shape[0])
    assert int(_rows_pruned(masks["fc.weight"]).sum()) == 8
    assert int(_rows_pruned(masks["conv.weight"]).sum()) == 5


def test_channels_after_unstructured_keep_earlier_pruned_entries():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(8, 10))
    sc.prune(net, 0.5, scope="local")
    first = sc.masks(net)["0.weight"].clone()
    sc.prune(net, 0.5, granularity="neuron", scope="local", layers={"0": 0.5})  # named: the output layer too
    second = sc.masks(net)["0.weight"]
    assert not bool((second & ~first).any())
    assert int(_rows_pruned(second).sum()) == 5


def test_channels_min_density_local_keeps_enough_rows():
    torch.manual_seed(4)
    net = nn.ModuleDict({"a": nn.Linear(6, 10), "b": nn.Conv2d(2, 7, 3)})
    sc.prune(net, 0.9, granularity="channel", scope="local", min_density=0.35)
    kept = {k: int((~_rows_pruned(m)).sum()) for k, m in sc.masks(net).items()}
    assert kept == {"a.weight": math.ceil(0.35 * 10), "b.weight": math.ceil(0.35 * 7)}


def test_channels_min_density_global_keeps_enough_rows():
    net = _headed()
    with pytest.warns(UserWarning, match="min_density"):
        r = sc.prune(net, 0.9, granularity="neuron", scope="global", min_density=0.3)
    masks = sc.masks(net)
    for k, m in masks.items():
        assert int((~_rows_pruned(m)).sum()) >= math.ceil(0.3 * m.shape[0]), k
        assert _is_row_structured(m)
    # 32 rows, round(0.9 * 32) = 29 asked for, but each layer keeps ceil(0.3 * 16) = 5 rows
    assert sum(int(_rows_pruned(m).sum()) for m in masks.values()) == 22
    assert r.shortfall > 0


# --------------------------------------------------------------------------- every granularity × scope

GRANULARITIES = [
    ("unstructured", 0.5), ("neuron", 0.5), ("channel", 0.5), ("filter", 0.5), ("block", 0.5),
    ("block:2x2", 0.5), ((2, 4), 0.5), ("2:4", 0.5), ("1:4", 0.75), ("3:4", 0.25),
]


@pytest.mark.parametrize("scope", ["global", "local"])
@pytest.mark.parametrize("granularity, sparsity", GRANULARITIES, ids=[str(g) for g, _ in GRANULARITIES])
def test_every_granularity_with_every_scope(granularity, sparsity, scope):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    x = torch.randn(5, 8)
    units = granularity in ("neuron", "channel", "filter")
    r = sc.prune(net, sparsity, granularity=granularity, scope=scope)
    masks = sc.masks(net)
    # whole output neurons of the output layer would be logits gone: it is kept, and the result says so
    assert set(masks) == {"0.weight", "2.weight"} | (set() if units else {"4.weight"})
    assert r.notes == (["kept 4 whole: its neurons are the model's outputs; name it in layers= to prune it"]
                       if units else [])
    for name, mask in masks.items():
        w = net.get_submodule(name[: -len(".weight")]).weight
        assert bool((w[~mask] == 0).all())
    y = net(x)
    assert y.shape == (5, 4) and bool(torch.isfinite(y).all())
    if units and scope == "global":
        # rows of different layers have different sizes: the count is exact in rows, not weights
        assert sum(int(_rows_pruned(m).sum()) for m in masks.values()) == _removed(sparsity, 16 + 8)
        assert 0 < r.sparsity < 1
    elif units:  # local: each pruned layer loses its share, the output layer nothing
        assert [row.nonzero == row.params for row in r.layers] == [False, False, True]
    else:
        assert r.sparsity == pytest.approx(sparsity, abs=1e-12)
        assert sc.sparsity(net) == pytest.approx(sparsity, abs=1e-6)
    if scope == "local":
        for row in r.layers[:2] if units else r.layers:
            assert row.params - row.nonzero == _removed(sparsity, row.params)
