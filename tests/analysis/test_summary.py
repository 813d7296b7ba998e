"""summary, sparsity and FLOPs."""

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.analysis.flops import count_flops


def test_summary_counts_and_totals():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))
    sc.prune(net, sparsity=0.5, scope="local")
    s = sc.summary(net)
    assert [r.name for r in s.layers] == ["0.weight", "2.weight"]
    assert [r.shape for r in s.layers] == [(20, 10), (5, 20)]
    assert [r.nonzero for r in s.layers] == [100, 50]
    assert s.params == 300 and s.nonzero == 150 and s.total_params == 325
    assert s.density == 0.5 and s.compression == 2.0
    assert s.flops is None
    text = str(s)
    assert "compression 2.00x" in text and "0.weight" in text and "Linear" in text
    assert "| 0.weight | Linear | 20×10 | 200 | 100 | 50.00% |" in s.markdown()


def test_flops_of_linear_and_conv_by_hand():
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    per_layer, total = count_flops(net, (torch.ones(1, 2, 8, 8),))
    conv = 2 * (4 * 6 * 6) * (2 * 3 * 3)  # 2 FLOPs per multiply-add, one per output element and weight
    lin = 2 * 144 * 10
    assert per_layer == {"0.weight": conv, "2.weight": lin}
    assert total == conv + lin


def test_flops_after_pruning_scale_with_density():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    sc.prune(net, sparsity=0.75, scope="local")
    s = sc.summary(net, example_inputs=torch.ones(3, 16))
    assert s.flops_dense == 3 * 2 * (16 * 32 + 32 * 4)
    assert s.flops == round(s.flops_dense * 0.25)
    assert "dense-equivalent" in str(s)


def test_sparsity_survives_finalize():
    net = nn.Sequential(nn.Linear(8, 8))
    sc.prune(net, sparsity=0.25)
    sc.finalize(net)
    assert sc.sparsity(net) == pytest.approx(0.25)
    assert sc.summary(net).nonzero == 48


def test_bad_example_inputs():
    with pytest.raises(sc.PruningError, match="example_inputs"):
        sc.summary(nn.Linear(2, 2), example_inputs="x")
