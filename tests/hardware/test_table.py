"""Latency tables: specs of layers, measuring once, the JSON cache on disk."""

import json

import pytest
import torch
from torch import nn

from secateurs import PruningError
from secateurs.hardware.table import LatencyTable, LayerSpec, cache_dir, spec_of
from secateurs.hardware.timing import Timing

from .helpers import fake_measure


def test_spec_of_convs_and_linears():
    conv = spec_of(nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), (4, 8, 10, 12))
    assert conv == LayerSpec("conv", 8, 16, (10, 12), 4, (3, 3), (2, 2), (1, 1), (1, 1), False, False)
    dw = spec_of(nn.Conv2d(8, 8, 3, groups=8), (1, 8, 5, 5))
    assert dw.depthwise and dw.at(3, 5) == dw.at(5, 5) and dw.at(3, 5).c_in == 5
    assert spec_of(nn.Linear(6, 3), (2, 7, 6)) == LayerSpec("linear", 6, 3, (7,), 2)
    assert spec_of(nn.Conv2d(8, 16, 3, groups=2), (1, 8, 5, 5)) is None  # grouped: not modelled
    assert spec_of(nn.BatchNorm2d(3), (1, 3, 2, 2)) is None


@pytest.mark.parametrize("spec", [LayerSpec("conv", 4, 6, (5, 5), 2, (3, 3), (1, 1), (1, 1), (1, 1)),
                                  LayerSpec("conv", 4, 4, (9,), 1, (3,), (2,), (0,), (1,), True),
                                  LayerSpec("linear", 4, 6, (3,), 2)])
def test_built_layers_run_at_their_spec(spec):
    layer, x = spec.build("cpu", torch.float32)
    y = layer(x)
    assert x.shape[0] == spec.batch and (y.shape[1] if spec.kind == "conv" else y.shape[-1]) == spec.c_out


def test_a_real_measurement_is_positive_and_has_a_spread(tmp_path):
    t = LatencyTable(batch_size=1, folder=tmp_path).get(LayerSpec("linear", 8, 8, (), 1))
    assert t.ms > 0 and t.spread_ms >= 0 and t.n >= 3


def test_entries_are_measured_once_and_saved_atomically(tmp_path):
    calls = []
    table = LatencyTable(batch_size=2, folder=tmp_path, measure=lambda s: calls.append(s) or fake_measure(s))
    spec = LayerSpec("linear", 16, 8, (), 2)
    assert table.get(spec) == table.get(spec) and len(calls) == 1
    path = table.save()
    assert path.parent == tmp_path / "latency" and path.name == f"{table.key}.json"
    body = json.loads(path.read_text())
    assert body["machine"]["batch_size"] == 2 and body["entries"][spec.key()]["ms"] == fake_measure(spec).ms
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    other = LatencyTable(batch_size=2, folder=tmp_path, measure=lambda s: 1 / 0)
    assert other.get(spec) == fake_measure(spec) and other.measured == 0


def test_two_writers_merge_and_a_damaged_file_is_measured_again(tmp_path):
    a = LatencyTable(batch_size=1, folder=tmp_path, measure=fake_measure)
    b = LatencyTable(batch_size=1, folder=tmp_path, measure=fake_measure)
    a.get(LayerSpec("linear", 1, 1, (), 1))
    b.get(LayerSpec("linear", 2, 2, (), 1))
    a.save()
    b.save()
    assert len(LatencyTable(batch_size=1, folder=tmp_path).entries) == 2
    a.path.write_text("{not json")
    assert LatencyTable(batch_size=1, folder=tmp_path).entries == {}


def test_batch_sizes_are_separate_tables_and_bad_ones_refused(tmp_path):
    assert LatencyTable(batch_size=1, folder=tmp_path).key != LatencyTable(batch_size=32, folder=tmp_path).key
    for bad in (0, 2.5, True):
        with pytest.raises(PruningError, match="batch_size must be"):
            LatencyTable(batch_size=bad, folder=None)


def test_the_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SECATEURS_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    monkeypatch.delenv("SECATEURS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x" / "secateurs"
    assert LatencyTable(folder=None, measure=lambda s: Timing(1.0, 0.0, 1)).path is None
