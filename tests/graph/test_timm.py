"""timm CNNs at 50% of their channels: every prunable channel space loses half, compaction keeps the outputs.

Skipped where timm does not import: timm imports torchvision, and PyPI's torchvision wheel is built for
torch's CUDA build (``operator torchvision::nms does not exist`` beside the CPU build); see docs/guide.md.
"""

import pytest
import torch

import secateurs as sc
from secateurs import graph
from secateurs.surgery.compact import dead_roots

try:
    import timm
except (ImportError, RuntimeError) as exc:  # RuntimeError: a torchvision built for another torch
    pytest.skip(f"timm does not import here: {str(exc).splitlines()[0]}", allow_module_level=True)


@pytest.mark.parametrize("name", ["mobilenetv3_small_100", "regnety_002", "ghostnet_100"])
def test_timm_cnn_loses_half_of_its_prunable_channels(name):
    torch.manual_seed(0)
    m = timm.create_model(name, pretrained=False, num_classes=4).eval()
    x = torch.randn(1, 3, 32, 32)
    units = graph.analyse(m, (x,)).units()
    sc.prune(m, 0.5, granularity="channel", scope="local", example_inputs=(x,))
    removed = len(dead_roots(m, graph.analyse(m, (x,)))) / len(units)
    assert abs(removed - 0.5) <= 0.02
    small = sc.compact(m, (x,))
    with torch.no_grad():
        assert (small(x) - m(x)).abs().max() <= 1e-4
