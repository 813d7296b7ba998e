"""Coupled channel pruning and sc.compact on every zoo model."""

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs import zoo
from secateurs.modules.attention import PrunedMultiheadAttention

MODELS = {
    "lenet-300-100": {},
    "lenet-5": {},
    "mlp": {"widths": [24, 16]},
    "vgg": {"widths": [8, 16], "image_size": 16},
    "resnet-20": {"width": 8, "image_size": 16},
    "mobilenet-v2": {"width": 8, "image_size": 16},
    "transformer": {"dim": 32, "heads": 4, "depth": 2},
}


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    m = zoo.model(name, **MODELS[name])
    with torch.no_grad():  # non-trivial biases and BatchNorm statistics, so that they matter
        for mod in m.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.5, 0.5)
            elif getattr(mod, "bias", None) is not None and isinstance(mod.bias, torch.Tensor):
                mod.bias.uniform_(-0.1, 0.1)
    return m.eval()


def _inputs(m: nn.Module, n: int = 3, seed: int = 1) -> torch.Tensor:
    shape = getattr(m, "secateurs_arch")["input_shape"]
    return torch.randn(n, *shape[1:], generator=torch.Generator().manual_seed(seed))


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("sparsity, scope", [(0.3, "global"), (0.7, "local"), (0.99, "local")])
def test_compact_equals_masked_model(name, sparsity, scope):
    m = _model(name)
    x = _inputs(m, 1, seed=0)
    sc.prune(m, sparsity, granularity="channel", scope=scope, example_inputs=(x,))
    small = sc.compact(m, (x,))
    fresh = _inputs(m, 4, seed=2)
    with torch.no_grad():
        diff = (small(fresh) - m(fresh)).abs().max()
    assert float(diff) <= 1e-5
    assert _params(small) < _params(m)
    assert sc.masks(small) == {}
    assert sc.masks(m), "compact must not change the model it was given"


def test_edge_of_one_channel_per_layer():
    m = _model("vgg")
    x = _inputs(m, 1)
    r = sc.prune(m, 0.999, granularity="channel", scope="local", example_inputs=(x,))
    # 0.999 of 16 channels rounds to all 16: a sparsity below 1 keeps one instead of collapsing the layer
    assert all(row.nonzero > 0 for row in r.layers)
    small = sc.compact(m, (x,))
    convs = [mod for mod in small.modules() if isinstance(mod, nn.Conv2d)]
    assert all(c.out_channels == 1 for c in convs)
    with torch.no_grad():
        assert torch.allclose(small(x), m(x), atol=1e-6)


def test_residual_channels_are_removed_together():
    m = _model("resnet-20")
    x = _inputs(m, 1)
    sc.prune(m, 0.5, granularity="channel", scope="local", example_inputs=(x,))
    masks = sc.masks(m)

    def dead_rows(name):
        return ~masks[f"{name}.weight"].reshape(masks[f"{name}.weight"].shape[0], -1).any(1)

    # the stem and every block's second conv of stage 1 feed the same residual stream
    stream = [dead_rows("conv1")] + [dead_rows(f"layer1.{i}.conv2") for i in range(3)]
    assert all(torch.equal(stream[0], d) for d in stream[1:])
    assert 0 < int(stream[0].sum()) < stream[0].numel()
    small = sc.compact(m, (x,))
    assert small.conv1.out_channels == small.layer1[0].conv2.out_channels == small.layer1[2].conv2.out_channels


def test_depthwise_filters_follow_their_channels():
    m = _model("mobilenet-v2")
    x = _inputs(m, 1)
    sc.prune(m, 0.5, granularity="channel", scope="local", example_inputs=(x,))
    small = sc.compact(m, (x,))
    shrunk = 0
    for block, before in zip(small.blocks, m.blocks):
        dw = block.depthwise
        assert dw.groups == dw.in_channels == dw.out_channels == block.expand.out_channels == block.bn2.num_features
        shrunk += dw.out_channels < before.depthwise.out_channels
    assert shrunk == len(small.blocks)


def test_transformer_loses_heads_and_mlp_neurons_but_keeps_the_residual_stream():
    m = _model("transformer")
    x = _inputs(m, 1)
    sc.prune(m, 0.5, granularity="neuron", scope="local", example_inputs=(x,))
    masks = sc.masks(m)
    rows = ~masks["blocks.0.attn.in_proj_weight"].any(1)  # q, k and v rows of the removed heads
    assert int(rows.sum()) == 3 * 16 and torch.equal(rows[:32], rows[32:64]) and torch.equal(rows[:32], rows[64:])
    assert torch.equal(rows[:32].reshape(4, 8).all(1), rows[:32].reshape(4, 8).any(1))  # whole heads
    small = sc.compact(m, (x,))
    attn = small.blocks[0].attn
    assert isinstance(attn, PrunedMultiheadAttention) and attn.num_heads == 2 and attn.embed_dim == 32
    assert attn.in_proj_weight.shape == (3 * 16, 32) and attn.out_proj.in_features == 16
    assert small.blocks[0].mlp.fc1.out_features == 64  # 128 hidden neurons, half removed
    assert small.blocks[0].mlp.fc2.out_features == 32  # the residual stream is kept (LayerNorm)
    assert small.embed.out_features == 32


def test_save_and_replay_from_a_fresh_instance(tmp_path):
    m = _model("resnet-20")
    x = _inputs(m, 1)
    sc.prune(m, 0.6, granularity="channel", example_inputs=(x,))
    small = sc.compact(m, (x,))
    path = tmp_path / "small.safetensors"
    sc.save(small, path)
    again = sc.load(path, zoo.model("resnet-20", **MODELS["resnet-20"])).eval()
    by_header = sc.load(path).eval()
    fresh = _inputs(m, 2, seed=5)
    with torch.no_grad():
        assert torch.equal(again(fresh), small(fresh))
        assert torch.equal(by_header(fresh), small(fresh))
    assert _params(again) == _params(small)


def test_compacted_model_trains():
    m = _model("vgg").train()
    x = _inputs(m, 1)
    sc.prune(m, 0.5, granularity="filter", example_inputs=(x,))
    small = sc.compact(m, (x,)).train()
    opt = torch.optim.SGD(small.parameters(), lr=0.05)
    batch, y = _inputs(m, 8, seed=3), torch.randint(0, 10, (8,))
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(small(batch), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


def test_prune_without_example_inputs_does_not_let_compact_change_outputs():
    m = _model("lenet-5")
    x = _inputs(m, 1)
    sc.prune(m, 0.5, granularity="filter")  # rows masked, biases not: nothing is exactly dead
    small = sc.compact(m, (x,))
    with torch.no_grad():
        assert torch.allclose(small(x), m(x), atol=1e-6)


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
