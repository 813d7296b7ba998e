"""Runtime (input-dependent) channel pruning."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import secateurs as sc
from secateurs import masking
from secateurs.analysis.flops import count_flops
from secateurs.surgery.gates import (
    RuntimeGate,
    average_flops,
    kept_channels,
    wrap_convs,
)


def _dense_reference(gate: RuntimeGate, x: torch.Tensor) -> torch.Tensor:
    """Every channel computed, the dropped ones zeroed: what the eval path must equal."""
    idx = gate.saliency(x).topk(gate.k, dim=1).indices
    keep = torch.zeros(x.shape[0], gate.conv.out_channels).scatter_(1, idx, 1.0)
    return gate.conv(x) * keep[:, :, None, None]


@pytest.mark.parametrize("keep,channels,k", [(0.5, 8, 4), (0.3, 10, 3), (0.26, 8, 3), (1, 5, 5), (1e-3, 6, 1)])
def test_kept_channels_is_ceil(keep, channels, k):
    assert kept_channels(keep, channels) == k


@pytest.mark.parametrize("keep", [0, -0.1, 1.5, True, "half"])
def test_keep_outside_unit_interval_is_rejected(keep):
    with pytest.raises(sc.PruningError, match="keep must be a number in \\(0, 1\\]"):
        RuntimeGate(nn.Conv2d(2, 4, 3), keep=keep)
    with pytest.raises(sc.PruningError, match="keep"):
        wrap_convs(nn.Sequential(nn.Conv2d(2, 4, 3)), keep=keep)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_exactly_k_channels_active_and_the_others_exactly_zero(mode):
    torch.manual_seed(0)
    gate = RuntimeGate(nn.Conv2d(3, 10, 3, padding=1), keep=0.3)
    getattr(gate, mode)()
    x = torch.randn(6, 3, 7, 7)
    y = gate(x)
    active = gate.active
    assert active.shape == (6, 10) and active.sum(dim=1).tolist() == [math.ceil(0.3 * 10 - 1e-9)] * 6
    assert not y.transpose(0, 1)[~active.T].any()  # dropped channels: exactly 0
    assert y.transpose(0, 1)[active.T].abs().sum(dim=(1, 2)).gt(0).all()
    assert len({tuple(r) for r in active.tolist()}) > 1  # the choice depends on the input


@pytest.mark.parametrize("conv", [
    nn.Conv2d(4, 6, 3, padding=1, bias=False),
    nn.Conv2d(4, 6, 3, stride=2, dilation=2, padding=2, padding_mode="reflect"),
    nn.Conv2d(4, 8, 3, padding="same", groups=2),
    nn.Conv2d(4, 4, 3, groups=4),
])
def test_eval_computes_only_kept_filters_and_matches_dense_then_zeroed(conv):
    torch.manual_seed(0)
    gate = RuntimeGate(conv, keep=0.5).eval()
    x = torch.randn(5, 4, 9, 9)
    with torch.no_grad():
        assert torch.allclose(gate(x), _dense_reference(gate, x), atol=1e-5)


def test_eval_flops_counted_by_hand_and_by_torch():
    # conv 3 -> 8, 3x3, padding 1 on 5x5: per output channel 2 * 25 positions * 9 * 3 = 1350 FLOPs
    # side network: 2 * (3 * 4 + 4 * 8) = 88; keep 0.5 -> 4 channels: 4 * 1350 + 88 = 5488
    torch.manual_seed(0)
    gate = RuntimeGate(nn.Conv2d(3, 8, 3, padding=1), keep=0.5, hidden=4).eval()
    with pytest.raises(sc.PruningError, match="no input in eval mode"):
        gate.flops_spent
    gate.train()(torch.randn(2, 3, 5, 5))  # training forwards are not counted
    gate.eval()
    gate(torch.randn(3, 3, 5, 5))
    assert gate.inputs_seen == 3 and gate.flops_spent == 5488 and gate.flops_dense == 8 * 1350
    _, total = count_flops(nn.Sequential(gate), (torch.randn(3, 3, 5, 5),))  # what torch sees run
    assert total == 3 * 5488


def test_average_flops_over_a_loader_is_keep_times_conv_plus_side():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 2))
    assert wrap_convs(net, keep=0.5, hidden=4) == ["0", "2"]
    data = [(torch.randn(4, 3, 5, 5), torch.zeros(4)), (torch.randn(2, 3, 5, 5), torch.zeros(2))]
    report = average_flops(net, data)
    conv0, side0 = 8 * 1350, 2 * (3 * 4 + 4 * 8)
    conv1, side1 = 6 * 2 * 25 * 8, 2 * (8 * 4 + 4 * 6)  # 1x1 conv, 8 -> 6, keep 3 of 6
    assert report.layers == {"0": (conv0 / 2 + side0, conv0), "2": (conv1 / 2 + side1, conv1)}
    assert report.dense == conv0 + conv1 and report.spent == (conv0 + conv1) / 2 + side0 + side1
    assert report.ratio == pytest.approx(0.5 + (side0 + side1) / (conv0 + conv1))
    assert net.training and net[0].inputs_seen == 6


def test_gated_cnn_trains_and_the_side_network_learns():
    torch.manual_seed(0)
    y = torch.randint(0, 2, (128,))
    x = torch.randn(128, 3, 8, 8) * 0.5
    x[:, 0] += (2 * y - 1)[:, None, None].float()  # class = sign of channel 0's mean
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 2))
    wrap_convs(net, keep=0.5)
    gate = net[0]
    side = [p.detach().clone() for p in gate.saliency.parameters()]
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    losses = []
    for step in range(40):
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        if step == 0:
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gate.saliency.parameters())
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert any(not torch.equal(a, b) for a, b in zip(side, gate.saliency.parameters()))
    net.eval()
    with torch.no_grad():
        assert (net(x).argmax(1) == y).float().mean() > 0.9


def test_wrap_convs_chooses_and_checks_layers():
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Sequential(nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 1)))
    assert wrap_convs(net, layers=["1.*"]) == ["1.0", "1.1"]
    assert isinstance(net[1][0], RuntimeGate) and isinstance(net[0], nn.Conv2d)
    assert wrap_convs(net) == ["0"]  # already wrapped convs are skipped
    with pytest.raises(sc.PruningError, match="no Conv2d to wrap"):
        wrap_convs(net)
    with pytest.raises(sc.PruningError, match="matches no unwrapped Conv2d"):
        wrap_convs(nn.Sequential(nn.Conv2d(2, 2, 1)), layers="fc")
    with pytest.raises(sc.PruningError, match="hidden"):
        wrap_convs(nn.Sequential(nn.Conv2d(2, 2, 1)), hidden=0)
    with pytest.raises(sc.PruningError, match="itself a Conv2d"):
        wrap_convs(nn.Conv2d(2, 2, 1))
    with pytest.raises(sc.PruningError, match="Conv2d"):
        RuntimeGate(nn.Linear(2, 2))
    with pytest.raises(sc.PruningError, match="no RuntimeGate"):
        average_flops(nn.Sequential(nn.Conv2d(2, 2, 1)), [torch.randn(1, 2, 3, 3)])


def test_masked_conv_stays_masked_inside_the_gate():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 4, 3, padding=1)
    masking.set_mask(conv, torch.rand(conv.weight.shape) > 0.5)
    gate = RuntimeGate(conv, keep=0.75).eval()
    x = torch.randn(3, 2, 6, 6)
    with torch.no_grad():
        assert torch.allclose(gate(x), _dense_reference(gate, x), atol=1e-5)
