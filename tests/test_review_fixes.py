"""Regression tests for defects found in review: each failed before its fix."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import secateurs as sc
from secateurs.criteria import synflow


def test_obs_repruning_starts_from_the_masked_weights():
    torch.manual_seed(0)
    x = torch.randn(256, 32) @ torch.randn(32, 32) * 0.3
    net = nn.Sequential(nn.Linear(32, 16))
    sc.prune(net, 0.5, criterion="random")
    with torch.no_grad():
        ref = net(x)
    corrected = copy.deepcopy(net)
    sc.prune(corrected, 0.6, criterion="obs", data=[x], scope="local")
    plain = copy.deepcopy(net)
    plain[0].parametrizations.weight[0].mask.copy_(sc.masks(corrected)["0.weight"])  # same mask, no update
    with torch.no_grad():
        err_obs = (corrected(x) - ref).pow(2).mean()
        err_plain = (plain(x) - ref).pow(2).mean()
    assert err_obs < err_plain


def test_sensitivity_with_channels_undoes_every_mask():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 4, 3), nn.Flatten(),
                        nn.Linear(4 * 2 * 2, 3)).eval()
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        before = net(x)
    sc.sensitivity(net, lambda m: float(m(x).sum()), (0.5,), granularity="channel", example_inputs=(x,),
                   progress=False)
    assert sc.masks(net) == {}
    with torch.no_grad():
        assert torch.equal(net(x), before)


def test_tied_weights_are_refused():
    a, b = nn.Linear(4, 4), nn.Linear(4, 4)
    b.weight = a.weight
    net = nn.Sequential(a, nn.ReLU(), b)
    with pytest.raises(sc.PruningError, match="2.weight shares its weight with 0.weight"):
        sc.prune(net, 0.5)
    sc.prune(net, 0.5, layers={"2": None})
    assert set(sc.masks(net)) == {"0.weight"}


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


def test_submodule_modes_are_restored():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).train()
    net[1].eval()  # a frozen BatchNorm
    data = [(torch.randn(6, 4), torch.randint(0, 3, (6,)))]
    x = torch.randn(2, 4)
    sc.prune(net, 0.3, criterion="taylor", data=data, loss_fn=F.cross_entropy)
    sc.prune(net, 0.3, granularity="channel", example_inputs=(x,))
    sc.summary(net, (x,))
    sc.compact(net, (x,))
    assert net.training and not net[1].training


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


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"layers": {"*": None}}, "excludes every prunable layer"),
        ({"layers": ["0"]}, "layers must be a dict"),
        ({"criterion": "wanda", "data": 5}, "data= must be an iterable"),
        ({"criterion": "random", "seed": "a"}, "seed must be an integer"),
        ({"granularity": "channel", "example_inputs": (torch.ones(1, 7),)}, "example_inputs do not fit"),
    ],
)
def test_bad_input_is_one_clear_error(kwargs, match):
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(sc.PruningError, match=match):
        sc.prune(net, 0.5, **kwargs)
    assert sc.masks(net) == {}


def test_empty_layers_are_skipped():
    net = nn.Sequential(nn.Linear(0, 4), nn.Linear(4, 2))
    r = sc.prune(net, 0.5)
    assert [row.name for row in r.layers] == ["1.weight"]


def test_norm_without_affine_parameters_keeps_its_channels():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 1), nn.BatchNorm2d(4, affine=False), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1)
        net[0].weight[1] = 0
        net[0].bias[1] = 0
    x = torch.randn(1, 2, 3, 3)
    small = sc.compact(net, (x,))
    assert small[0].out_channels == 4  # BN maps 0 to -mean/std: the channel still matters
    with torch.no_grad():
        assert torch.allclose(small(x), net(x), atol=1e-6)
