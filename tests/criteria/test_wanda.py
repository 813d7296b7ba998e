"""Wanda, by hand, and its row-wise comparison."""

import torch

import secateurs as sc

from .helpers import _linear


def test_wanda_by_hand_and_row_comparison():
    net = _linear([[1.0, -2.0]])
    data = [torch.tensor([[3.0, 0.0], [4.0, 1.0]])]
    wanda = sc.score(net, "wanda", data=data)["0.weight"]
    assert torch.allclose(wanda, torch.tensor([[12.5**0.5, 2 * 0.5**0.5]]))
    # per-row comparison: under local scope every row loses exactly half
    net = _linear([[100.0, 90.0, 80.0, 70.0], [1.0, 2.0, 3.0, 4.0]])
    sc.prune(net, sparsity=0.5, criterion="wanda", scope="local", data=[torch.ones(3, 4)])
    m = sc.masks(net)["0.weight"]
    assert m.tolist() == [[True, True, False, False], [False, False, True, True]]
