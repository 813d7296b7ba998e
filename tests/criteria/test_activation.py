"""Activation criterion (Molchanov 2017), by hand."""

import torch

import secateurs as sc

from .helpers import _linear, _product_loss


def test_activation_by_hand():
    net = _linear([[1.0, 0.0], [0.0, 1.0]])
    data = [(torch.tensor([[2.0, 1.0], [4.0, 1.0]]), torch.tensor([[1.0, 1.0], [-1.0, 1.0]]))]
    act = sc.score(net, "activation", data=data, loss_fn=_product_loss)["0.weight"]
    assert torch.allclose(act, torch.tensor([[1.0, 1.0], [1.0, 1.0]]))  # |(2-4)/2|, |(1+1)/2|
