"""Masks: W ⊙ M as a parametrization that survives state_dict, deepcopy and optimizers."""

import copy

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs import masking


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def _masked(p: float = 0.5) -> nn.Sequential:
    net = _net()
    sc.prune(net, sparsity=p)
    return net


def test_mask_multiplies_weight():
    lin = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    masking.set_mask(lin, torch.tensor([[True, False], [False, True]]))
    assert torch.equal(lin.weight, torch.tensor([[1.0, 0.0], [0.0, 4.0]]))
    assert torch.equal(lin(torch.tensor([[1.0, 1.0]])), torch.tensor([[1.0, 4.0]]))
    assert masking.kind(lin) == "Linear"


def test_mask_is_bool_buffer_in_state_dict():
    net = _masked()
    keys = set(net.state_dict())
    assert "0.parametrizations.weight.original" in keys
    assert "0.parametrizations.weight.0.mask" in keys
    assert net.state_dict()["0.parametrizations.weight.0.mask"].dtype == torch.bool
    assert set(sc.masks(net)) == {"0.weight", "2.weight"}


def test_state_dict_round_trip_into_other_masked_model():
    a = _masked(0.5)
    b = _net()
    sc.prune(b, sparsity=0.5, criterion="random", seed=3)  # different masks
    b.load_state_dict(a.state_dict())
    for k, m in sc.masks(a).items():
        assert torch.equal(sc.masks(b)[k], m)
    x = torch.randn(4, 6)
    assert torch.equal(a(x), b(x))


def test_deepcopy_keeps_masks_independent():
    a = _masked(0.75)
    b = copy.deepcopy(a)
    x = torch.randn(5, 6)
    assert torch.equal(a(x), b(x))
    sc.prune(b, sparsity=0.9)
    assert sc.sparsity(a) == pytest.approx(0.75, abs=1 / 72)
    assert sc.sparsity(b) == pytest.approx(0.9, abs=1 / 72)


def test_copies_stay_usable_when_the_original_is_finalized_or_restored():
    a = _masked(0.5)
    b, c = copy.deepcopy(a), copy.deepcopy(a)
    x = torch.randn(3, 6)
    expected = b(x)
    sc.restore(a)  # torch shares the generated class between copies
    assert torch.equal(b(x), expected)
    sc.finalize(b)
    assert torch.equal(b(x), expected)
    assert torch.equal(c(x), expected)
    assert set(sc.masks(c)) == {"0.weight", "2.weight"}


def test_parameter_order_is_kept_after_unmasking():
    net = _net()
    before = list(net.state_dict())
    sc.prune(net, sparsity=0.5)
    sc.restore(net)
    assert list(net.state_dict()) == before
    sc.prune(net, sparsity=0.5)
    sc.finalize(net)
    assert list(net.state_dict()) == before


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.1),
        lambda p: torch.optim.Adam(p, lr=0.05, weight_decay=0.1),
        lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1),
    ],
    ids=["sgd-momentum-wd", "adam-wd", "adamw"],
)
def test_pruned_weights_stay_zero_under_optimizers(make_opt):
    net = _net()
    opt = make_opt(net.parameters())
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    for _ in range(3):  # momentum and Adam state exist before pruning
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    sc.prune(net, sparsity=0.6)
    opt = make_opt(net.parameters())  # the original tensors are the same objects
    for _ in range(10):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    for name, mask in sc.masks(net).items():
        w = net.get_submodule(name.rsplit(".", 1)[0]).weight
        assert bool((w[~mask] == 0).all()), name
        assert int((w[mask] != 0).sum()) > 0


def test_finalize_bakes_zeros_and_removes_masks():
    net = _masked(0.5)
    x = torch.randn(3, 6)
    before = net(x)
    sc.finalize(net)
    assert sc.masks(net) == {}
    assert not any("parametrizations" in k for k in net.state_dict())
    assert torch.equal(net(x), before)
    assert sc.sparsity(net) == pytest.approx(0.5, abs=1 / 72)
    assert isinstance(net[0].weight, nn.Parameter)


def test_restore_gives_back_original_weights():
    net = _net()
    originals = {k: v.clone() for k, v in net.state_dict().items()}
    sc.prune(net, sparsity=0.8)
    sc.restore(net)
    assert sc.masks(net) == {}
    for k, v in net.state_dict().items():
        assert torch.equal(v, originals[k]), k
    assert sc.sparsity(net) == 0.0


def test_set_mask_rejects_wrong_shape():
    with pytest.raises(sc.PruningError, match="shape"):
        masking.set_mask(nn.Linear(3, 2), torch.ones(3, 2, dtype=torch.bool))


def test_conv_layers_are_prunable_and_norms_are_not():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv1d(4, 2, 1), nn.Conv3d(1, 1, 1))
    names = [n for n, _ in masking.prunable_layers(net)]
    assert names == ["0", "2", "3"]


def test_tied_head_and_embedding_share_one_mask_through_finalize_save_and_load(tmp_path):
    pytest.importorskip("transformers")
    from tests.transformer_models import gpt2

    model, (x,) = gpt2()
    model.eval()
    sc.prune(model, 0.5)
    masks = sc.masks(model)
    assert masks["lm_head.weight"].data_ptr() == masks["transformer.wte.weight"].data_ptr()
    with torch.no_grad():
        before = model(x).logits
    sc.save(model, tmp_path / "m.safetensors")
    fresh, _ = gpt2()
    loaded = sc.load(tmp_path / "m.safetensors", fresh.eval())
    sc.finalize(model)
    for m in (model, loaded):
        with torch.no_grad():
            assert float((m(x).logits - before).abs().max()) == 0
    assert model.lm_head.weight is model.transformer.wte.weight
    m2 = sc.masks(loaded)
    assert m2["lm_head.weight"].data_ptr() == m2["transformer.wte.weight"].data_ptr()
