"""OWL's allocation from outlier ratios."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from secateurs.llm import owl


def test_allocate_more_outliers_less_sparsity():
    s = owl.allocate([0.01, 0.03, 0.02], 0.5)
    assert s == pytest.approx([0.58, 0.42, 0.5])
    assert owl.allocate([0.02, 0.02], 0.7) == [0.7, 0.7]


def test_outlier_ratio_counts_scores_above_m_times_the_mean():
    lin = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[10.0, 1.0, 1.0, 1.0]]))
    layer = nn.Sequential(lin)
    x = torch.ones(1, 2, 4)
    # scores [10, 1, 1, 1], mean 3.25: one above 2 x mean, none above 5 x mean
    assert owl.outlier_ratio(layer, [x], lambda m, t: m(t), m=2.0) == 0.25
    assert owl.outlier_ratio(layer, [x], lambda m, t: m(t)) == 0.0
