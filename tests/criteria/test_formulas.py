"""Every data criterion against values computed by hand on tiny models."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import secateurs as sc
from secateurs.criteria import obs as obs_module, synflow


def _linear(weight, bias=False):
    w = torch.tensor(weight, dtype=torch.float32)
    lin = nn.Linear(w.shape[1], w.shape[0], bias=bias)
    with torch.no_grad():
        lin.weight.copy_(w)
        if bias:
            lin.bias.zero_()
    return nn.Sequential(lin)


def _sum_loss(out, _targets):
    return out.sum()


def _half_square(out, _targets):
    return 0.5 * out.pow(2).sum()


def test_taylor_and_snip_by_hand():
    net = _linear([[2.0, -1.0]])
    one = [torch.tensor([[0.5, 3.0]])]  # dL/dw = x for L = w·x
    assert torch.allclose(sc.score(net, "taylor", data=one, loss_fn=_sum_loss)["0.weight"], torch.tensor([[1.0, 3.0]]))
    two = [torch.tensor([[1.0, 1.0]]), torch.tensor([[-1.0, 3.0]])]
    taylor = sc.score(net, "taylor", data=two, loss_fn=_sum_loss)["0.weight"]
    snip = sc.score(net, "snip", data=two, loss_fn=_sum_loss)["0.weight"]
    assert torch.allclose(taylor, torch.tensor([[2.0, 2.0]]))  # mean(|[2,-1]|, |[-2,-3]|)
    assert torch.allclose(snip, torch.tensor([[0.0, 2.0]]))  # |w · mean(g)| = |[2,-1]·[0,2]|


def test_obd_exact_on_a_diagonal_hessian():
    net = _linear([[3.0], [1.0]])
    data = [torch.tensor([[2.0]])]  # L = ½ Σ (w_k x)², H = diag(x²) = diag(4, 4)
    obd = sc.score(net, "obd", data=data, loss_fn=_half_square)["0.weight"]
    assert torch.allclose(obd, torch.tensor([[18.0], [2.0]]))  # w² · 4 / 2


def test_grasp_by_hand():
    net = _linear([[3.0], [1.0]])
    data = [torch.tensor([[2.0]])]  # g = w x² = [12, 4], H g = x² g = [48, 16]
    grasp = sc.score(net, "grasp", data=data, loss_fn=_half_square)["0.weight"]
    assert torch.allclose(grasp, torch.tensor([[144.0], [16.0]]))


def _product_loss(out, targets):
    return (out * targets).sum() / len(out)  # per-example gradient dL_n/dh_n = targets_n


def test_fisher_by_hand():
    net = _linear([[1.0, 0.0], [0.0, 1.0]])
    data = [(torch.tensor([[2.0, 1.0]]), torch.tensor([[0.5, -4.0]]))]
    fisher = sc.score(net, "fisher", data=data, loss_fn=_product_loss)["0.weight"]
    assert torch.allclose(fisher, torch.tensor([[0.5, 0.5], [8.0, 8.0]]))  # (h·g)²/2 per row


def test_activation_by_hand():
    net = _linear([[1.0, 0.0], [0.0, 1.0]])
    data = [(torch.tensor([[2.0, 1.0], [4.0, 1.0]]), torch.tensor([[1.0, 1.0], [-1.0, 1.0]]))]
    act = sc.score(net, "activation", data=data, loss_fn=_product_loss)["0.weight"]
    assert torch.allclose(act, torch.tensor([[1.0, 1.0], [1.0, 1.0]]))  # |(2-4)/2|, |(1+1)/2|


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


def test_wanda_by_hand_and_row_comparison():
    net = _linear([[1.0, -2.0]])
    data = [torch.tensor([[3.0, 0.0], [4.0, 1.0]])]
    wanda = sc.score(net, "wanda", data=data)["0.weight"]
    assert torch.allclose(wanda, torch.tensor([[12.5**0.5, 2 * 0.5**0.5]]))
    # per-row comparison: under local scope every row loses exactly half
    net = _linear([[100.0, 90.0, 80.0, 70.0], [1.0, 2.0, 3.0, 4.0]])
    sc.prune(net, sparsity=0.5, criterion="wanda", scope="local", data=[torch.ones(3, 4)])
    m = sc.masks(net)["0.weight"]
    assert m.tolist() == [[True, True, False, False], [False, False, True, True]]


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


def test_synflow_conserves_flow_by_hand():
    net = nn.Sequential(nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False))
    with torch.no_grad():
        net[0].weight.fill_(2.0)
        net[1].weight.fill_(-3.0)
    s = sc.score(net, "synflow", example_inputs=(torch.zeros(1, 1),))
    assert float(s["0.weight"]) == pytest.approx(6.0) and float(s["1.weight"]) == pytest.approx(6.0)


def test_synflow_avoids_layer_collapse_where_magnitude_does_not():
    torch.manual_seed(0)

    def make():
        net = nn.Sequential(nn.Linear(20, 50), nn.ReLU(), nn.Linear(50, 50), nn.ReLU(), nn.Linear(50, 2))
        with torch.no_grad():
            net[4].weight.mul_(1e-3)
        return net

    mag = make()
    with pytest.warns(UserWarning, match="layer collapse"):
        sc.prune(mag, sparsity=0.97, criterion="magnitude")
    flow = make()
    sc.prune(flow, sparsity=0.97, criterion="synflow", example_inputs=(torch.zeros(1, 20),))
    assert sc.sparsity(flow) == pytest.approx(0.97, abs=1e-3)
    assert all(int(m.sum()) > 0 for m in sc.masks(flow).values())


@pytest.mark.parametrize("name", ["taylor", "snip", "obd", "grasp", "fisher", "activation", "wanda", "obs"])
def test_missing_data_names_the_criterion(name):
    net = _linear([[1.0, 2.0]])
    with pytest.raises(sc.PruningError, match=f"criterion '{name}' needs data="):
        sc.prune(net, sparsity=0.5, criterion=name)
    assert sc.masks(net) == {}


def test_missing_loss_and_missing_shape():
    net = _linear([[1.0, 2.0]])
    with pytest.raises(sc.PruningError, match="criterion 'taylor' needs loss_fn="):
        sc.prune(net, sparsity=0.5, criterion="taylor", data=[torch.ones(1, 2)])
    with pytest.raises(sc.PruningError, match="synflow.*example_inputs"):
        sc.prune(net, sparsity=0.5, criterion="synflow")


@pytest.mark.parametrize("name", ["taylor", "snip", "obd", "grasp", "fisher", "activation", "wanda", "obs", "synflow"])
def test_scoring_leaves_the_model_as_it_was(name):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    net.train()
    net[3].bias.requires_grad_(False)
    net[0].weight.grad = torch.full_like(net[0].weight, 7.0)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    data = [(torch.randn(6, 4), torch.randint(0, 3, (6,))) for _ in range(2)]
    sc.score(net, name, data=data, loss_fn=F.cross_entropy, example_inputs=(torch.randn(2, 4),))
    assert net.training
    assert not net[3].bias.requires_grad and net[0].weight.requires_grad
    assert torch.equal(net[0].weight.grad, torch.full_like(net[0].weight, 7.0))
    assert net[3].weight.grad is None
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k  # BatchNorm statistics did not move


def test_dict_batches_for_keyword_models():
    class Kw(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 2)

        def forward(self, input_ids=None, attention_mask=None):
            return self.proj(input_ids * attention_mask)

    net = Kw()
    data = [{"input_ids": torch.randn(5, 4), "attention_mask": torch.ones(5, 4)}]
    sc.prune(net, sparsity=0.5, criterion="wanda", data=data, scope="local")
    assert sc.sparsity(net) == 0.5


def test_bad_batches_are_a_clear_error():
    with pytest.raises(sc.PruningError, match="data batches must be"):
        sc.prune(_linear([[1.0, 2.0]]), sparsity=0.5, criterion="wanda", data=[(1, 2, 3)])
    with pytest.raises(sc.PruningError, match="no batches"):
        sc.prune(_linear([[1.0, 2.0]]), sparsity=0.5, criterion="wanda", data=[])


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


def test_synflow_zeroes_every_bias_of_its_copy():
    mha = nn.MultiheadAttention(8, 2)
    conv = nn.Conv2d(2, 2, 1)
    seq = nn.Sequential(conv, nn.ReLU(), nn.Conv2d(2, 1, 1))
    sc.prune(seq, 0.5, granularity="channel", scope="local", example_inputs=(torch.ones(1, 2, 2, 2),))
    assert "bias" in conv.parametrizations  # a masked bias is stored as ...bias.original
    net = synflow._linearised(nn.ModuleDict({"mha": mha, "conv": conv}))
    assert float(net["mha"].in_proj_bias.abs().max()) == 0.0
    assert float(net["conv"].parametrizations.bias.original.abs().max()) == 0.0
    assert float(net["conv"].parametrizations.weight.original.min()) >= 0.0
