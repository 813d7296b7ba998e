"""Ops that move channels without freezing them: asserts, shape queries, functional norms, squeeze-excitation,
grouped and multiplier-depthwise convs, chunks, permutes (the patterns of timm CNNs, at toy size)."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import secateurs as sc
from secateurs import graph


class _Head(nn.Module):
    """Pool, flatten, classify: every toy below ends here."""

    def __init__(self, c):
        super().__init__()
        self.fc = nn.Linear(c, 3)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class _Assert(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Conv2d(3, 16, 3), nn.Conv2d(16, 8, 1), _Head(8)

    def forward(self, x):
        x = self.a(x)
        torch._assert(x.ndim == 4, "4D")
        torch._assert(x.shape[1] == x.size(1), "channels")
        return self.head(self.b(x))


class _BNAct(nn.BatchNorm2d):
    """timm's BatchNormAct2d: a BatchNorm subclass that calls F.batch_norm, then an activation."""

    def __init__(self, c):
        super().__init__(c)
        self.act = nn.ReLU()

    def forward(self, x):
        torch._assert(x.ndim == 4, f"expected 4D input (got {x.ndim}D input)")
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.1, self.eps)
        return self.act(x)


class _BNActNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.bn, self.b, self.head = nn.Conv2d(3, 16, 3), _BNAct(16), nn.Conv2d(16, 8, 1), _Head(8)

    def forward(self, x):
        return self.head(self.b(self.bn(self.a(x))))


class _SE(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.reduce, self.expand = nn.Conv2d(3, 16, 3), nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)
        self.gate, self.b, self.head = nn.Sigmoid(), nn.Conv2d(16, 8, 1), _Head(8)

    def forward(self, x):
        x = torch.relu(self.a(x))
        s = self.gate(self.expand(torch.relu(self.reduce(x.mean((2, 3), keepdim=True)))))
        return self.head(self.b(x * s))


class _Grouped(nn.Module):
    def __init__(self, groups, out=16):
        super().__init__()
        self.a, self.g = nn.Conv2d(3, 16, 3), nn.Conv2d(16, out, 3, padding=1, groups=groups)
        self.b, self.head = nn.Conv2d(out, 8, 1), _Head(8)

    def forward(self, x):
        return self.head(self.b(torch.relu(self.g(torch.relu(self.a(x))))))


class _Chunk(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Conv2d(3, 16, 3), nn.Conv2d(8, 8, 1), _Head(8)

    def forward(self, x):
        left, right = self.a(x).chunk(2, dim=1)
        return self.head(self.b(left * torch.sigmoid(right)))


class _Permute(nn.Module):
    """LayerNorm over the channels of a channels-last view (timm's LayerNorm2d): those channels are kept."""

    def __init__(self):
        super().__init__()
        self.a, self.norm = nn.Conv2d(3, 16, 3), nn.Parameter(torch.ones(16))
        self.fc1, self.fc2, self.head = nn.Linear(16, 32), nn.Linear(32, 16), _Head(16)

    def forward(self, x):
        x = self.a(x).permute(0, 2, 3, 1)
        x = F.layer_norm(x, (16,), self.norm)
        x = x + self.fc2(F.gelu(self.fc1(x)))
        return self.head(x.permute(0, 3, 1, 2))


class _TimmLinear(nn.Linear):
    """timm's ``Linear``: an ``nn.Linear`` subclass fx traces into, giving ``F.linear(x, fc.weight, fc.bias)``."""

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class _FunctionalLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.fc = nn.Conv2d(3, 16, 3), _TimmLinear(16, 3)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(torch.relu(self.a(x)), 1), 1))


class _Scale(nn.Module):
    """A learned scale: one value for every channel passes them; one per channel (``per_channel``) keeps them."""

    def __init__(self, per_channel=False):
        super().__init__()
        self.a, self.b, self.head = nn.Conv2d(3, 16, 3), nn.Conv2d(16, 8, 1), _Head(8)
        self.gamma = nn.Parameter(torch.full((16 if per_channel else 1,), 0.5))

    def forward(self, x):
        return self.head(self.b(torch.relu(self.a(x).mul(self.gamma.reshape(1, -1, 1, 1)))))


