"""GraSP, by hand."""

import torch

import secateurs as sc

from .helpers import _half_square, _linear


def test_grasp_by_hand():
    net = _linear([[3.0], [1.0]])
    data = [torch.tensor([[2.0]])]  # g = w x² = [12, 4], H g = x² g = [48, 16]
    grasp = sc.score(net, "grasp", data=data, loss_fn=_half_square)["0.weight"]
    assert torch.allclose(grasp, torch.tensor([[144.0], [16.0]]))
