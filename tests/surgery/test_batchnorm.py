"""BatchNorm folded into the layer before it and back out; merging BN networks."""

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
