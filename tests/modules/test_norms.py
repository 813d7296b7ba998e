"""Norms that normalise over their live channels: the same outputs as the narrower norm compaction builds."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from secateurs.modules import norms

KEEP = [0, 2, 3, 5]


class LayerNorm2d(nn.LayerNorm):
    """timm's NCHW LayerNorm (normalises axis 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def _random(norm: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for p in norm.parameters():
        nn.init.normal_(p)
    return norm


def _removed(norm: nn.Module) -> nn.Module:
    gone = [i for i in range(norm.weight.shape[0]) if i not in KEEP]
    with torch.no_grad():
        for p in norm.parameters():
            p[gone] = 0
    return norm


def _narrow(norm: nn.Module) -> nn.Module:
    small = copy.deepcopy(norm)
    small.weight = nn.Parameter(norm.weight.detach()[KEEP])
    if getattr(norm, "bias", None) is not None:
        small.bias = nn.Parameter(norm.bias.detach()[KEEP])
    if hasattr(small, "normalized_shape"):
        small.normalized_shape = (len(KEEP),)
    return small


@pytest.mark.parametrize(("make", "shape", "axis"), [
    (lambda: nn.LayerNorm(6), (2, 3, 6), -1),
    (lambda: nn.RMSNorm(6, eps=1e-6), (2, 3, 6), -1),
    (lambda: LayerNorm2d(6), (2, 6, 3, 3), 1),
])
def test_a_hooked_norm_computes_what_the_narrower_norm_computes(make, shape, axis):
    norm = _removed(_random(make()))
    small = _narrow(norm)
    x = torch.randn(*shape)
    plain = norm(x)
    norms.keep_statistics(norm)
    out = norm(x)
    kept = torch.tensor(KEEP)
    assert norms.channel_axis(norm) == axis and norms.hooked(nn.Sequential(norm)) == ["0"]
    assert (out.index_select(axis, kept) - small(x.index_select(axis, kept))).abs().max() <= 1e-5
    assert out.index_select(axis, torch.tensor([1, 4])).abs().max() == 0  # removed channels output 0
    assert (plain - out).abs().max() > 1e-3  # the statistics over six channels were not these
    copied = copy.deepcopy(norm)
    norms.drop_statistics(copied)
    assert torch.equal(copied(x), plain) and torch.equal(norm(x), out)  # the copy's hook went, not the original's


def test_a_norm_with_every_channel_live_is_unchanged_and_other_modules_are_refused():
    norm = _random(nn.LayerNorm(6))
    x = torch.randn(2, 6)
    before = norm(x)
    norms.keep_statistics(norm)
    norms.keep_statistics(norm)  # idempotent: one hook
    assert torch.equal(norm(x), before) and len(norm._forward_hooks) == 1
    assert norms.channel_axis(nn.BatchNorm1d(6)) is None and norms.width(nn.LayerNorm((2, 3))) is None
    with pytest.raises(ValueError, match="BatchNorm1d is not a LayerNorm"):
        norms.keep_statistics(nn.BatchNorm1d(6))
