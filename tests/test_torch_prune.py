"""Models pruned with torch.nn.utils.prune are adopted: their masks become secateurs masks."""

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

import secateurs as sc
from secateurs import masking


def _pruned():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    torch_prune.l1_unstructured(net[0], "weight", amount=0.5)
    torch_prune.random_unstructured(net[2], "weight", amount=0.25)
    return net


def test_adoption_keeps_the_masks_the_outputs_and_the_stored_values():
    net, x = _pruned(), torch.randn(3, 8)
    before, theirs = net(x), net[0].weight_mask.clone()
    stored = net[0].weight_orig.detach().clone()
    assert masking.adopt_torch_pruning(net) == ["0.weight", "2.weight"]
    assert not net[0]._forward_pre_hooks and "weight_orig" not in dict(net.named_parameters(prefix="", recurse=True))
    assert torch.equal(sc.masks(net)["0.weight"], theirs.bool())
    assert torch.equal(masking.original(net[0]), stored)
    assert torch.allclose(net(x), before)


def test_prune_compounds_on_torch_masks():
    net = _pruned()
    theirs = net[0].weight_mask.bool().clone()
    sc.prune(net, 0.75, scope="local")
    mine = sc.masks(net)["0.weight"]
    assert not bool((mine & ~theirs).any()) and abs(1 - float(mine.float().mean()) - 0.75) < 0.01


def test_save_load_round_trip_and_summary(tmp_path):
    net, x = _pruned(), torch.randn(2, 8)
    before = net(x)
    assert abs(sc.summary(net).layers[0].sparsity - 0.5) < 1e-6
    sc.save(net, tmp_path / "m.safetensors")
    fresh = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    loaded = sc.load(tmp_path / "m.safetensors", fresh)
    assert set(sc.masks(loaded)) == {"0.weight", "2.weight"}
    assert torch.allclose(loaded(x), before)
