"""The compiled kernels: cached, and a failed build falls back with one warning."""

import warnings

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.inference import build, fast


def test_a_failed_build_warns_once_and_gives_none(tmp_path):
    missing = tmp_path / "missing.cpp"
    with pytest.warns(RuntimeWarning, match="kernels are not available .*missing.cpp is missing"):
        assert build.extension(missing) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert build.extension(missing) is None, "the failure is remembered: no second warning"


def test_switched_off_by_the_environment(tmp_path, monkeypatch):
    copy = tmp_path / "sparse_cpu.cpp"
    copy.write_text(build.SOURCE.read_text())
    monkeypatch.setenv("SECATEURS_KERNELS", "off")
    with pytest.warns(RuntimeWarning, match="SECATEURS_KERNELS=off"):
        assert build.extension(copy) is None


def test_without_kernels_accelerate_does_not_offer_them(monkeypatch):
    monkeypatch.setitem(build._state, str(build.SOURCE), None)  # as after a failed build
    torch.manual_seed(0)
    layer = nn.Linear(16, 8)
    with torch.no_grad():
        layer.weight[:, ::2] = 0
    assert fast.bitmask_linear(layer) is None and fast.nm_linear(layer) is None
    model = nn.Sequential(layer)
    seen = []

    def timer(_, runs):
        seen.extend(runs)
        return {p: 1.0 for p in runs}

    result = sc.accelerate(model, (torch.randn(2, 16),), timer=timer)
    assert "bitmask" not in seen and "n:m" not in seen and result.layers[0].path == "dense"
    assert build.set_isa(9) == 0


@pytest.mark.skipif(not build.available(), reason="the sparse CPU kernels could not be compiled here")
def test_compiled_once_then_cached():
    assert build.extension() is build.extension()
    assert build.set_isa(0) == 0
    assert build.set_isa(5) in (0, 1, 2)  # capped at what the CPU has


def test_a_stale_build_lock_is_removed_and_a_fresh_one_kept(tmp_path):
    # torch waits forever for this file: a compile killed at the time limit used to hang every later process
    import os
    import time

    lock = tmp_path / "lock"
    lock.touch()
    assert not build.clear_stale_lock(tmp_path) and lock.exists()  # a compile may be running
    old = time.time() - build.COMPILE_SECONDS - 120
    os.utime(lock, (old, old))
    assert build.clear_stale_lock(tmp_path) and not lock.exists()
    assert not build.clear_stale_lock(tmp_path)  # nothing left to remove
