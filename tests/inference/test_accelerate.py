"""sc.accelerate: same outputs, the measured choice kept, dense as the fallback.

Choices are made deterministic with a fake timer; nothing here depends on real timings.
"""

import copy
import importlib

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs import zoo
from secateurs.inference.kernels import CompactLinear, CsrLinear, compact_linear, is_two_four, semi_structured_linear


def fake_timer(seconds: dict[str, float], default: float = 10.0):
    """A timer that runs every candidate once and reports the given seconds (``default`` otherwise)."""
    calls = []

    def timer(layer, runs):
        calls.append((layer, sorted(runs)))
        for run in runs.values():
            run()
        return {path: seconds.get(path, default) for path in runs}

    timer.calls = calls
    return timer


def mlp(sparsity=0.9, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))
    if sparsity:
        sc.prune(model, sparsity, scope="local")
    return model


def assert_same(a, b, tol=1e-5):
    assert a.shape == b.shape
    assert (a - b).abs().max() <= tol * max(1.0, float(b.abs().max()))


@pytest.mark.parametrize("path", ["csr", "compact"])
def test_forced_path_gives_the_masked_models_outputs(path):
    model = mlp(0.9)
    with torch.no_grad():  # make one row and one column of the middle layer entirely zero: "compact" applies
        model[2].parametrizations.weight.original[5] = 0
        model[2].parametrizations.weight.original[:, 7] = 0
    x = torch.randn(8, 32)
    result = sc.accelerate(model, (x,), timer=fake_timer({path: 1.0, "dense": 2.0}))
    assert result.layers[1].path == path
    assert isinstance(result.model[2], CsrLinear if path == "csr" else CompactLinear)
    with torch.no_grad():
        assert_same(result.model(x), model(x))
    assert sc.masks(model), "the input model keeps its masks"


def test_outputs_equal_on_new_inputs():
    model = mlp(0.9)
    result = sc.accelerate(model, (torch.randn(4, 32),), timer=fake_timer({"csr": 1.0, "dense": 2.0}))
    assert {c.path for c in result.layers} == {"csr"}
    x = torch.randn(16, 32)
    with torch.no_grad():
        assert_same(result.model(x), model(x))


def test_dense_when_sparse_is_slower_or_not_faster_by_min_gain():
    model = mlp(0.9)
    x = torch.randn(4, 32)
    slower = sc.accelerate(model, (x,), candidates=("dense", "csr"), timer=fake_timer({"dense": 1.0, "csr": 2.0}))
    assert [c.path for c in slower.layers] == ["dense"] * 3
    assert all(type(m) is nn.Linear for m in slower.model if not isinstance(m, nn.ReLU))
    barely = sc.accelerate(model, (x,), min_gain=0.1, timer=fake_timer({"dense": 1.0, "csr": 0.95}))
    assert [c.path for c in barely.layers] == ["dense"] * 3
    assert barely.layers[0].speedup == 1.0
    assert not slower.model(x).requires_grad  # dense layers too are for inference, even outside torch.no_grad
    assert all(p.requires_grad for p in model.parameters()), "the input model still trains"
    with torch.no_grad():
        assert_same(slower.model(x), model(x))


def test_nothing_pruned_means_nothing_to_choose():
    model = mlp(0.0)
    timer = fake_timer({"csr": 0.1})
    result = sc.accelerate(model, torch.randn(2, 32), timer=timer)
    assert result.layers == [] and result.structure == "dense" and timer.calls == []
    assert result.model is not model


def test_three_dimensional_inputs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 8))
    sc.prune(model, 0.8)
    with torch.no_grad():
        model[0].parametrizations.weight.original[:, 3] = 0  # a dead input column: compact applies
    x = torch.randn(2, 5, 16)
    for path in ("csr", "compact"):
        result = sc.accelerate(model, (x,), candidates=("dense", path), timer=fake_timer({path: 1.0, "dense": 2.0}))
        assert result.layers[0].path == path and result.layers[0].input_shape == (2, 5, 16)
        with torch.no_grad():
            assert_same(result.model(x), model(x))


def test_channel_pruned_cnn_is_compacted_when_faster():
    model = zoo.model("resnet-20").eval()
    x = torch.randn(2, 3, 32, 32)
    sc.prune(model, 0.5, granularity="channel", scope="local", example_inputs=(x,))
    result = sc.accelerate(model, (x,), timer=fake_timer({"compact": 1.0, "dense": 2.0}))
    assert result.structure == "compact" and set(result.model_times) == {"dense", "compact"}
    assert sum(p.numel() for p in result.model.parameters()) < sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        assert_same(result.model(x), model(x), tol=1e-4)
    kept = sc.accelerate(model, (x,), timer=fake_timer({"compact": 2.0, "dense": 1.0}))
    assert kept.structure == "dense"


