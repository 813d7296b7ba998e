"""Channel dependency analysis: concatenation, ops it does not know, modules torch.fx cannot trace."""

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs import graph


class _Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(3, 6, 1)
        self.c = nn.Conv2d(10, 5, 1)

    def forward(self, x):
        return self.c(torch.relu(torch.cat([self.a(x), self.b(x)], dim=1)))


def test_concat_maps_channels_to_the_right_slice():
    torch.manual_seed(0)
    m = _Concat().eval()
    x = torch.randn(1, 3, 4, 4)
    g = graph.analyse(m, (x,))
    assert g.cols["c"][:4] == g.rows["a"] and g.cols["c"][4:] == g.rows["b"]
    with torch.no_grad():
        m.b.weight[2] = 0
        m.b.bias[2] = 0
    small = sc.compact(m, (x,))
    assert small.b.out_channels == 5 and small.c.in_channels == 9
    with torch.no_grad():
        assert torch.allclose(small(x), m(x), atol=1e-6)


class _Sigmoid(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.fc2 = nn.Linear(6, 2)

    def forward(self, x):
        return self.fc2(torch.sigmoid(self.fc1(x)))


def test_channels_through_unknown_ops_are_kept():
    m = _Sigmoid()
    x = torch.randn(2, 4)
    sc.prune(m, 0.5, granularity="neuron", example_inputs=(x,))
    assert int(sc.masks(m)["fc1.weight"].all(1).sum()) == 6  # sigmoid(0) != 0: nothing removable
    small = sc.compact(m, (x,))
    assert small.fc1.out_features == 6


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = _Branchy()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.inner(x))


class _Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
            return self.lin(x)
        return -self.lin(x)


def test_untraceable_module_is_named_and_can_be_a_leaf():
    m = _Untraceable()
    x = torch.ones(1, 4)
    with pytest.raises(sc.PruningError, match="'inner'.*leaf_modules"):
        sc.compact(m, (x,))
    small = sc.compact(m, (x,), leaf_modules=["inner"])
    assert small.fc.in_features == 4


class _Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.c(torch.relu(self.b(torch.relu(self.b(torch.relu(self.a(x)))))))


def test_a_layer_called_twice_keeps_its_channels():
    torch.manual_seed(0)
    net = _Twice()
    x = torch.randn(3, 4)
    sc.prune(net, 0.5, granularity="channel", example_inputs=(x,))
    small = sc.compact(net, (x,))
    assert small.b.in_features == small.b.out_features == 8
    with torch.no_grad():
        assert torch.allclose(small(x), net(x), atol=1e-6)


class _ItemAssign(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        y = self.lin(x)
        y[0] = 1  # item assignment on a Proxy: fx cannot trace it
        return y


def test_trace_failure_names_the_innermost_module_its_line_and_the_advice():
    m = nn.Sequential(nn.Linear(4, 4), nn.Sequential(_ItemAssign()), nn.Linear(4, 2))
    with pytest.raises(sc.PruningError, match=r"module '1\.0' \(_ItemAssign\) \(in forward at test_graph\.py:\d+\).*"
                                              r"item assignment.*leaf_modules=\['1\.0'\]"):
        sc.prune(m, 0.5, granularity="neuron", example_inputs=(torch.randn(2, 4),))


def test_trace_failure_in_the_models_own_forward_says_leaf_modules_cannot_help():
    class Top(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            y = self.lin(x)
            y[0] = 1
            return y

    with pytest.raises(sc.PruningError, match=r"cannot trace the model \(in forward.*cannot help"):
        sc.prune(Top(), 0.5, granularity="neuron", example_inputs=(torch.randn(2, 4),))
