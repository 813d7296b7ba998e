"""BatchNorm folded into the layer before it and back out; merging BN networks."""

import math

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs import zoo
from secateurs.surgery import batchnorm

from .helpers import random_bn_stats


def test_fold_then_unfold_keeps_outputs_and_statistics():
    net = random_bn_stats(nn.Sequential(nn.Conv2d(2, 3, 3, bias=True), nn.BatchNorm2d(3), nn.ReLU()))
    x = torch.randn(2, 2, 5, 5)
    before, stats = net(x), net[1].running_var.clone()
    found = batchnorm.pairs(net, (x,))
    assert found == {"1": "0"}
    folded = batchnorm.fold(net, found)
    assert torch.allclose(net(x), before, atol=1e-5)
    assert torch.equal(net[1].running_mean, torch.zeros(3)) and float(net[0].bias.detach().abs().max()) == 0
    batchnorm.unfold(net, folded, {"1": None})
    assert torch.allclose(net(x), before, atol=1e-5) and torch.allclose(net[1].running_var, stats)


def test_bn_after_an_add_is_not_folded():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.bn = nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)

        def forward(self, x):
            return self.bn(self.a(x) + self.b(x))

    assert batchnorm.pairs(Net(), (torch.zeros(1, 2, 3, 3),)) == {}


@pytest.mark.parametrize("name", ["resnet-20", "vgg"])
def test_merge_works_on_bn_networks_and_round_trips(name, tmp_path):
    net = random_bn_stats(zoo.model(name, in_channels=1, image_size=16, num_classes=3))
    x = torch.randn(2, 1, 16, 16)
    same = sc.merge_neurons(net, 0.0)
    assert same.layers and torch.allclose(same.model.eval()(x), net(x), atol=1e-4)
    r = sc.merge_neurons(net, 0.25)
    assert sum(p.numel() for p in r.model.parameters()) < sum(p.numel() for p in net.parameters())
    bn = [m for m in r.model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(float(m.running_var.min()) >= 0.5 for m in bn)  # statistics put back, not identity
    sc.save(r.model, tmp_path / "m.safetensors")
    back = sc.load(tmp_path / "m.safetensors").eval()
    assert torch.allclose(back(x), r.model.eval()(x), atol=1e-6)


def test_merge_neurons_on_a_sequential_mlp_needs_no_example_inputs():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    r = sc.merge_neurons(net, 0.25)
    assert r.model[0].out_features == 6 and r.model[2].in_features == 6


def test_merge_neurons_without_inputs_on_an_unknown_model_says_what_to_pass():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(1, 2, 3)

        def forward(self, x):
            return self.c(x)

    with pytest.raises(sc.PruningError, match="example_inputs="):
        sc.merge_neurons(Net(), 0.25)


def test_relu_mean_of_a_gaussian():
    got = batchnorm.relu_mean(torch.tensor([0.0, 3.0, -2.0], dtype=torch.float64),
                              torch.tensor([2.0, 1.0, 1.0], dtype=torch.float64))
    z = torch.randn(400_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    want = [float((2 * z).clamp_min(0).mean()), float((3 + z).clamp_min(0).mean()), float((z - 2).clamp_min(0).mean())]
    assert float(got[0]) == pytest.approx(2 / math.sqrt(2 * math.pi))
    assert got.tolist() == pytest.approx(want, abs=3e-3)


def test_fold_behind_batchnorm_and_relu_keeps_the_readers_expected_output():
    torch.manual_seed(0)
    net = random_bn_stats(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)), seed=1).eval()
    with torch.no_grad():  # neurons 0 and 1 identical: folding them changes nothing, mean correction included
        net[0].weight[1], net[0].bias[1] = net[0].weight[0], net[0].bias[0]
        for t in (net[1].weight, net[1].bias, net[1].running_mean, net[1].running_var):
            t[1] = t[0]
    x = torch.randn(5, 3)
    r = sc.fold(net, 0.25)
    assert r.model[0].out_features == 3 and torch.allclose(r.model.eval()(x), net(x), atol=1e-5)
    with torch.no_grad():  # now two different neurons fold: the reader's bias moves by the change of E[relu]
        net[0].weight[1] = -net[0].weight[0]
    plain, kept = sc.fold(net, 0.25, repair=False).model, sc.fold(net, 0.25).model
    assert not torch.allclose(plain[3].bias, kept[3].bias)
