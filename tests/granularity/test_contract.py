"""Every registered granularity, checked the same way: a new granularity file is tested the moment it exists."""

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs import granularity as gran

REGISTERED = gran.names() and gran.registered()  # names() loads every file of the package first


@pytest.fixture(params=REGISTERED, ids=lambda cls: cls.__name__)
def group(request) -> gran.Granularity:
    cls = request.param
    found = gran.parse(cls.example)
    assert type(found) is cls, f"{cls.__name__}.example parses as {type(found).__name__}"
    return found


def test_it_is_documented_and_named_as_written(group):
    cls = type(group)
    assert (cls.__doc__ or "").strip(), f"{cls.__name__} needs a docstring"
    assert gran.parse(group.name) == group  # its name is a value parse() accepts, giving it back
    assert set(cls.syntax) <= set(gran.names())
    with pytest.raises(sc.PruningError, match=cls.syntax[0]):
        gran.parse("no-such-granularity")  # the message lists every spelling


def test_groups_and_masks_agree(group):
    shape = (8, 8)
    group.check("w", shape)
    scores = torch.arange(64, dtype=torch.float32).reshape(shape)
    g = group.groups(scores)
    keep = torch.arange(g.numel()).reshape(g.shape) % 2 == 0
    elem = group.expand(keep, shape)
    assert elem.shape == shape and elem.dtype == torch.bool
    assert torch.equal(group.group_keep(elem), keep)  # a group survives exactly when it was kept
    if group.elementwise:
        assert torch.equal(g, scores)
    assert group.structured == (g.numel() < scores.numel())


def test_prune_reaches_the_target_in_whole_groups(group):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
    target = group.sparsity if group.sparsity is not None else 0.5
    result = sc.prune(net, target, granularity=group, scope="local", layers={"2": target})  # named: the output too
    assert result.sparsity == pytest.approx(target)
    for name, mask in sc.masks(net).items():
        assert torch.equal(group.expand(group.group_keep(mask), tuple(mask.shape)), mask), name
    if group.sparsity is not None:  # a fixed ratio: any other is refused, naming the granularity
        with pytest.raises(sc.PruningError, match=group.name):
            sc.prune(nn.Sequential(nn.Linear(8, 8)), group.sparsity / 2, granularity=group)


def test_a_shape_it_cannot_group_is_refused_or_grouped_whole(group):
    shape = (3, 5)
    try:
        group.check("w", shape)
    except sc.PruningError as exc:
        assert "w" in str(exc) and "layers=" in str(exc)  # names the layer and how to leave it out
        return
    keep = torch.ones_like(group.groups(torch.zeros(shape)), dtype=torch.bool)
    assert bool(group.expand(keep, shape).all())


def test_register_needs_syntax_and_example():
    with pytest.raises(TypeError, match="syntax"):
        @gran.register
        class Nameless(gran.Granularity):
            """No syntax."""
