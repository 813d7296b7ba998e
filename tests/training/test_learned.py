"""Learned masks: movement scores and hard-concrete L0 gates."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import secateurs as sc
from secateurs import criteria, masking
from secateurs.training.learned import L0Gates, Movement, eval_gate, hard_concrete


def _step(net: nn.Module, movement: Movement, x: torch.Tensor, lr: float) -> None:
    net.zero_grad()
    net(x).sum().backward()
    movement.accumulate()
    with torch.no_grad():
        for p in net.parameters():
            p -= lr * p.grad


# ---------------------------------------------------------------- movement


def test_movement_accumulates_minus_w_times_grad_by_hand():
    net = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, -2.0]]))
    m = Movement(net)
    _step(net, m, torch.tensor([[1.0, 1.0]]), lr=0.5)  # g = [1, 1]: S = -[1, -2] = [-1, 2]; W -> [0.5, -2.5]
    assert torch.equal(m.scores()["weight"], torch.tensor([[-1.0, 2.0]]))
    _step(net, m, torch.tensor([[2.0, -1.0]]), lr=0.5)  # g = [2, -1]: S -= [1, 2.5]
    assert torch.equal(m.scores()["weight"], torch.tensor([[-2.0, -0.5]]))
    assert m.steps == 2
    m.reset()
    assert m.steps == 0 and not m.scores()["weight"].any()


def test_weights_moving_toward_zero_score_lower_and_are_pruned_first():
    net = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, 1.0, -1.0, -1.0]]))  # equal magnitudes
    m = Movement(net)
    for _ in range(3):  # g = x: entries 0 and 3 shrink toward 0, entries 1 and 2 grow
        _step(net, m, torch.tensor([[1.0, -1.0, 1.0, -1.0]]), lr=0.1)
    s = m.scores()["weight"][0]
    assert max(s[0], s[3]) < min(s[1], s[2])
    sc.prune(net, 0.5, criterion=m.criterion())
    assert masking.get_mask(net).tolist() == [[False, True, True, False]]


def test_pruning_by_movement_is_exact_and_compounds():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))  # 300 prunable weights
    m = Movement(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.randn(32, 10), torch.randint(0, 5, (32,))
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        m.accumulate()
        opt.step()
    sc.prune(net, 0.9, criterion=m.criterion())
    assert sum(int((~k).sum()) for k in sc.masks(net).values()) == 270
    opt.zero_grad()
    F.cross_entropy(net(x), y).backward()  # masked layers: the gradient of the original is that of W ⊙ M
    m.accumulate()
    result = sc.prune(net, 0.95, criterion=m.criterion(), scope="local")
    assert [r.nonzero for r in result.layers] == [10, 5]


def test_movement_scores_of_pruned_weights_stop_moving():
    net = nn.Linear(3, 2)
    masking.set_mask(net, torch.tensor([[True, False, True], [True, True, False]]))
    m = Movement(net)
    net(torch.randn(4, 3)).pow(2).sum().backward()
    m.accumulate()
    assert not m.scores()["weight"][~masking.get_mask(net)].any()


def test_movement_layers_and_errors():
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    assert list(Movement(net, layers=["2"]).scores()) == ["2.weight"]
    assert list(Movement(net, layers={"0": None}).scores()) == ["2.weight"]
    with pytest.raises(sc.PruningError, match="matches no prunable layer"):
        Movement(net, layers=["nope"])
    m = Movement(net, layers="2")
    with pytest.raises(sc.PruningError, match="no gradient"):
        m.accumulate()
    with pytest.raises(sc.PruningError, match="no step accumulated"):
        sc.prune(net, 0.5, criterion=m.criterion())
    net(torch.randn(2, 4)).sum().backward()
    m.accumulate()
    with pytest.raises(sc.PruningError, match="no scores for 0.weight"):
        sc.prune(net, 0.5, criterion=m.criterion())
    sc.prune(net, 0.5, criterion=m.criterion(), layers={"0": None})
    assert list(sc.masks(net)) == ["2.weight"]


def test_bare_movement_name_is_registered_but_needs_a_tracker():
    assert "movement" in sc.criteria()
    criteria.get("movement")  # constructible, so `secateurs criteria` can list it
    with pytest.raises(sc.PruningError, match=r"Movement\(model\).*criterion=movement.criterion\(\)"):
        sc.prune(nn.Linear(3, 3), 0.5, criterion="movement")


# ---------------------------------------------------------------- L0 gates


def test_gate_formulas_at_known_log_alpha():
    la = torch.tensor([0.0, math.log(3.0), -5.0, 10.0])
    # sigmoid = 0.5, 0.75, 0.0067, ~1 -> 1.2 s - 0.1 = 0.5, 0.8, < 0, > 1
    assert torch.allclose(eval_gate(la), torch.tensor([0.5, 0.8, 0.0, 1.0]))
    # u = 1/4, log_alpha = 0: s = sigmoid(-log 3 / (2/3)) = 1 / (1 + 3^1.5)
    s = 1 / (1 + 3**1.5)
    assert torch.allclose(hard_concrete(torch.tensor([0.0]), torch.tensor([0.25])), torch.tensor([1.2 * s - 0.1]))
    assert hard_concrete(torch.tensor([0.0]), torch.tensor([0.5])).item() == pytest.approx(0.5)
    assert hard_concrete(torch.tensor([-3.0]), torch.tensor([0.1])).item() == 0.0
    assert hard_concrete(torch.tensor([3.0]), torch.tensor([0.9])).item() == 1.0


def test_penalty_is_expected_l0_and_decreases_with_log_alpha():
    gates = L0Gates(nn.Linear(3, 4), init_keep=0.5)  # log_alpha = 0
    one = 1 / (1 + math.exp((2 / 3) * math.log(0.1 / 1.1)))  # sigmoid(0 - beta log(-gamma/zeta))
    assert gates.penalty().item() == pytest.approx(4 * one)
    with torch.no_grad():
        gates.log_alpha[0][0] = -1.0
    assert gates.penalty().item() < 4 * one
    assert torch.allclose(gates.eval_gates()["weight"], torch.tensor([eval_gate(torch.tensor(-1.0)), .5, .5, .5]))


def test_penalty_alone_closes_every_gate():
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    gates = L0Gates(net)
    assert all(bool((g > 0).all()) for g in gates.eval_gates().values())
    opt = torch.optim.Adam(gates.parameters(), lr=0.5)
    for _ in range(30):
        opt.zero_grad()
        gates.penalty().backward()
        opt.step()
    assert all(not g.any() for g in gates.eval_gates().values())
    assert sum(p.numel() for p in gates.parameters()) == 8


def test_training_gates_are_sampled_per_example_and_learn_from_the_loss():
    torch.manual_seed(0)
    net = nn.Linear(3, 5, bias=False)
    with torch.no_grad():
        net.weight.fill_(1.0)
    gates = L0Gates(net, init_keep=0.5)
    out = net(torch.ones(64, 3))  # every row of W x is 3: out / 3 is the gate itself
    z = out / 3
    assert bool(((z >= 0) & (z <= 1)).all()) and z.std(dim=0).min() > 0.1
    assert bool((z == 0).any()) and bool((z == 1).any())  # the stretch gives exact zeros and ones
    out.sum().backward()
    assert gates.log_alpha[0].grad is not None and bool(gates.log_alpha[0].grad.abs().gt(0).all())
    net.eval()
    assert torch.allclose(net(torch.ones(2, 3)), torch.full((2, 5), 1.5))  # eval gate at log_alpha 0: 0.5


def _gated_cnn() -> tuple[nn.Module, L0Gates]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 6),
                        nn.ReLU(), nn.Linear(6, 3))
    masking.set_mask(net[3], torch.rand(6, 100) > 0.3)  # a mask already there stays
    gates = L0Gates(net, layers=["0", "3"])
    with torch.no_grad():
        for la in gates.log_alpha:
            la.copy_(torch.randn(la.shape) * 3)
        gates.log_alpha[0][1] = -6.0  # conv channel 1 closed
        gates.log_alpha[1][0] = -6.0
        gates.log_alpha[1][4] = 8.0  # gate exactly 1
    return net, gates


def test_finalize_masks_closed_rows_and_keeps_eval_outputs():
    net, gates = _gated_cnn()
    before_mask = masking.get_mask(net[3]).clone()
    x = torch.randn(7, 2, 5, 5)
    net.eval()
    z = gates.eval_gates()
    gated = net(x)
    kept = gates.finalize()
    assert torch.allclose(net(x), gated, atol=1e-6)
    assert kept["0.weight"][1].item() is False and kept["3.weight"][0].item() is False
    for i, name in ((0, "0.weight"), (3, "3.weight")):
        closed = ~kept[name]
        assert torch.equal(closed, z[name] == 0)
        assert not masking.get_mask(net[i])[closed].any()
        assert torch.equal(masking.get_mask(net[i], "bias"), kept[name])
    assert torch.equal(masking.get_mask(net[3]), before_mask & kept["3.weight"][:, None])
    assert "5.weight" not in sc.masks(net)  # ungated layer untouched
    net.train()
    assert torch.allclose(net(x), gated, atol=1e-6)  # hooks are gone: no more sampling
    with pytest.raises(sc.PruningError, match="already finalized"):
        gates.finalize()


def test_l0_arguments_are_checked():
    for kwargs in ({"init_keep": 1.0}, {"init_keep": 0}, {"beta": 0}, {"gamma": 0.1}, {"zeta": 1.0}):
        with pytest.raises(sc.PruningError, match=next(iter(kwargs))):
            L0Gates(nn.Linear(2, 2), **kwargs)
    with pytest.raises(sc.PruningError, match="no prunable layers"):
        L0Gates(nn.ReLU())
