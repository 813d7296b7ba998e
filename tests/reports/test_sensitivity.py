"""sc.sensitivity: per-layer scans, exact restoration, layers_for, plot, errors."""

import functools
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

import secateurs as sc
from secateurs import criteria, masking
from secateurs.reports.sensitivity import SensitivityResult

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    return x, (x[:, 0] > 0).long()  # only input 0 matters


@functools.cache
def _trained_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    net = _fresh()
    x, y = _data()
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _fresh() -> nn.Sequential:
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))


def trained() -> nn.Sequential:
    net = _fresh()
    net.load_state_dict(_trained_state())
    return net


@torch.no_grad()
def accuracy(model: nn.Module) -> float:
    x, y = _data()
    return float((model(x).argmax(dim=1) == y).float().mean())


def snapshot(model: nn.Module) -> tuple[dict, dict, list]:
    state = {k: v.clone() for k, v in model.state_dict().items()}
    masks = {k: v.clone() for k, v in sc.masks(model).items()}
    return state, masks, [(n, type(p), id(p)) for n, p in model.named_parameters()]


def assert_same(model: nn.Module, before: tuple[dict, dict, list]) -> None:
    state, masks, params = before
    now = model.state_dict()
    assert list(now) == list(state)
    for k, v in state.items():
        assert now[k].dtype == v.dtype and torch.equal(now[k], v), k
    assert list(sc.masks(model)) == list(masks)
    assert all(torch.equal(sc.masks(model)[k], m) for k, m in masks.items())
    assert [(n, type(p), id(p)) for n, p in model.named_parameters()] == params  # same Parameter objects


GRID = (0.0, 0.5, 0.7, 0.9, 0.95)


def test_table_shape_baseline_and_which_layer_is_sensitive():
    net = trained()
    r = sc.sensitivity(net, accuracy, GRID, progress=False)
    assert r.baseline == accuracy(net) > 0.95
    assert r.sparsities == GRID
    assert list(r.table) == ["0.weight", "2.weight"]
    assert all(len(row) == len(GRID) for row in r.table.values())
    assert all(row[0] == r.baseline for row in r.table.values())  # sparsity 0 changes nothing
    # The task reads one input: layer 0's largest weights carry it, so it tolerates
    # pruning; the 16 -> 2 output layer has little to spare.
    first, last = r.table["0.weight"], r.table["2.weight"]
    assert sum(first) > sum(last)
    assert r.layers_for(0.02)["0.weight"] > r.layers_for(0.02)["2.weight"]


def test_model_is_bit_identical_afterwards():
    net = trained()
    net.train()
    before = snapshot(net)

    def evaluate(model: nn.Module) -> float:
        model.eval()  # an evaluate that leaves the model in eval mode
        return accuracy(model)

    sc.sensitivity(net, evaluate, GRID, progress=False)
    assert_same(net, before)
    assert sc.masks(net) == {}
    assert all(m.training for m in net.modules())


def test_already_pruned_model_is_bit_identical_afterwards():
    net = trained()
    sc.prune(net, sparsity=0.6, layers={"2": None})  # layer 0 masked, layer 2 not
    with torch.no_grad():  # pruned entries keep stored values: they must come back too
        masking.original(net[0]).add_(0.125)
    before = snapshot(net)
    r = sc.sensitivity(net, accuracy, (0.3, 0.6, 0.9), progress=False)
    assert_same(net, before)
    assert list(sc.masks(net)) == ["0.weight"]
    # pruning compounds: below its current sparsity the layer is measured as it is
    assert r.table["0.weight"][0] == r.table["0.weight"][1] == r.baseline


