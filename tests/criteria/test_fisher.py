"""Fisher (per channel), by hand, on linear and conv layers."""

import pytest
import torch
from torch import nn

import secateurs as sc

from .helpers import _linear, _product_loss


def test_fisher_by_hand():
    net = _linear([[1.0, 0.0], [0.0, 1.0]])
    data = [(torch.tensor([[2.0, 1.0]]), torch.tensor([[0.5, -4.0]]))]
    fisher = sc.score(net, "fisher", data=data, loss_fn=_product_loss)["0.weight"]
    assert torch.allclose(fisher, torch.tensor([[0.5, 0.5], [8.0, 8.0]]))  # (h·g)²/2 per row


def test_fisher_and_activation_on_conv_sum_positions():
    conv = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False))
    with torch.no_grad():
        conv[0].weight.fill_(1.0)
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # h = x, 4 positions
    data = [(x, torch.ones(1, 1, 2, 2))]
    fisher = sc.score(conv, "fisher", data=data, loss_fn=_product_loss)["0.weight"]
    act = sc.score(conv, "activation", data=data, loss_fn=_product_loss)["0.weight"]
    assert float(fisher) == pytest.approx(10.0**2 / 2)
    assert float(act) == pytest.approx(10.0 / 4)
