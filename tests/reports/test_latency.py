"""The latency frontier plot: accuracy against measured latency with its spread."""

import pytest

from secateurs.reports.latency import latency_frontier, latency_rows
from secateurs.reports.plots import latency_plot
from secateurs.runs.compare import _latencies


def test_latency_rows_keep_stages_with_a_latency_and_an_accuracy():
    stages = [{"name": "dense", "accuracy": 0.9}, {"name": "p", "accuracy": 0.8, "latency": 0.5},
              {"name": "q", "accuracy": None, "latency": 0.4}]
    assert [s["name"] for s in latency_rows(stages)] == ["p"]


def test_the_frontier_is_drawn_for_several_methods(tmp_path):
    methods = {"latency-targeted": [{"latency": 0.5, "latency_spread": 0.02, "accuracy": 0.9, "latency_target": 0.5},
                                    {"latency": 0.7, "latency_spread": 0.03, "accuracy": 0.95}],
               "uniform": [{"latency": 0.52, "accuracy": 0.85}], "nothing": [{"accuracy": 0.8}]}
    assert latency_frontier(methods, 0.97, tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    assert not latency_frontier({"a": [{"accuracy": 0.9}]}, None, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_a_run_with_latency_stages_gets_the_plot(tmp_path):
    metrics = {"layers": [], "dense": {"accuracy": 0.9},
               "stages": [{"name": "dense", "accuracy": 0.9, "sparsity": 0.0},
                          {"name": "prune 1", "accuracy": 0.8, "sparsity": 0.5, "latency": 0.6,
                           "latency_spread": 0.01}]}
    assert latency_plot(metrics, tmp_path / "latency.png") and (tmp_path / "latency.png").is_file()
    metrics["stages"][1].pop("latency")
    assert not latency_plot(metrics, tmp_path / "none.png")


def test_compare_compounds_the_stages_latencies():
    stages = [{"name": "dense"}, {"latency": 0.5, "latency_spread": 0.05}, {"name": "finetune"},
              {"latency": 0.5, "latency_spread": 0.0}]
    out = _latencies(stages)
    assert out[0] == {} and out[2]["latency"] == 0.5
    assert out[3]["latency"] == 0.25 and out[3]["latency_spread"] == pytest.approx(0.25 * 0.1)