def test_accelerated_model_deepcopies_and_has_a_state_dict():
    model = mlp(0.9)
    x = torch.randn(4, 32)
    fast = sc.accelerate(model, (x,), timer=fake_timer({"csr": 1.0, "dense": 2.0})).model
    twin = copy.deepcopy(fast)
    assert {"2.crow", "2.col", "2.values", "2.bias"} <= set(fast.state_dict())
    with torch.no_grad(), torch.inference_mode():
        assert_same(twin(x), fast(x))


def test_real_clock_and_table():
    model = mlp(0.9)
    x = torch.randn(4, 32)
    # without "compact": whether compaction wins on the real clock would decide the model's structure
    result = sc.accelerate(model, (x,), repeats=1, candidates=("dense", "csr"))
    assert [c.name for c in result.layers] == ["0", "2", "4"]
    assert all({"dense", "csr"} <= set(c.times) and c.times["dense"] > 0 for c in result.layers)
    assert all(abs(c.density - 0.1) < 0.05 for c in result.layers[:2])
    text = str(result)
    assert "whole model: dense" in text and "csr ms" in text and "\n4 " in text
    with torch.no_grad():
        assert_same(result.model(x), model(x))


def test_compact_linear_by_hand():
    layer = nn.Linear(4, 3)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0, 2, 0], [0, 0, 0, 0], [3.0, 0, 0, 0]]))
        layer.bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
    small = compact_linear(layer)
    assert small.weight.tolist() == [[1.0, 2.0], [3.0, 0.0]] and small.rows.tolist() == [0, 2]
    x = torch.tensor([[1.0, 10.0, 100.0, 1000.0]])
    assert small(x).tolist() == [[201.5, -1.0, 5.0]]
    assert compact_linear(nn.Linear(4, 3)) is None  # nothing all-zero: not a candidate


def test_two_four_needs_a_gpu_and_the_pattern():
    w = torch.tensor([[1.0, 0, 2, 0, 0, 0, 0, 3]])
    assert is_two_four(w) and not is_two_four(torch.ones(1, 8)) and not is_two_four(torch.ones(1, 6))
    layer = nn.Linear(64, 32)
    sc.prune(layer, 0.5, granularity="2:4")
    sc.finalize(layer)
    assert is_two_four(layer.weight) and semi_structured_linear(layer) is None  # CPU: the path is skipped
    result = sc.accelerate(nn.Sequential(layer), torch.randn(2, 64), timer=fake_timer({"2:4": 0.1}))
    assert "2:4" not in result.layers[0].times


@pytest.mark.parametrize("kwargs, word", [
    ({"repeats": 0}, "repeats"), ({"repeats": 2.5}, "repeats"), ({"min_gain": 1.5}, "min_gain"),
    ({"candidates": ("dense", "gpu")}, "candidates"), ({"candidates": "csr"}, "candidates"),
    ({"timer": 3}, "timer"),
])
def test_bad_arguments_name_themselves(kwargs, word):
    with pytest.raises(sc.PruningError, match=word):
        sc.accelerate(mlp(0.5), torch.randn(2, 32), **kwargs)


def test_bad_model_and_inputs():
    with pytest.raises(sc.PruningError, match="model"):
        sc.accelerate("lenet", torch.randn(2, 32))
    with pytest.raises(sc.PruningError, match="example_inputs"):
        sc.accelerate(mlp(0.5), 3)
    with pytest.raises(sc.PruningError, match="example_inputs"):
        sc.accelerate(mlp(0.5), torch.randn(2, 31))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="2:4 semi-structured kernels need a CUDA GPU")
def test_two_four_on_gpu():
    if torch.cuda.get_device_capability()[0] < 8:
        pytest.skip("semi-structured sparsity needs sparse tensor cores (compute capability 8.0+)")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 64))
    sc.prune(model, 0.5, granularity="2:4", scope="local")
    model = model.half().cuda()
    x = torch.randn(64, 128, dtype=torch.float16, device="cuda")
    result = sc.accelerate(model, (x,), candidates=("dense", "2:4"), timer=fake_timer({"2:4": 1.0, "dense": 2.0}))
    assert [c.path for c in result.layers] == ["2:4", "2:4"]
    with torch.no_grad():
        assert_same(result.model(x).float(), model(x).float(), tol=1e-2)
    real = sc.accelerate(model, (x,), candidates=("dense", "2:4"))  # the real clock runs on the GPU too
    assert {c.path for c in real.layers} <= {"dense", "2:4"}


def test_a_kernel_that_fails_on_the_input_is_not_a_candidate(monkeypatch):
    acc = importlib.import_module("secateurs.inference.accelerate")  # the module; sc.accelerate is the function

    class Broken(nn.Module):
        def forward(self, x):
            raise NotImplementedError("no kernel for this shape")

    monkeypatch.setitem(acc._BUILDERS, "csr", lambda layer: Broken())
    model = mlp(0.9)
    x = torch.randn(4, 32)
    result = sc.accelerate(model, (x,), candidates=("dense", "csr"), timer=fake_timer({"csr": 0.1, "dense": 1.0}))
    assert [c.path for c in result.layers] == ["dense"] * 3
    assert all("csr" not in c.times for c in result.layers)
    with torch.no_grad():
        assert_same(result.model(x), model(x))
