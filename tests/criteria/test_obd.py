"""OBD: exact on a diagonal Hessian."""

import torch

import secateurs as sc

from .helpers import _half_square, _linear


def test_obd_exact_on_a_diagonal_hessian():
    net = _linear([[3.0], [1.0]])
    data = [torch.tensor([[2.0]])]  # L = ½ Σ (w_k x)², H = diag(x²) = diag(4, 4)
    obd = sc.score(net, "obd", data=data, loss_fn=_half_square)["0.weight"]
    assert torch.allclose(obd, torch.tensor([[18.0], [2.0]]))  # w² · 4 / 2
