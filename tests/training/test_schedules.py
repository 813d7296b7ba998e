"""Gradual, iterative (IMP with rewinding), RigL and SET."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import secateurs as sc
from secateurs import allocation
from secateurs.training import schedules
from secateurs.storage import plain_state


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(20, 40), nn.ReLU(), nn.Linear(40, 5))


def _data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(64, 20, generator=g), torch.randint(0, 5, (64,), generator=g)


def _train(net, pruner, steps, seed=0):
    x, y = _data(seed)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
        if pruner is not None:
            pruner.step()


@given(final=st.floats(0.01, 0.99), start=st.integers(0, 50), length=st.integers(1, 500), every=st.integers(1, 60))
def test_cubic_end_points_and_monotonicity(final, start, length, every):
    c = schedules.Cubic(final, start, start + length, every)
    assert c.sparsity_at(start - 1) == 0.0 and c.sparsity_at(start) == 0.0
    assert c.sparsity_at(start + length) == pytest.approx(final)
    assert c.sparsity_at(start + length + 100) == pytest.approx(final)
    values = [c.sparsity_at(t) for t in range(start, start + length + 1)]
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert c.prunes_at(start + length) and not c.prunes_at(start + length + 1)


def test_cubic_formula_by_hand():
    c = schedules.Cubic(0.9, 0, 100, 10)
    assert c.sparsity_at(50) == pytest.approx(0.9 + (0 - 0.9) * 0.5**3)
    assert c.sparsity_at(59) == c.sparsity_at(50)  # constant between pruning steps


def test_gradual_reaches_the_final_sparsity_during_training():
    net = _net()
    pruner = sc.Gradual(net, final_sparsity=0.8, start=5, end=45, every=10)
    seen = []
    x, y = _data()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
        if pruner.step() is not None:
            seen.append(round(sc.sparsity(net), 3))
    assert seen == sorted(seen) and len(seen) == 5
    assert sc.sparsity(net) == pytest.approx(0.8, abs=1e-3)


def test_imp_rewinds_survivors_to_their_exact_initial_values():
    net = _net()
    init = {k: v.clone() for k, v in net.state_dict().items()}
    pruner = sc.Iterative(net, rounds=3, rate=0.5, rewind="init")

    def train_round(model, k):
        _train(model, None, 10, seed=k)
        return {"k": k}

    pruner.run(train_round)
    assert sc.sparsity(net) == pytest.approx(1 - 0.5**3, abs=1e-3)
    # rewound after the last pruning round, then trained once more: check the state right after a rewind
    net2 = _net()
    p2 = sc.Iterative(net2, rounds=2, rate=0.5, rewind="init")
    _train(net2, None, 10)
    p2.next_round()
    for name, mask in sc.masks(net2).items():
        w = net2.get_submodule(name.rsplit(".", 1)[0]).weight
        assert torch.equal(w[mask], init[name][mask])
    assert torch.equal(net2[0].bias, init["0.bias"])


def test_imp_rewind_to_step_k():
    net = _net()
    pruner = sc.Iterative(net, rounds=2, rate=0.3, rewind=3, every=10)
    x, y = _data()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    at3 = None
    for t in range(1, 11):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
        if t == 3:
            at3 = {k: v.clone() for k, v in schedules.snapshot(net).items()}
        pruner.step()
    mask = sc.masks(net)["0.weight"]
    assert pruner.round == 1
    assert torch.equal(net[0].weight[mask], at3["0.weight"][mask])


def test_imp_resume_gives_the_same_final_mask(tmp_path):
    def train_round(model, k):
        _train(model, None, 8, seed=k)
        return None

    full = _net()
    sc.Iterative(full, rounds=3, rate=0.4, out_dir=tmp_path / "full").run(train_round)

    class Stop(Exception):
        pass

    def interrupted(model, k):
        if k == 2:
            raise Stop
        return train_round(model, k)

    part = _net()
    with pytest.raises(Stop):
        sc.Iterative(part, rounds=3, rate=0.4, out_dir=tmp_path / "part").run(interrupted)
    again = _net(seed=99)  # a fresh process would rebuild the model from scratch
    resumed = sc.Iterative(again, rounds=3, rate=0.4, out_dir=tmp_path / "part")
    assert resumed.round == 2
    resumed.run(train_round)
    for k, m in sc.masks(full).items():
        assert torch.equal(sc.masks(again)[k], m)
    assert (tmp_path / "part" / "round-3.safetensors").is_file()


def test_imp_resume_after_the_last_round_repeats_only_the_last_training(tmp_path):
    def train_round(model, k):
        _train(model, None, 8, seed=k)
        return {"k": k}

    done = _net()
    sc.Iterative(done, rounds=2, rate=0.4, out_dir=tmp_path).run(train_round)
    again = _net(seed=99)
    resumed = sc.Iterative(again, rounds=2, rate=0.4, out_dir=tmp_path)
    assert resumed.round == 2 and resumed.history[-1]["final"] == {"k": 2}
    resumed.run(train_round)  # the saved round is the model before its last training, not after
    want, got = plain_state(done), plain_state(again)  # masks and the weights as the layers use them
    assert want.keys() == got.keys() and all(torch.equal(got[k], v) for k, v in want.items())


def test_imp_bad_arguments():
    with pytest.raises(sc.PruningError, match="rounds"):
        sc.Iterative(_net(), rounds=0)
    with pytest.raises(sc.PruningError, match="rate"):
        sc.Iterative(_net(), rate=1.5)
    with pytest.raises(sc.PruningError, match="rewind"):
        sc.Iterative(_net(), rewind="end")
    with pytest.raises(sc.PruningError, match="every"):
        sc.Iterative(_net(), every=0)


def test_imp_step_without_every_is_an_error_not_a_loop_that_never_prunes():
    pruner = sc.Iterative(_net(), rounds=2, rate=0.5)
    with pytest.raises(sc.PruningError, match=r"step\(\) needs every="):
        pruner.step()
    assert pruner.next_round().sparsity == pytest.approx(0.5)  # the other way to drive it


def test_imp_rounds_prune_rate_of_what_remains_after_an_earlier_pruning():
    net = _net()
    sc.prune(net, 0.5)
    pruner = sc.Iterative(net, rounds=2, rate=0.2, rewind=None)
    assert [round(pruner.next_round().sparsity, 4) for _ in range(2)] == [0.6, 0.68]  # 1 - 0.5 * 0.8^k


def test_update_fraction_decays_to_zero():
    assert schedules.update_fraction(0, 0.3, 100) == pytest.approx(0.3)
    assert schedules.update_fraction(50, 0.3, 100) == pytest.approx(0.15)
    assert schedules.update_fraction(100, 0.3, 100) == 0.0


def test_erk_densities_hit_the_target():
    shapes = {"a": (300, 784), "b": (100, 300), "c": (10, 100)}
    d = allocation.erk(shapes, 0.1)
    total = sum(math.prod(s) for s in shapes.values())
    assert sum(d[n] * math.prod(s) for n, s in shapes.items()) == pytest.approx(0.1 * total)
    assert d["c"] > d["b"] > d["a"]
    assert all(0 < v <= 1 for v in d.values())


@pytest.mark.parametrize("regrow", ["gradient", "random"])
def test_rigl_keeps_sparsity_constant_and_revives_weights(regrow):
    net = _net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    pruner = sc.RigL(net, sparsity=0.8, every=5, end=100, optimizer=opt, regrow=regrow)
    first = {k: v.clone() for k, v in sc.masks(net).items()}
    counts = {k: int(v.sum()) for k, v in first.items()}
    x, y = _data()
    for _ in range(40):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
        pruner.step()
        assert {k: int(v.sum()) for k, v in sc.masks(net).items()} == counts
    revived = sum(int((m & ~first[k]).sum()) for k, m in sc.masks(net).items())
    assert revived > 0
    pruned = sum(m.numel() - int(m.sum()) for m in first.values())
    assert pruned / sum(m.numel() for m in first.values()) == pytest.approx(0.8, abs=0.01)


def test_regrown_weights_start_at_zero():
    net = _net()
    pruner = sc.RigL(net, sparsity=0.5, every=1, regrow="random")
    before = sc.masks(net)["0.weight"].clone()
    with torch.no_grad():
        net[0].parametrizations.weight.original.fill_(1.0)
    pruner.update(0.3)
    after = sc.masks(net)["0.weight"]
    grown = after & ~before
    assert int(grown.sum()) > 0
    assert bool((net[0].weight[grown] == 0).all())


def test_set_is_rigl_with_random_regrowth():
    p = sc.SET(_net(), sparsity=0.7, every=10)
    assert isinstance(p, sc.RigL) and p.regrow == "random"
