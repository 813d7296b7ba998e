"""Dependency graph, coupled channel pruning and sc.compact on every zoo model."""

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs import zoo
from secateurs.surgery import graph
from secateurs.surgery.attention import PrunedMultiheadAttention

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
    with pytest.warns(UserWarning, match="layer collapse"):
        sc.prune(m, 0.999, granularity="channel", scope="local", example_inputs=(x,))
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


def test_pruned_attention_matches_torch_for_all_heads():
    torch.manual_seed(0)
    for batch_first in (True, False):
        mha = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
        ours = PrunedMultiheadAttention.from_mha(mha, [0, 1, 2, 3]).eval()
        x = torch.randn(2, 5, 16)  # (batch, sequence, features)
        x = x if batch_first else x.transpose(0, 1)
        mask = torch.zeros(2, 5, dtype=torch.bool)
        mask[0, -2:] = True
        with torch.no_grad():
            a, wa = mha(x, x, x, key_padding_mask=mask)
            b, wb = ours(x, x, x, key_padding_mask=mask)
        assert torch.allclose(a, b, atol=1e-6) and torch.allclose(wa, wb, atol=1e-6)


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


def test_prune_without_example_inputs_does_not_let_compact_change_outputs():
    m = _model("lenet-5")
    x = _inputs(m, 1)
    sc.prune(m, 0.5, granularity="filter")  # rows masked, biases not: nothing is exactly dead
    small = sc.compact(m, (x,))
    with torch.no_grad():
        assert torch.allclose(small(x), m(x), atol=1e-6)
