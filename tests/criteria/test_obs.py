"""OBS / SparseGPT: scores, the closed-form update, re-pruning."""

import copy

import torch
from torch import nn

import secateurs as sc
from secateurs.criteria import obs as obs_module

from .helpers import _linear


def test_obs_scores_with_dampening():
    net = _linear([[1.0, 1.0]])
    x = torch.tensor([[2.0**0.5, 0.0], [0.0, 8.0**0.5]])  # 2 XᵀX / N = diag(2, 8)
    obs = sc.score(net, "obs", data=[x])["0.weight"]
    damp = 0.01 * 5.0
    assert torch.allclose(obs, torch.tensor([[(2 + damp) / 2, (8 + damp) / 2]]))


def test_obs_update_is_the_closed_form_for_the_first_column():
    torch.manual_seed(0)
    x = torch.randn(64, 3)
    x[:, 2] = x[:, 0] + 0.1 * torch.randn(64)  # correlated inputs let the update compensate
    w = torch.tensor([[0.5, 1.0, 2.0]])
    crit = sc.criteria.get("obs")
    net = _linear(w.tolist())
    sc.prune(net, sparsity=1 / 3, criterion=crit, scope="local", data=[x])
    assert sc.masks(net)["0.weight"].tolist() == [[False, True, True]]
    hinv = torch.linalg.inv(crit.hessians["0.weight"])
    expected = w - (w[0, 0] / hinv[0, 0]) * hinv[:, 0]
    assert torch.allclose(net[0].weight.detach(), expected, atol=1e-5)
    # and it beats plain masking at reconstructing the outputs
    plain = w.clone()
    plain[0, 0] = 0
    err_obs = (x @ net[0].weight.detach().T - x @ w.T).pow(2).mean()
    err_plain = (x @ plain.T - x @ w.T).pow(2).mean()
    assert err_obs < err_plain


def test_obs_surgeon_zeroes_pruned_entries():
    torch.manual_seed(0)
    w = torch.randn(4, 300)
    keep = torch.rand(4, 300) > 0.5
    h = torch.eye(300) * 2
    u = torch.linalg.cholesky(torch.linalg.inv(h), upper=True)
    out = obs_module.surgeon(w, keep, u)
    assert bool((out[~keep] == 0).all())
    assert torch.allclose(out[keep], w[keep])  # a diagonal H gives nothing to compensate with


def test_obs_repruning_starts_from_the_masked_weights():
    torch.manual_seed(0)
    x = torch.randn(256, 32) @ torch.randn(32, 32) * 0.3
    net = nn.Sequential(nn.Linear(32, 16))
    sc.prune(net, 0.5, criterion="random")
    with torch.no_grad():
        ref = net(x)
    corrected = copy.deepcopy(net)
    sc.prune(corrected, 0.6, criterion="obs", data=[x], scope="local")
    plain = copy.deepcopy(net)
    plain[0].parametrizations.weight[0].mask.copy_(sc.masks(corrected)["0.weight"])  # same mask, no update
    with torch.no_grad():
        err_obs = (corrected(x) - ref).pow(2).mean()
        err_plain = (plain(x) - ref).pow(2).mean()
    assert err_obs < err_plain
