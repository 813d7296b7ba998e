"""secateurs' own sparse CPU layers: outputs equal dense, both instruction sets, both layouts, both dtypes."""

import copy
import warnings

import pytest
import torch
from safetensors import safe_open
from torch import nn

import secateurs as sc
from secateurs.errors import PruningError
from secateurs.inference import build
from secateurs.inference.kernels import Pointwise
from secateurs.inference.fast import (PAD, BitmaskLinear, Index16Linear, NMLinear, bitmask_linear, index16_linear,
                                      load_bitmask_linear, nm_linear, nm_pattern)

pytestmark = pytest.mark.skipif(not build.available(), reason="the sparse CPU kernels could not be compiled here")


@pytest.fixture(params=[2, 1, 0], ids=["avx512", "avx2", "portable"])
def isa(request):
    level = build.set_isa(request.param)
    if level != request.param:
        build.set_isa(9)
        pytest.skip(f"this CPU lacks ISA level {request.param}")
    yield level
    build.set_isa(9)  # back to the best the CPU has


def pruned(rows, cols, density, dtype=torch.float32, bias=True, seed=0):
    torch.manual_seed(seed)
    layer = nn.Linear(cols, rows, bias=bias).to(dtype)
    with torch.no_grad():
        layer.weight.mul_((torch.rand(rows, cols) < density).to(dtype))
    return layer


def n_of_m(rows, cols, n, m, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    layer = nn.Linear(cols, rows).to(dtype)
    keep = torch.rand(rows, cols // m, m).argsort(dim=2) < n
    keep[0] = False  # an all-zero row
    keep[1, 0] = False  # a group with fewer than n
    with torch.no_grad():
        layer.weight.mul_(keep.reshape(rows, cols).to(dtype))
    return layer


def assert_close(fast, layer, x):
    tol = 1e-5 if layer.weight.dtype == torch.float32 else 2e-2
    with torch.no_grad():
        out, ref = fast(x), layer(x)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    if ref.numel() == 0:
        return
    scale = max(1.0, float(ref.float().abs().max()))
    assert float((out.float() - ref.float()).abs().max()) <= tol * scale


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch", [1, 3, 64])
@pytest.mark.parametrize("density", [0.5, 0.1, 0.01])
def test_bitmask_equals_dense(isa, dtype, batch, density):
    for seed, (rows, cols) in enumerate([(37, 100), (64, 256), (5, 13)]):
        layer = pruned(rows, cols, density, dtype, seed=seed)
        fast = bitmask_linear(layer)
        assert isinstance(fast, BitmaskLinear)
        assert fast.values.numel() - PAD == int((layer.weight != 0).sum())
        assert_close(fast, layer, torch.randn(batch, cols).to(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch", [1, 5, 64])
@pytest.mark.parametrize("density", [0.5, 0.1, 0.0])
def test_index16_equals_dense(isa, dtype, batch, density):
    # 300 columns: rows with 16 n + r kept weights for many r (the masked tails), and empty rows at density 0
    for seed, (rows, cols) in enumerate([(37, 300), (6, 13)]):
        layer = pruned(rows, cols, density, dtype, seed=seed)
        fast = index16_linear(layer)
        assert isinstance(fast, Index16Linear)
        kept = layer.weight != 0
        assert fast.values.numel() - PAD == int(kept.sum())
        assert torch.equal(fast.idx[: int(kept.sum())].long(), kept.nonzero()[:, 1])
        assert_close(fast, layer, torch.randn(batch, cols).to(dtype))


def test_index16_takes_at_most_65536_inputs():
    layer = nn.Linear(65537, 1, bias=False)
    assert index16_linear(layer) is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch", [1, 2, 5, 64])
@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (4, 8), (2, 8), (3, 8), (4, 16)])
def test_n_of_m_equals_dense(isa, dtype, batch, n, m):
    # 23 rows: the kernels take rows 4 (or 2) at a time, then one by one; 112 columns: values left after the
    # last full 16 for every pattern
    layer = n_of_m(23, 112, n, m, dtype)
    fast = nm_linear(layer, n, m)
    assert isinstance(fast, NMLinear)
    assert fast.values.shape == (23, 112 // m * n)
    assert fast.idx.numel() * 8 >= fast.values.numel() * fast.bits
    assert_close(fast, layer, torch.randn(batch, 112).to(dtype))


def test_n_of_m_is_found_and_refused():
    assert nm_pattern(n_of_m(8, 64, 2, 4).weight) == (2, 4)
    assert nm_pattern(n_of_m(8, 64, 1, 8).weight) == (1, 8)
    dense_ish = pruned(8, 64, 0.9)
    assert nm_pattern(dense_ish.weight) is None and nm_linear(dense_ish) is None
    assert nm_linear(n_of_m(8, 64, 2, 4), 1, 4) is None, "more than n kept in a group"
    layer = n_of_m(8, 64, 2, 4)
    assert nm_linear(layer).n == 2 and nm_linear(layer).m == 4


def test_edge_cases():
    layer = pruned(16, 40, 0.3)
    with torch.no_grad():
        layer.weight[3] = 0
    fast = bitmask_linear(layer)
    x = torch.randn(6, 80)[:, ::2]  # not contiguous
    assert not x.is_contiguous()
    assert_close(fast, layer, x)
    assert_close(fast, layer, torch.randn(2, 5, 40))  # 3-D
    assert_close(fast, layer, torch.randn(0, 40))  # no rows
    zero = pruned(16, 40, 0.0, bias=False)
    assert_close(bitmask_linear(zero), zero, torch.randn(3, 40))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        empties = (nn.Linear(0, 4), nn.Linear(8, 0))
    for empty in empties:
        assert_close(bitmask_linear(empty), empty, torch.randn(2, empty.in_features))
    two_four = n_of_m(8, 64, 2, 4)
    assert_close(nm_linear(two_four), two_four, torch.randn(2, 3, 128)[..., ::2])
    with pytest.raises(RuntimeError, match="40 features"):
        fast(torch.randn(2, 41))


def test_deepcopy_and_state_dict():
    for layer, build_ in ((pruned(16, 40, 0.2), bitmask_linear), (n_of_m(8, 64, 2, 4), nm_linear)):
        fast = build_(layer)
        x = torch.randn(3, layer.in_features)
        twin = copy.deepcopy(fast)
        assert torch.equal(twin(x), fast(x))
        state = fast.state_dict()
        assert all(not isinstance(v, nn.Parameter) for v in state.values())
        fresh = copy.deepcopy(fast)
        for buffer in fresh.buffers():
            buffer.zero_()
        fresh.load_state_dict(state)
        assert torch.equal(fresh(x), fast(x))


def test_not_offered_off_cpu_or_for_other_dtypes():
    assert bitmask_linear(pruned(8, 16, 0.5).to(torch.float64)) is None
    assert nm_linear(n_of_m(8, 16, 2, 4).half()) is None


def test_accelerate_uses_them_when_timed_faster():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 16))
    sc.prune(model, 0.5, granularity="2:4", scope="local")
    x = torch.randn(4, 32)

    def timer(_, runs):
        for run in runs.values():
            run()
        return {p: {"n:m": 1.0, "bitmask": 2.0}.get(p, 10.0) for p in runs}

    result = sc.accelerate(model, (x,), timer=timer)
    assert [c.path for c in result.layers] == ["n:m", "n:m"]
    assert isinstance(result.model[0], NMLinear)
    with torch.no_grad():
        assert torch.allclose(result.model(x), model(x), atol=1e-5)
    result = sc.accelerate(model, (x,), candidates=["bitmask"], timer=timer)
    assert isinstance(result.model[2], BitmaskLinear)
    assert "bitmask" in result.table()


def test_accelerate_runs_pointwise_convolutions_on_them():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 48, 1), nn.ReLU(),
                          nn.Conv2d(48, 16, 1, stride=2))
    sc.prune(model, 0.9, scope="local")
    x = torch.randn(2, 3, 9, 9)

    def timer(_, runs):
        for run in runs.values():
            run()
        return {p: {"index16": 1.0, "bitmask": 2.0}.get(p, 10.0) for p in runs}

    result = sc.accelerate(model, (x,), timer=timer)
    chosen = {c.name: c.path for c in result.layers}
    assert chosen == {"2": "index16", "4": "index16"}  # the 3x3 convolution is not a candidate
    assert isinstance(result.model[4], Pointwise) and isinstance(result.model[4].linear, Index16Linear)
    with torch.no_grad():
        assert torch.allclose(result.model(x), model(x), atol=1e-5)