class _Updater(criteria.Criterion):
    """Magnitude scores, and a weight update after masking, like OBS."""

    name = "test-updater"
    nonnegative = True
    calls = 0

    def score(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        return weight.abs()

    def update(self, name: str, module: nn.Module, keep: torch.Tensor) -> None:
        type(self).calls += 1
        with torch.no_grad():
            masking.original(module).mul_(3.0)


def test_weights_changed_by_the_criterion_are_restored():
    net = trained()
    before = snapshot(net)
    sc.sensitivity(net, accuracy, (0.5, 0.9), criterion=_Updater(), progress=False)
    assert _Updater.calls == 4  # the criterion did write to the weights
    assert_same(net, before)


def test_model_is_restored_when_evaluate_raises():
    net = trained()
    sc.prune(net, sparsity=0.5, layers={"0": None})
    before = snapshot(net)
    calls = []

    def evaluate(model: nn.Module) -> float:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return accuracy(model)

    with pytest.raises(RuntimeError, match="boom"):
        sc.sensitivity(net, evaluate, (0.5, 0.9), progress=False)
    assert_same(net, before)


def test_layers_selects_what_is_scanned_and_layers_for_feeds_prune():
    net = trained()
    r = sc.sensitivity(net, accuracy, (0.5, 0.9), layers={"2": None}, progress=False)
    assert list(r.table) == ["0.weight"]
    r = sc.sensitivity(net, accuracy, (0.5, 0.9), progress=False)
    hopeless = SensitivityResult(r.baseline, r.sparsities, {**r.table, "2.weight": [0.0, 0.0]})
    chosen = hopeless.layers_for(0.05)
    assert chosen["2.weight"] is None
    sc.prune(net, sparsity=0.5, layers=chosen)
    assert list(sc.masks(net)) == ["0.weight"]
    expected = 1 - chosen["0.weight"]
    assert float(sc.masks(net)["0.weight"].float().mean()) == pytest.approx(expected, abs=1 / 128)


def test_layers_for_by_hand():
    r = SensitivityResult(
        baseline=0.8,
        sparsities=(0.5, 0.7, 0.9),
        table={
            "a.weight": [0.80, 0.79, 0.78],  # all within 0.02
            "b.weight": [0.79, 0.70, 0.80],  # fails at 0.7: the later 0.80 is not trusted
            "c.weight": [0.50, 0.80, 0.80],  # fails at the lowest sparsity
            "d.weight": [0.70, 0.60, 0.60],  # 0.8 - 0.7 is a bit above 0.1 in floats
        },
    )
    assert r.layers_for(0.02) == {"a.weight": 0.9, "b.weight": 0.5, "c.weight": None, "d.weight": None}
    assert r.layers_for(0.1)["d.weight"] == 0.5
    assert r.layers_for(0.0) == {"a.weight": 0.5, "b.weight": None, "c.weight": None, "d.weight": None}
    assert r.layers_for(1.0) == dict.fromkeys(r.table, 0.9)
    nan = SensitivityResult(0.8, (0.5,), {"a.weight": [math.nan]})
    assert nan.layers_for(1.0) == {"a.weight": None}


def test_sparsities_are_sorted_and_deduplicated():
    net = trained()
    r = sc.sensitivity(net, accuracy, (0.9, 0.5, 0.5), progress=False)
    assert r.sparsities == (0.5, 0.9)
    assert all(len(row) == 2 for row in r.table.values())


def test_str_and_to_dict():
    r = SensitivityResult(0.9, (0.5, 0.95), {"fc1.weight": [0.9, 0.81234], "blocks.0.fc2.weight": [0.5, 0.25]})
    lines = str(r).splitlines()
    assert lines[0].split() == ["layer", "0.5", "0.95"]
    assert lines[1].split() == ["fc1.weight", "0.9000", "0.8123"]
    assert lines[2].split() == ["blocks.0.fc2.weight", "0.5000", "0.2500"]
    assert lines[-1] == "baseline 0.9000"
    assert len({len(line) for line in lines[:3]}) == 1  # fixed width
    d = r.to_dict()
    assert json.loads(json.dumps(d)) == {
        "baseline": 0.9, "sparsities": [0.5, 0.95],
        "table": {"fc1.weight": [0.9, 0.81234], "blocks.0.fc2.weight": [0.5, 0.25]},
    }


def test_plot_writes_a_png(tmp_path):
    r = SensitivityResult(0.9, (0.5, 0.9), {"fc1.weight": [0.9, 0.8], "fc2.weight": [0.85, 0.4]})
    path = tmp_path / "plots" / "sensitivity.png"
    r.plot(path)
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in path.parent.iterdir()] == ["sensitivity.png"]  # no temp file left


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sparsities": ()}, r"sparsities must hold at least one number in \[0, 1\), got \(\)"),
        ({"sparsities": (0.5, 1.0)}, r"sparsities\[1\] must be in \[0, 1\).*got 1\.0"),
        ({"sparsities": (-0.1,)}, r"sparsities\[0\] must be in \[0, 1\).*got -0\.1"),
        ({"sparsities": ("half",)}, r"sparsities\[0\] must be a number in \[0, 1\), got 'half'"),
        ({"sparsities": 0.5}, r"sparsities must be a sequence of numbers in \[0, 1\), got 0\.5"),
        ({"evaluate": 3}, r"evaluate must be a callable evaluate\(model\) -> float, got 3"),
        ({"criterion": "nope"}, r"unknown criterion 'nope'; allowed: .*magnitude"),
        ({"granularity": "diagonal"}, r"unknown granularity 'diagonal'; allowed: .*unstructured"),
        ({"layers": {"fc9": None}}, r"layers pattern 'fc9' matches no prunable layer"),
    ],
)
def test_bad_arguments_fail_before_anything_runs(kwargs, match):
    net = trained()
    before = snapshot(net)
    calls = []

    def evaluate(model: nn.Module) -> float:
        calls.append(1)
        return 1.0

    args = {"evaluate": evaluate, "sparsities": (0.5,), **kwargs}
    with pytest.raises(sc.PruningError, match=match) as info:
        sc.sensitivity(net, args.pop("evaluate"), args.pop("sparsities"), progress=False, **args)
    assert "\n" not in str(info.value)
    assert calls == []
    assert_same(net, before)


