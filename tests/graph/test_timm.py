"""timm CNNs at 50% of their channels: every prunable channel space loses half, compaction keeps the outputs.

Random init, 4 classes, 32x32 inputs. Skipped where timm does not import (it is in the ``dev`` extra; the
suite's conftest calls ``secateurs.compat.prepare_torchvision()`` first, see docs/guide.md "timm").
"""

import warnings

import pytest
import torch

import secateurs as sc
from secateurs import graph
from secateurs.surgery.compact import dead_roots

try:
    import timm
except (ImportError, RuntimeError) as exc:  # RuntimeError: a torchvision built for another torch
    pytest.skip(f"timm does not import here: {str(exc).splitlines()[0]}", allow_module_level=True)

CNNS = {  # name: the most parameters left (Torch-Pruning 1.6 at 50%, same models, 64x64: 0.25-0.26, convnext 0.26)
    "resnet18": 0.26, "resnet50": 0.26, "resnext26ts": 0.26, "densenet121": 0.26, "mobilenetv2_100": 0.27,
    "mobilenetv3_small_100": 0.27, "efficientnet_b0": 0.27, "regnety_002": 0.26, "ghostnet_100": 0.26,
    "convnext_atto": 0.56,  # its residual stream is kept: LayerNorm over channels (see the test)
}


def _params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", sorted(CNNS))
def test_timm_cnn_loses_half_of_its_prunable_channels(name):
    torch.manual_seed(0)
    m = timm.create_model(name, pretrained=False, num_classes=4).eval()
    x = torch.randn(1, 3, 32, 32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = sc.prune(m, 0.5, granularity="channel", scope="local", example_inputs=(x,))
    g = graph.analyse(m, (x,))
    removed = len(dead_roots(m, g)) / len(g.units())
    assert abs(removed - 0.5) <= 0.02
    kept = {n.split(":")[0] for n in result.notes}
    assert len([w for w in caught if "less than asked" in str(w.message)]) == 1  # the kept ones, said once
    if name == "convnext_atto":  # the residual stream: every stage's stem / downsample and dw convs say so
        assert {"stem.0", "stages.3.blocks.1.conv_dw"} <= kept and not any("mlp.fc1" in k for k in kept)
    else:  # only the classifier's outputs
        assert kept == {m.default_cfg["classifier"]}
    small = sc.compact(m, (x,))
    with torch.no_grad():
        assert (small(x) - m(x)).abs().max() <= 1e-4
    assert _params(small) / _params(m) <= CNNS[name]
