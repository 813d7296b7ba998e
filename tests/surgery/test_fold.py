"""``sc.fold``: k-means folding of coupled channels with BatchNorm repair, no data."""

import math

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs import zoo
from secateurs.surgery.batchnorm import Folded, repair_stats

from .helpers import random_bn_stats


class Residual(nn.Module):
    """stem conv -> BN, then x + BN(conv(relu(x))): the stem's and the block's channels are tied."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.conv, self.bn1 = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        x = self.bn0(self.stem(x))
        x = x + self.bn1(self.conv(torch.relu(x)))
        return self.head(torch.relu(x).mean(dim=(2, 3)))


def _duplicated_residual() -> Residual:
    """Channels 0 and 1 identical in every producing layer (and their BatchNorms), read alike."""
    torch.manual_seed(0)
    net = random_bn_stats(Residual(), seed=1)
    with torch.no_grad():
        for conv, bn in ((net.stem, net.bn0), (net.conv, net.bn1)):
            conv.weight[1] = conv.weight[0]
            for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
                t[1] = t[0]
        net.conv.weight[:, 1] = net.conv.weight[:, 0]  # the block reads them alike
    return net


def test_identical_residual_channels_fold_together_exactly():
    net = _duplicated_residual()
    x = torch.randn(3, 1, 6, 6)
    r = sc.fold(net, 0.25, example_inputs=x)
    group = next(g for g in r.groups if "stem" in g.layers)
    assert group.layers == ("conv", "stem") and (group.before, group.after) == (4, 3)
    assert r.model.stem.out_channels == 3 and r.model.conv.in_channels == 3 and r.model.head.in_features == 3
    assert r.model.bn0.num_features == 3 and r.model.bn1.num_features == 3
    assert torch.allclose(r.model.eval()(x), net(x), atol=1e-5)
    assert float(r.model.bn0.running_var.min()) >= 0.5  # the statistics are back, not identity


def test_fold_shrinks_zoo_bn_networks_and_save_load_replays(tmp_path):
    for name in ("resnet-20", "vgg", "mobilenet-v2"):
        net = random_bn_stats(zoo.model(name, in_channels=1, image_size=16, num_classes=3, width=8)
                        if name != "vgg" else zoo.model(name, in_channels=1, image_size=16, num_classes=3,
                                                        widths=[8, 16]), seed=1)
        x = torch.randn(2, 1, 16, 16)
        same = sc.fold(net, 0.0)
        assert torch.allclose(same.model.eval()(x), net(x), atol=1e-4)
        r = sc.fold(net, 0.5)
        assert all(g.after == g.before - math.floor(0.5 * g.before + 0.5) for g in r.groups)
        assert sum(p.numel() for p in r.model.parameters()) < 0.5 * sum(p.numel() for p in net.parameters())
        sc.save(r.model, tmp_path / f"{name}.safetensors")
        back = sc.load(tmp_path / f"{name}.safetensors").eval()
        assert torch.allclose(back(x), r.model.eval()(x), atol=1e-6), name


def test_repair_scales_a_merged_channel_towards_its_members_deviation():
    saved = Folded("conv", torch.tensor([1.0, 1.0]), torch.tensor([0.5, 1.5]), torch.zeros(2), torch.ones(2), 0.0)
    rows = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)  # orthogonal: independent channels
    half = torch.tensor([0.5, 0.5], dtype=torch.float64)
    merged, shift = repair_stats(rows, saved, [0, 1], half, rows.mean(0), torch.tensor(1.0, dtype=torch.float64))
    # sigma of the average = 1/sqrt(2), members' sigma = 1: full factor sqrt(2), geometric midpoint 2**0.25
    alpha = 2 ** 0.25
    assert torch.allclose(merged, half * alpha)
    assert float(shift) == pytest.approx(alpha * 1.0 + (1 - alpha) * 1.0)  # mean of beta is 1
    same, _ = repair_stats(rows[[0, 0]], saved, [0, 1], half, rows[0], torch.tensor(0.0))
    assert torch.equal(same, rows[0])  # identical members: nothing to repair


def test_folding_with_one_cluster_per_channel_is_the_identity():
    net = random_bn_stats(zoo.model("resnet-20", in_channels=1, image_size=16, num_classes=3, width=8), seed=1).eval()
    x = torch.randn(2, 1, 16, 16)
    for cluster in ("ward", "kmeans"):
        r = sc.fold(net, 0.0, cluster=cluster)
        assert all(g.after == g.before for g in r.groups)
        assert torch.allclose(r.model.eval()(x), net(x), atol=1e-5), cluster


def test_a_channel_nobody_reads_folds_away_at_no_cost():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    with torch.no_grad():
        net[2].weight[:, 3] = 0  # neuron 3 is never read: its weight in the clustering is 0
    x = torch.randn(5, 4)
    r = sc.fold(net, 1 / 6)
    assert r.model[0].out_features == 5 and torch.allclose(r.model(x), net(x), atol=1e-6)


def test_gated_mlp_folds_gate_and_up_together():
    class Gated(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate, self.up, self.down = nn.Linear(4, 6), nn.Linear(4, 6), nn.Linear(6, 4)

        def forward(self, x):
            return self.down(nn.functional.silu(self.gate(x)) * self.up(x))

    torch.manual_seed(0)
    net = Gated()
    with torch.no_grad():
        for layer in (net.gate, net.up):
            layer.weight[5], layer.bias[5] = layer.weight[2], layer.bias[2]
    x = torch.randn(5, 4)
    r = sc.fold(net, 1 / 6, example_inputs=x)
    assert r.groups[0].layers == ("gate", "up")
    assert r.model.gate.out_features == r.model.up.out_features == r.model.down.in_features == 5
    assert torch.allclose(r.model(x), net(x), atol=1e-5)


def test_bert_heads_and_ffn_neurons_fold():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=4,
                                     intermediate_size=8, max_position_embeddings=16)
    torch.manual_seed(0)
    bert = transformers.BertModel(config).eval()
    r = sc.fold(bert, 0.5)
    layer = r.model.encoder.layer[0]
    assert layer.intermediate.dense.out_features == 4 and layer.output.dense.in_features == 4
    assert layer.attention.self.query.out_features == 8 and layer.attention.self.num_attention_heads == 2
    ids = torch.tensor([[1, 2, 3, 4]])
    assert r.model(input_ids=ids).last_hidden_state.shape == (1, 4, 16)


def test_auto_stops_at_the_knee_of_the_clustering_error():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 20), nn.ReLU(), nn.Linear(20, 2))
    with torch.no_grad():  # 5 distinct neurons, each repeated 4 times with tiny noise
        net[0].weight.copy_(torch.randn(5, 6).repeat(4, 1) + 1e-4 * torch.randn(20, 6))
        net[0].bias.copy_(torch.randn(5).repeat(4))
    r = sc.fold(net, "auto")
    assert r.groups[0].before == 20 and r.groups[0].after == 6  # removes 0.7 of 20: the error jumps after


def test_bad_amount_and_no_foldable_group_are_one_clear_error():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(sc.PruningError, match="amount"):
        sc.fold(net, 1.5)
    with pytest.raises(sc.PruningError, match="cluster"):
        sc.fold(net, 0.5, cluster="dbscan")
    with pytest.raises(sc.PruningError, match="no group"):
        sc.fold(nn.Sequential(nn.Linear(3, 2)), 0.5)


def test_no_data_anywhere(monkeypatch):
    net = random_bn_stats(zoo.model("resnet-20", in_channels=1, image_size=16, num_classes=3, width=8), seed=1)
    mlp = zoo.model("mlp", in_features=20, widths=[16, 8])

    def refuse(*args, **kwargs):
        raise AssertionError("data was touched")

    monkeypatch.setattr(torch.utils.data.DataLoader, "__iter__", refuse)
    monkeypatch.setattr(zoo, "dataset", refuse)
    for name in ("randn", "rand", "randn_like", "rand_like"):
        monkeypatch.setattr(torch, name, refuse)
    assert sc.fold(net, 0.5).model.conv1.out_channels == 4
    assert sc.fold(mlp, "auto").groups
    assert sc.merge_neurons(mlp, 0.5).model.fc1.out_features == 8
