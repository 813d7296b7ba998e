"""Every registered criterion, checked the same way: a new criterion file is tested the moment it exists."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import secateurs as sc
from secateurs import criteria
from secateurs.training.learned import Movement


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    net.train()
    net[1].eval()  # a frozen BatchNorm inside a model in training mode: both modes must survive
    return net


def _data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(16, 6, generator=g), torch.randint(0, 4, (16,), generator=g)) for _ in range(3)]


def _built(name: str, net: nn.Module):
    """The criterion as a user gets it: by name, or, for those that need a Python object, through it."""
    crit = criteria.get(name)
    if crit.standalone:
        return name
    if name == "movement":
        tracker = Movement(net)
        for x, y in _data():
            F.cross_entropy(net(x), y).backward()
            tracker.accumulate()
        net.zero_grad(set_to_none=True)
        return tracker.criterion()
    pytest.fail(f"criterion {name!r} is not standalone: teach this contract test how a user builds it")


def _kwargs(name: str) -> dict:
    return {"data": _data(), "loss_fn": F.cross_entropy}  # no example_inputs: layer by layer, exact counts


@pytest.mark.parametrize("name", criteria.names())
def test_it_is_documented_and_registered_under_its_name(name):
    cls = type(criteria.get(name))
    assert cls.name == name
    assert (cls.__doc__ or "").strip(), f"criterion {name!r} needs a docstring (formula, paper, example)"


@pytest.mark.parametrize("name", criteria.names())
def test_scores_have_the_weights_shape_and_are_not_views(name):
    net = _net()
    scores = sc.score(net, _built(name, net), **_kwargs(name))
    weights = dict(net.named_parameters())
    assert set(scores) == {"0.weight", "3.weight", "5.weight"}
    for key, s in scores.items():
        assert s.shape == weights[key].shape and s.is_floating_point()
        assert not bool(torch.isnan(s).any()), key
        assert s.data_ptr() != weights[key].data_ptr()


@pytest.mark.parametrize("name", criteria.names())
@pytest.mark.parametrize("granularity", ["unstructured", "channel"])
def test_prune_reaches_the_target_and_leaves_the_model_as_found(name, granularity):
    net = _net()
    crit = _built(name, net)
    for p in net.parameters():
        p.grad = torch.full_like(p, 7.0)  # a user's gradients: scoring must put them back
    net[0].bias.requires_grad_(False)
    before = copy.deepcopy(net.state_dict())
    named = {"5": 0.5} if granularity == "channel" else None  # the output layer is pruned by rows only when named
    result = sc.prune(net, 0.5, criterion=crit, granularity=granularity, scope="local", layers=named,
                      **_kwargs(name))
    assert result.sparsity == pytest.approx(0.5)
    assert net.training and not net[1].training
    assert not net[0].bias.requires_grad and all(p.requires_grad for n, p in net.named_parameters()
                                                 if n != "0.bias")
    assert all(bool((p.grad == 7.0).all()) for p in net.parameters())
    changes_weights = type(criteria.get(name)).update is not criteria.Criterion.update  # OBS corrects them
    for key, value in net.state_dict().items():
        plain = key.replace("parametrizations.", "").replace(".original", "")
        if key.endswith("mask") or (changes_weights and key.endswith("original")):
            continue
        assert torch.equal(value, before[plain]), f"{name} changed {key}"


@pytest.mark.parametrize("name", criteria.names())
def test_same_seed_same_masks(name):
    masks = []
    for _ in range(2):
        net = _net()
        sc.prune(net, 0.5, criterion=_built(name, net), seed=3, **_kwargs(name))
        masks.append(sc.masks(net))
    assert all(torch.equal(masks[0][k], masks[1][k]) for k in masks[0])
