"""Allocation: exact counts, deterministic ties, global threshold, collapse guard."""

import math
import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import secateurs as sc
from secateurs import allocation, criteria


class Fixed(criteria.Criterion):
    """Scores given by the test, by parameter name (not registered)."""

    name = "fixed"

    def __init__(self, scores):
        super().__init__()
        self.scores = scores

    def score(self, name, weight):
        return self.scores[name].clone()


def _net(shapes):
    return nn.Sequential(*[nn.Linear(i, o) for o, i in shapes])


def _reference(scores: list[torch.Tensor], k: int, caps: list[int]) -> list[torch.Tensor]:
    """Greedy over (score, layer, index): prune the k lowest, no layer past its cap."""
    items = sorted((float(s), li, j) for li, t in enumerate(scores) for j, s in enumerate(t.reshape(-1)))
    pruned = [torch.zeros(t.numel(), dtype=torch.bool) for t in scores]
    taken = [0] * len(scores)
    left = k
    for _, li, j in items:
        if left == 0:
            break
        if taken[li] < caps[li]:
            pruned[li][j] = True
            taken[li] += 1
            left -= 1
    return [(~p).reshape(t.shape) for p, t in zip(pruned, scores)]


shapes_st = st.lists(st.tuples(st.integers(1, 9), st.integers(1, 9)), min_size=1, max_size=4)
values_st = st.sampled_from(["ties", "wide", "signed"])


def _scores(shapes, kind, seed):
    g = torch.Generator().manual_seed(seed)
    out = []
    for o, i in shapes:
        if kind == "ties":
            out.append(torch.randint(0, 3, (o, i), generator=g).float())
        elif kind == "wide":
            out.append(torch.exp(torch.randn(o, i, generator=g) * 20))
        else:
            out.append(torch.randn(o, i, generator=g) * torch.tensor(10.0) ** torch.randint(-30, 30, (o, i), generator=g))
    return out


@pytest.mark.filterwarnings("ignore::UserWarning")
@given(shapes=shapes_st, p=st.floats(0, 0.999), kind=values_st, seed=st.integers(0, 10**6),
       min_density=st.sampled_from([0.0, 0.1, 0.5]), chunk=st.sampled_from([3, 64, 1 << 18]))
def test_global_matches_greedy_reference(shapes, p, kind, seed, min_density, chunk):
    scores = _scores(shapes, kind, seed)
    net = _net(shapes)
    names = [f"{i}.weight" for i in range(len(shapes))]
    old = allocation.CHUNK
    allocation.CHUNK = chunk
    try:
        sc.prune(net, sparsity=p, criterion=Fixed(dict(zip(names, scores))), min_density=min_density)
    finally:
        allocation.CHUNK = old
    total = sum(t.numel() for t in scores)
    caps = [t.numel() - math.ceil(min_density * t.numel() - 1e-9) for t in scores]
    k = min(allocation.count(p, total), sum(caps))
    expected = _reference(scores, k, caps)
    masks = sc.masks(net)
    for n, e in zip(names, expected):
        assert torch.equal(masks[n], e), n


@pytest.mark.filterwarnings("ignore::UserWarning")
@given(shapes=shapes_st, p=st.floats(0, 0.999), kind=values_st, seed=st.integers(0, 10**6))
def test_local_exact_count_per_layer(shapes, p, kind, seed):
    scores = _scores(shapes, kind, seed)
    net = _net(shapes)
    names = [f"{i}.weight" for i in range(len(shapes))]
    sc.prune(net, sparsity=p, scope="local", criterion=Fixed(dict(zip(names, scores))))
    for n, s in zip(names, scores):
        expected = _reference([s], allocation.count(p, s.numel()), [s.numel()])[0]
        assert torch.equal(sc.masks(net)[n], expected), n


@pytest.mark.filterwarnings("ignore::UserWarning")
@given(shapes=shapes_st, p1=st.floats(0, 0.95), p2=st.floats(0, 0.95), scope=st.sampled_from(["global", "local"]),
       criterion=st.sampled_from(["magnitude", "random"]))
