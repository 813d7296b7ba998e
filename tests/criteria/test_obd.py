"""OBD: exact on a diagonal Hessian."""

import torch

import secateurs as sc

from .helpers import _half_square, _linear


def test_obd_exact_on_a_diagonal_hessian():
    net = _linear([[3.0], [1.0]])
    data = [torch.tensor([[2.0]])]  # L = ½ Σ (w_k x)², H = diag(x²) = diag(4, 4)
    obd = sc.score(net, "obd", data=data, loss_fn=_half_square)["0.weight"]
    assert torch.allclose(obd, torch.tensor([[18.0], [2.0]]))  # w² · 4 / 2


def _exact_diagonal(net, x, y):
    import torch.nn.functional as F

    w = net[2].weight
    g = torch.autograd.grad(F.cross_entropy(net(x), y), w, create_graph=True)[0].reshape(-1)
    return torch.stack([torch.autograd.grad(g[j], w, retain_graph=True)[0].reshape(-1)[j] for j in range(g.numel())])


def test_the_default_probe_count_tracks_the_exact_diagonal():
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4))
    x, y = torch.randn(64, 6), torch.randint(0, 4, (64,))
    exact = _exact_diagonal(net, x, y)
    w2 = net[2].weight.detach().reshape(-1) ** 2
    data = [(x[:32], y[:32]), (x[32:], y[32:])]

    def corr(crit):
        est = sc.score(net, crit, data=data, loss_fn=F.cross_entropy)["2.weight"].reshape(-1)
        return float(torch.corrcoef(torch.stack([est, w2 * exact / 2]))[0, 1])

    assert corr("obd") > 0.9  # 128 probes in all
    assert corr(sc.criteria.get("obd").__class__(probes=4)) < corr("obd")  # the old default: 4 per batch


def test_probes_are_checked_and_reach_the_criterion_from_a_recipe():
    import pytest

    from secateurs.runs import recipes

    with pytest.raises(sc.PruningError, match="probes must be a positive integer"):
        sc.criteria.get("obd").__class__(probes=0)
    stage = recipes.parse("model: mlp\ndata: digits\nprune:\n  - {sparsity: 0.5, criterion: obd, probes: 8}\n").prune[0]
    assert stage.options()["criterion"].probes == 8
    with pytest.raises(sc.PruningError, match="probes applies to criterion obd"):
        recipes.parse("model: mlp\nprune:\n  - {sparsity: 0.5, probes: 8}\n")
