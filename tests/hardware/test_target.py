"""sc.prune(latency=...): widths chosen over measured tables reach the target, measured; never silent."""

import warnings

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.hardware import LatencyResult, LatencyTable, prune_to_latency

from .helpers import cnn, fake_measure, fake_timer

X = torch.randn(1, 3, 8, 8)


def _table(tmp_path, batch_size=2):
    return LatencyTable(batch_size=batch_size, folder=tmp_path, measure=fake_measure)


def _prune(model, latency, tmp_path, **kw):
    return sc.prune(model, latency=latency, granularity="channel", example_inputs=(X,), batch_size=2,
                    table=_table(tmp_path), timer=fake_timer, **kw)


@pytest.mark.parametrize("latency", [0.7, 0.5, 0.35])
def test_latency_target_is_met_measured_and_the_masks_match_the_compacted_model(latency, tmp_path):
    model = cnn()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a target met with every channel movable: nothing to warn about
        result = _prune(model, latency, tmp_path)
    assert isinstance(result, LatencyResult) and result.met
    assert result.measured.ratio <= latency + 1e-9
    # the fake machine is exactly additive: the prediction is the measurement
    assert result.predicted_ms == pytest.approx(result.measured.ms.ms)
    assert result.round_to == 8  # read from the staircase of the fake machine
    assert all(w % 8 == 0 for n, w in result.widths.items() if n != "10")
    small = sc.compact(model, (X,))
    assert [m.out_channels for m in small.modules() if isinstance(m, nn.Conv2d)] == \
        [result.widths[n] for n in ("0", "3", "6")]
    assert "latency target" in str(result) and "measured" in str(result)


def test_the_least_pruned_point_that_meets_the_target_is_kept(tmp_path):
    result = _prune(cnn(), 0.5, tmp_path)
    met = [m for m in result.tries if m.ratio <= 0.5]
    assert result.measured.step == min(m.step for m in met)
    fewer = [m for m in result.tries if m.step < result.measured.step]
    assert all(m.ratio > 0.5 for m in fewer)


def test_a_target_out_of_reach_warns_and_says_so(tmp_path):
    with pytest.warns(UserWarning, match=r"did not reach its target"):
        result = _prune(cnn(), 0.01, tmp_path, round_to=8)
    assert not result.met and any("not reached" in n for n in result.notes)
    assert "NOT reached" in str(result)


def test_importance_per_millisecond_decides(tmp_path):
    """Two parallel-free layers of equal cost: the one whose channels score lower loses them."""
    model = cnn()
    with torch.no_grad():
        model[3].weight.mul_(100)  # the second conv's filters matter far more
    result = _prune(model, 0.6, tmp_path, round_to=8)
    assert result.widths["3"] >= result.widths["0"] * 32 / 24


def test_the_table_is_cached_and_a_second_run_measures_nothing(tmp_path):
    first = _table(tmp_path)
    prune_to_latency(cnn(), 0.5, example_inputs=(X,), batch_size=2, table=first, timer=fake_timer)
    assert first.measured > 0 and first.path.exists()
    again = _table(tmp_path)
    prune_to_latency(cnn(), 0.5, example_inputs=(X,), batch_size=2, table=again, timer=fake_timer)
    assert again.measured == 0


def test_layers_may_only_exclude(tmp_path):
    result = _prune(cnn(), 0.6, tmp_path, round_to=8, layers={"6": None})
    assert result.widths["6"] == 16
    with pytest.raises(sc.PruningError, match=r"layers\['6'\]=0.5: with latency="):
        _prune(cnn(), 0.6, tmp_path, layers={"6": 0.5})


@pytest.mark.parametrize("kw, match", [
    ({"latency": 0.0}, "latency must be a fraction"),
    ({"latency": 1.5}, "latency must be a fraction"),
    ({"latency": "fast"}, "latency must be a fraction"),
    ({"latency": 0.5, "granularity": "unstructured"}, "needs granularity channel"),
    ({"latency": 0.5, "example_inputs": None}, "needs example_inputs"),
    ({"latency": 0.5, "sparsity": 0.5}, "not both"),
    ({}, "not neither"),
    ({"sparsity": 0.5, "batch_size": 8}, "it needs latency="),
    ({"latency": 0.5, "round_to": 0}, "round_to must be"),
    ({"latency": 0.5, "batch_size": 4}, "measured at batch size 2"),
])
def test_bad_arguments_are_one_clear_error(kw, match, tmp_path):
    args = {"granularity": "channel", "example_inputs": (X,), "batch_size": 2, "table": _table(tmp_path),
            "timer": fake_timer, **kw}
    if "latency" not in kw:
        args = {k: v for k, v in args.items() if k not in ("table", "timer")}
        args.setdefault("batch_size", None)
    with pytest.raises(sc.PruningError, match=match):
        sc.prune(cnn(), **args)


def test_round_to_auto_for_a_sparsity_is_measured(tmp_path, monkeypatch):
    from secateurs.hardware import entry, target

    monkeypatch.setattr(target, "LatencyTable", lambda *a, **k: LatencyTable(*a, folder=tmp_path,
                                                                            measure=fake_measure, **k))
    model = cnn()
    with pytest.warns(UserWarning, match="round_to=8"):
        entry.prune(model, 0.6, granularity="channel", scope="local", example_inputs=(X,), round_to="auto")
    small = sc.compact(model, (X,))
    assert all(m.out_channels % 8 == 0 for m in small.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("name", ["resnet-20", "mobilenet-v2", "vgg"])
def test_zoo_cnns_reach_a_latency_with_residuals_and_depthwise_convs(name, tmp_path):
    from secateurs import zoo

    model = zoo.model(name, image_size=16)
    x = torch.randn(1, 3, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the logits' channels are kept (noted)
        result = sc.prune(model, latency=0.5, granularity="channel", example_inputs=(x,), batch_size=2,
                          table=_table(tmp_path), timer=fake_timer)
    assert result.met and result.measured.ratio <= 0.5
    small = sc.compact(model, (x,))
    assert torch.allclose(small(x), result.compacted(x), atol=1e-5)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