def test_compounding_keeps_pruned_weights_pruned(shapes, p1, p2, scope, criterion):
    torch.manual_seed(0)
    net = _net(shapes)
    sc.prune(net, sparsity=p1, scope=scope, criterion=criterion)
    first = {k: v.clone() for k, v in sc.masks(net).items()}
    sc.prune(net, sparsity=p2, scope=scope, criterion=criterion, seed=1)
    second = sc.masks(net)
    for k in first:
        assert not bool((second[k] & ~first[k]).any()), "a pruned weight came back"
    if scope == "global":
        total = sum(m.numel() for m in first.values())
        pruned = sum(int((~m).sum()) for m in second.values())
        assert pruned == max(allocation.count(p2, total), sum(int((~m).sum()) for m in first.values()))
    else:
        for k, m in second.items():
            assert int((~m).sum()) == max(allocation.count(p2, m.numel()), int((~first[k]).sum()))


@given(shapes=shapes_st, p=st.floats(0, 0.999), min_density=st.floats(0.01, 0.5))
def test_collapse_guard(shapes, p, min_density):
    torch.manual_seed(0)
    net = _net(shapes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the target may be unreachable under the guard
        sc.prune(net, sparsity=p, min_density=min_density)
    for m in sc.masks(net).values():
        assert int(m.sum()) >= math.ceil(min_density * m.numel() - 1e-9)


def test_shortfall_is_taken_from_other_layers():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(100, 100), nn.Linear(100, 10))
    with torch.no_grad():
        net[1].weight.mul_(1e-6)  # magnitude would wipe out the small layer
    sc.prune(net, sparsity=0.5, min_density=0.2)
    m = sc.masks(net)
    assert int(m["1.weight"].sum()) == 200
    assert int((~m["0.weight"]).sum()) + int((~m["1.weight"]).sum()) == 5500


def test_unreachable_target_warns_and_prunes_what_it_can():
    net = nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 10))
    with pytest.warns(UserWarning, match="min_density"):
        r = sc.prune(net, sparsity=0.9, min_density=0.5)
    assert r.shortfall == 80
    assert sc.sparsity(net) == 0.5


def test_collapse_without_guard_warns():
    net = nn.Sequential(nn.Linear(50, 50), nn.Linear(50, 2))
    with torch.no_grad():
        net[1].weight.mul_(1e-9)
    with pytest.warns(UserWarning, match="layer collapse"):
        sc.prune(net, sparsity=0.9)
    assert int(sc.masks(net)["1.weight"].sum()) == 0


def test_layer_overrides_and_exclusion():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 20), nn.Linear(20, 20), nn.Linear(20, 5))
    sc.prune(net, sparsity=0.8, layers={"2": 0.5, "1*": None})
    m = sc.masks(net)
    assert set(m) == {"0.weight", "2.weight"}
    assert int((~m["2.weight"]).sum()) == 50
    assert int((~m["0.weight"]).sum()) == 320


def test_override_equal_to_default_is_still_its_own_target():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 20), nn.Linear(20, 5))
    with torch.no_grad():
        net[1].weight.mul_(100)  # global scope alone would spare this layer
    sc.prune(net, sparsity=0.5, layers={"1.weight": 0.5})
    assert int((~sc.masks(net)["1.weight"]).sum()) == 50


def test_later_patterns_win():
    net = nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 10))
    sc.prune(net, sparsity=0.5, layers={"*": None, "1": 0.3})
    assert set(sc.masks(net)) == {"1.weight"}
    assert int((~sc.masks(net)["1.weight"]).sum()) == 30


def test_to_keys_orders_like_floats():
    x = torch.tensor([-float("inf"), -1e30, -2.0, -1e-30, -0.0, 0.0, 1e-30, 3.0, 1e30, float("inf")])
    k = allocation.to_keys(x)
    assert bool((k[1:] >= k[:-1]).all())
    assert int(k[4]) == int(k[5])
    assert int(k.min()) > allocation.FORCED
    assert torch.equal(allocation.to_keys(x.abs(), nonnegative=True)[4:], allocation.to_keys(x.abs())[4:])
    y = x.clone()
    allocation.to_keys(y)
    assert torch.equal(x, y) or bool(torch.isnan(x).any()), "to_keys must not modify its input unless owned"


def test_global_is_deterministic_on_ties():
    net = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False))
    with torch.no_grad():
        for m in net:
            m.weight.fill_(1.0)
    sc.prune(net, sparsity=0.25)
    m = sc.masks(net)
    # equal scores: the earliest layer and the lowest indices go first
    assert int((~m["0.weight"]).sum()) == 8
    assert bool((~m["0.weight"].reshape(-1)[:8]).all())
    assert bool(m["1.weight"].all())
