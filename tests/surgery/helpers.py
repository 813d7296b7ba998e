"""Models with BatchNorm statistics that matter (random, seeded), for folding and merging tests."""

import torch
from torch import nn


def random_bn_stats(net: nn.Module, seed: int = 0) -> nn.Module:
    """``net`` in eval mode with every BatchNorm2d's statistics and affine parameters drawn at random."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g))
    return net.eval()