def test_index16_from_a_loaded_bitmask(tmp_path):
    model, path = saved(tmp_path, 64, 0.9)
    fast = Index16Linear.from_bitmask(load_bitmask_linear(path, "0"))
    x = torch.randn(3, 64)
    with torch.no_grad():
        assert torch.allclose(fast(x), model[0](x), atol=1e-5)


def saved(tmp_path, cols, sparsity):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(cols, 48), nn.ReLU(), nn.Linear(48, 10))
    sc.prune(model, sparsity, scope="local")
    path = tmp_path / "m.safetensors"
    sc.save(model, path)
    return model, path


@pytest.mark.parametrize("cols,sparsity", [(64, 0.8), (30, 0.8), (64, 0.995)])  # aligned, unaligned, CSR-stored
def test_load_straight_into_the_layout(tmp_path, cols, sparsity):
    model, path = saved(tmp_path, cols, sparsity)
    fast = load_bitmask_linear(path, "0")
    dense = sc.finalize(copy.deepcopy(model))[0]
    assert_close(fast, dense, torch.randn(5, cols))
    nnz = int((dense.weight != 0).sum())
    held = sum(b.numel() * b.element_size() for b in fast.buffers())
    # kept values + 1 bit per weight (rows byte-aligned) + offsets + bias: nothing of the dense size
    assert held <= 4 * (nnz + PAD) + 48 * ((cols + 7) // 8) + 8 * 49 + 4 * 48
    assert held < dense.weight.numel() * 4 * 0.5


def test_load_uses_the_stored_bitmask_as_it_is(tmp_path):
    _, path = saved(tmp_path, 64, 0.8)
    with safe_open(str(path), framework="pt") as f:
        bits = f.get_tensor("0.weight.bits")
    assert torch.equal(load_bitmask_linear(path, "0").mask.reshape(-1), bits)


def test_load_errors(tmp_path):
    _, path = saved(tmp_path, 64, 0.8)
    with pytest.raises(PruningError, match="no masked 2-D weight '1.weight'"):
        load_bitmask_linear(path, "1")
