"""Coupled channel pruning: ``round_to`` rounds the channels each coupled group keeps up to a multiple."""

import warnings

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs import allocation
from secateurs.coupled import round_up


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 20, 3), nn.BatchNorm2d(20), nn.ReLU(), nn.Conv2d(20, 12, 3), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 4))


def _widths(model: nn.Module, x: torch.Tensor) -> list[int]:
    small = sc.compact(model, (x,))
    return [m.out_channels for m in small.modules() if isinstance(m, nn.Conv2d)]


def test_round_up_keeps_the_best_scored_of_the_removed():
    keep = [torch.tensor([True, False, False, False, True, False, False, False, False])]
    scores = [torch.tensor([9.0, 1.0, 5.0, 0.0, 8.0, 7.0, 2.0, 6.0, 3.0])]
    out, notes = round_up(keep, scores, [allocation.Slot(9, None)], 4, [["a", "b"]])
    assert out[0].nonzero().flatten().tolist() == [0, 4, 5, 7]  # 7.0 and 6.0 come back
    assert notes == ["a (and 1 coupled layers): 4 of 9 channels kept instead of 2 (round_to=4)"]


def test_round_up_never_restores_channels_pruned_before_and_says_so():
    keep = [torch.tensor([True, False, False, False])]
    current = torch.tensor([True, False, False, True])  # 1 and 2 were pruned before
    out, notes = round_up(keep, [torch.arange(4.0)], [allocation.Slot(4, None, current=current)], 4, [["c"]])
    assert out[0].tolist() == [True, False, False, True]
    assert "2 of 4 channels kept instead of 1 (round_to=4), not 4" in notes[0]


def test_round_up_leaves_multiples_and_empty_groups_alone():
    keep = [torch.tensor([True] * 8 + [False] * 4), torch.zeros(3, dtype=torch.bool)]
    out, notes = round_up(keep, [torch.arange(12.0), torch.arange(3.0)],
                          [allocation.Slot(12, None), allocation.Slot(3, None)], 8, [["a"], ["b"]])
    assert out[0] is keep[0] and out[1] is keep[1] and notes == []


@pytest.mark.parametrize("scope", ["local", "global"])
def test_prune_round_to_gives_multiples_and_states_it(scope):
    x = torch.randn(2, 3, 8, 8)
    model = _net()
    with pytest.warns(UserWarning, match=r"round_to=8"):
        result = sc.prune(model, 0.6, granularity="channel", scope=scope, example_inputs=(x,), round_to=8)
    widths = _widths(model, x)
    assert all(w % 8 == 0 for w in widths), widths
    rounded = [n for n in result.notes if "round_to=8" in n]
    assert rounded and all("instead of" in n for n in rounded)
    plain = _net()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.prune(plain, 0.6, granularity="channel", scope=scope, example_inputs=(x,))
    # rounding only ever keeps more: each layer at least as wide as without it, and less than 8 wider
    for w, p in zip(widths, _widths(plain, x)):
        assert p <= w < p + 8


def test_round_to_is_not_refused_by_strict():
    x = torch.randn(2, 3, 8, 8)
    net = nn.Sequential(nn.Conv2d(3, 20, 3), nn.ReLU(), nn.Conv2d(20, 12, 3))
    with pytest.warns(UserWarning, match="round_to=8"):
        result = sc.prune(net, 0.5, granularity="channel", scope="local", example_inputs=(x,), round_to=8,
                          layers={"2": None}, strict=True)
    assert any("round_to=8" in n for n in result.notes)


@pytest.mark.parametrize("bad", [0, -8, 2.5, True, "8"])
def test_round_to_bad_values_are_refused(bad):
    with pytest.raises(sc.PruningError, match="round_to must be a whole number"):
        sc.prune(_net(), 0.5, granularity="channel", example_inputs=(torch.randn(1, 3, 8, 8),), round_to=bad)


def test_round_to_needs_channels_and_example_inputs():
    with pytest.raises(sc.PruningError, match="needs granularity channel"):
        sc.prune(_net(), 0.5, round_to=8)
    with pytest.raises(sc.PruningError, match="without example_inputs"):
        sc.prune(_net(), 0.5, granularity="channel", round_to=8)
