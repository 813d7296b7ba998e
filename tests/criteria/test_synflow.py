"""SynFlow: flow conservation, no layer collapse, its linearised copy."""

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.criteria import synflow


def test_synflow_conserves_flow_by_hand():
    net = nn.Sequential(nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False))
    with torch.no_grad():
        net[0].weight.fill_(2.0)
        net[1].weight.fill_(-3.0)
    s = sc.score(net, "synflow", example_inputs=(torch.zeros(1, 1),))
    assert float(s["0.weight"]) == pytest.approx(6.0) and float(s["1.weight"]) == pytest.approx(6.0)


def test_synflow_avoids_layer_collapse_where_magnitude_does_not():
    torch.manual_seed(0)

    def make():
        net = nn.Sequential(nn.Linear(20, 50), nn.ReLU(), nn.Linear(50, 50), nn.ReLU(), nn.Linear(50, 2))
        with torch.no_grad():
            net[4].weight.mul_(1e-3)
        return net

    mag = make()
    with pytest.warns(UserWarning, match="layer collapse"):
        sc.prune(mag, sparsity=0.97, criterion="magnitude")
    flow = make()
    sc.prune(flow, sparsity=0.97, criterion="synflow", example_inputs=(torch.zeros(1, 20),))
    assert sc.sparsity(flow) == pytest.approx(0.97, abs=1e-3)
    assert all(int(m.sum()) > 0 for m in sc.masks(flow).values())


def test_synflow_zeroes_every_bias_of_its_copy():
    mha = nn.MultiheadAttention(8, 2)
    conv = nn.Conv2d(2, 2, 1)
    seq = nn.Sequential(conv, nn.ReLU(), nn.Conv2d(2, 1, 1))
    sc.prune(seq, 0.5, granularity="channel", scope="local", example_inputs=(torch.ones(1, 2, 2, 2),))
    assert "bias" in conv.parametrizations  # a masked bias is stored as ...bias.original
    net = synflow._linearised(nn.ModuleDict({"mha": mha, "conv": conv}))
    assert float(net["mha"].in_proj_bias.abs().max()) == 0.0
    assert float(net["conv"].parametrizations.bias.original.abs().max()) == 0.0
    assert float(net["conv"].parametrizations.weight.original.min()) >= 0.0