CASES = {"assert": (_Assert, "a"), "functional_linear": (_FunctionalLinear, "a"), "layer_scale": (_Scale, "a"), "bn_act": (_BNActNet, "a"), "squeeze_excite": (_SE, "a"),
         "grouped": (lambda: _Grouped(4), "a"), "depthwise_x2": (lambda: _Grouped(16, 32), "a"),
         "chunk": (_Chunk, "a"), "permute_layer_norm": (_Permute, "fc1")}


@pytest.mark.parametrize("case", sorted(CASES))
def test_half_of_the_channels_go_and_compaction_keeps_the_outputs(case):
    make, first = CASES[case]
    torch.manual_seed(0)
    m = make().eval()
    x = torch.randn(2, 3, 10, 10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = sc.prune(m, 0.5, granularity="channel", scope="local", example_inputs=(x,))
    rows = getattr(m, first).weight.shape[0]
    assert int(sc.masks(m)[f"{first}.weight"].flatten(1).any(1).sum()) == rows // 2
    if case == "permute_layer_norm":  # the residual stream under a LayerNorm over channels stays, and says why
        assert {n.split(":")[0] for n in result.notes} == {"a", "fc2", "head.fc"}
        assert "LayerNorm over channels" in " ".join(result.notes)
    else:  # only the classifier's outputs stay
        assert [n.split(":")[0] for n in result.notes] == ["fc" if case == "functional_linear" else "head.fc"]
    assert len([w for w in caught if "less than asked" in str(w.message)]) == 1
    small = sc.compact(m, (x,))
    assert getattr(small, first).weight.shape[0] == rows // 2
    with torch.no_grad():
        assert (small(x) - m(x)).abs().max() <= 1e-4


def test_squeeze_excitation_gate_is_tied_to_the_block_channels():
    g = graph.analyse(_SE().eval(), (torch.randn(1, 3, 8, 8),))
    assert [g.atoms.find(a) for a in g.rows["expand"]] == [g.atoms.find(a) for a in g.rows["a"]]


def test_grouped_conv_removes_the_same_positions_in_every_group():
    torch.manual_seed(0)
    m, x = _Grouped(4).eval(), torch.randn(1, 3, 8, 8)
    sc.prune(m, 0.5, granularity="channel", scope="local", example_inputs=(x,))
    kept = sc.masks(m)["g.weight"].flatten(1).any(1).reshape(4, 4)
    assert bool((kept == kept[0]).all()) and int(kept[0].sum()) == 2
    small = sc.compact(m, (x,))
    assert (small.g.in_channels, small.g.out_channels, small.g.groups) == (8, 8, 4)


def test_channel_shuffle_keeps_its_channels_and_says_why():
    class Shuffle(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.head = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 1), _Head(8)

        def forward(self, x):
            x = self.a(x)
            n, c, h, w = x.shape
            x = x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
            return self.head(self.b(x))

    m = Shuffle().eval()
    with pytest.warns(UserWarning, match=r"less than asked.*a: 8 of 8 channels kept \(.*view"):
        sc.prune(m, 0.5, granularity="channel", scope="local", example_inputs=(torch.randn(1, 3, 8, 8),))


class _DynamicSlice(nn.Module):
    """A slice of the channel axis whose bounds come from the traced shape (as timm's Swin pads and crops)."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Conv2d(3, 16, 3), nn.Conv2d(16, 8, 1), _Head(8)

    def forward(self, x):
        y = self.a(x)
        return self.head(self.b(y[:, : y.shape[1]]))


def test_a_slice_with_traced_bounds_freezes_its_channels_with_a_warning():
    model = _DynamicSlice()
    with pytest.warns(UserWarning, match=r"a: 16 of 16 channels kept \(a slice that cuts the channel axis\)"):
        sc.prune(model, 0.5, granularity="channel", scope="local", example_inputs=(torch.randn(1, 3, 8, 8),))
    assert sc.masks(model)["b.weight"].reshape(8, -1).all(dim=1).sum() == 4  # b's own filters still pruned


def test_a_per_channel_parameter_keeps_the_channels_it_scales_and_names_it():
    m = _Scale(per_channel=True).eval()
    with pytest.warns(UserWarning, match=r"a: 16 of 16 channels kept \(a per-channel parameter \(gamma\) in \.mul"):
        sc.prune(m, 0.5, granularity="channel", scope="local", example_inputs=(torch.randn(1, 3, 8, 8),))
