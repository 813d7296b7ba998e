"""Criteria registry, magnitude and random."""

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs import criteria


def test_registry_lists_builtins():
    assert {"magnitude", "random"} <= set(sc.criteria())
    assert sc.criteria() == sorted(sc.criteria())


def test_magnitude_is_absolute_value():
    w = torch.tensor([[-3.0, 1.0], [0.5, -2.0]])
    assert torch.equal(criteria.get("magnitude").score("w", w), torch.tensor([[3.0, 1.0], [0.5, 2.0]]))


def test_random_is_seeded_and_per_name():
    w = torch.zeros(3, 5)
    a = criteria.get("random", seed=1).score("fc.weight", w)
    assert torch.equal(a, criteria.get("random", seed=1).score("fc.weight", w))
    assert not torch.equal(a, criteria.get("random", seed=2).score("fc.weight", w))
    assert not torch.equal(a, criteria.get("random", seed=1).score("fc2.weight", w))
    assert a.shape == w.shape and bool(((a >= 0) & (a < 1)).all())


def test_random_pruning_is_reproducible():
    def pruned(seed: int):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 4))
        sc.prune(net, sparsity=0.5, criterion="random", seed=seed)
        return sc.masks(net)

    a, b, c = pruned(7), pruned(7), pruned(8)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_score_does_not_prune():
    net = nn.Sequential(nn.Linear(4, 3))
    scores = sc.score(net, "magnitude")
    assert list(scores) == ["0.weight"]
    assert torch.equal(scores["0.weight"], net[0].weight.detach().abs())
    assert sc.masks(net) == {}


def test_unknown_criterion_names_the_allowed_ones():
    with pytest.raises(sc.PruningError, match="allowed: .*magnitude"):
        sc.prune(nn.Linear(2, 2), sparsity=0.5, criterion="nope")


def test_register_rejects_duplicates():
    with pytest.raises(TypeError):
        @criteria.register
        class Again(criteria.Criterion):
            name = "magnitude"
