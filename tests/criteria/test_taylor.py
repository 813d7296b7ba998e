"""Taylor (first-order) and SNIP, by hand."""

import torch

import secateurs as sc

from .helpers import _linear, _sum_loss


def test_taylor_and_snip_by_hand():
    net = _linear([[2.0, -1.0]])
    one = [torch.tensor([[0.5, 3.0]])]  # dL/dw = x for L = w·x
    assert torch.allclose(sc.score(net, "taylor", data=one, loss_fn=_sum_loss)["0.weight"], torch.tensor([[1.0, 3.0]]))
    two = [torch.tensor([[1.0, 1.0]]), torch.tensor([[-1.0, 3.0]])]
    taylor = sc.score(net, "taylor", data=two, loss_fn=_sum_loss)["0.weight"]
    snip = sc.score(net, "snip", data=two, loss_fn=_sum_loss)["0.weight"]
    assert torch.allclose(taylor, torch.tensor([[2.0, 2.0]]))  # mean(|[2,-1]|, |[-2,-3]|)
    assert torch.allclose(snip, torch.tensor([[0.0, 2.0]]))  # |w · mean(g)| = |[2,-1]·[0,2]|