def test_evaluate_must_return_a_number():
    with pytest.raises(sc.PruningError, match=r"evaluate must return a number; for the baseline it returned 'good'"):
        sc.sensitivity(trained(), lambda m: "good", (0.5,), progress=False)


@pytest.mark.parametrize("max_loss", [-0.1, math.nan, "0.1", True])
def test_bad_max_loss(max_loss):
    r = SensitivityResult(0.9, (0.5,), {"a.weight": [0.9]})
    with pytest.raises(sc.PruningError, match=rf"max_loss must be a number >= 0 .*got {max_loss!r}"):
        r.layers_for(max_loss)


def test_layer_with_another_parametrization_is_refused_untouched():
    class Double(nn.Module):
        def forward(self, w: torch.Tensor) -> torch.Tensor:
            return 2 * w

    net = trained()
    parametrize.register_parametrization(net[0], "weight", Double())
    before = snapshot(net)
    with pytest.raises(sc.PruningError, match=r"0\.weight has a parametrization .*layers=\{'0': None\}"):
        sc.sensitivity(net, accuracy, (0.5,), progress=False)
    assert_same(net, before)
    r = sc.sensitivity(net, accuracy, (0.5,), layers={"0": None}, progress=False)
    assert list(r.table) == ["2.weight"]
    assert_same(net, before)


def test_sensitivity_with_channels_undoes_every_mask():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 4, 3), nn.Flatten(),
                        nn.Linear(4 * 2 * 2, 3)).eval()
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        before = net(x)
    sc.sensitivity(net, lambda m: float(m(x).sum()), (0.5,), granularity="channel", example_inputs=(x,),
                   progress=False)
    assert sc.masks(net) == {}
    with torch.no_grad():
        assert torch.equal(net(x), before)
