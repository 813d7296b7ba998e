"""Devices: the setting (``auto | cpu | cuda[:N]``), moving batches, and tensors made on the model's device.

Without a GPU the device-consistency of pruning is checked with the ``meta`` default device: inside
``with torch.device("meta")`` every tensor made without ``device=`` lands on ``meta``, and mixing it with
the CPU model's tensors fails, as a CPU tensor made beside a GPU model would. The tests marked ``gpu``
run the same paths on a real GPU and are skipped without one.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import secateurs as sc
from secateurs import devices
from secateurs.errors import PruningError

GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    with torch.device("cpu"):  # built on the CPU even inside the meta context below
        return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(),
                             nn.Flatten(), nn.Linear(8 * 4 * 4, 12), nn.ReLU(), nn.Linear(12, 5))


X = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
Y = torch.tensor([0, 1, 2, 3])
CRITERIA = [c for c in sc.criteria() if c != "movement"]  # movement needs scores learned while training


def _no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# ---------------------------------------------------------------- the setting


@pytest.mark.parametrize("spec", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", " CPU "])
def test_check_accepts_the_allowed_forms(spec: str) -> None:
    assert devices.check(spec) == spec.strip().lower()


@pytest.mark.parametrize("spec", ["tpu", "gpu", "cuda:", "cuda:x", "cuda:-1", "", "mps"])
def test_check_names_the_value_and_the_allowed_ones(spec: str) -> None:
    with pytest.raises(PruningError, match=rf"--device must be auto, cpu, cuda or cuda:N, got {spec!r}"):
        devices.check(spec, "--device")


def test_auto_is_the_cpu_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_cuda(monkeypatch)
    assert devices.resolve("auto") == torch.device("cpu")
    assert devices.resolve("cpu") == torch.device("cpu")


@pytest.mark.parametrize("spec", ["cuda", "cuda:1"])
def test_a_gpu_asked_for_without_one_is_refused(monkeypatch: pytest.MonkeyPatch, spec: str) -> None:
    _no_cuda(monkeypatch)
    with pytest.raises(PruningError, match=rf"device {spec!r} asks for a GPU, but torch sees none"):
        devices.resolve(spec)


def _two_gpus(monkeypatch: pytest.MonkeyPatch, world: str, local_rank: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setenv("WORLD_SIZE", world)
    monkeypatch.setenv("LOCAL_RANK", local_rank)


@pytest.mark.parametrize("spec", ["auto", "cuda"])
def test_under_torchrun_each_process_takes_its_own_gpu(monkeypatch: pytest.MonkeyPatch, spec: str) -> None:
    _two_gpus(monkeypatch, "2", "1")
    assert devices.resolve(spec) == torch.device("cuda", 1)


def test_under_torchrun_one_gpu_for_every_process_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _two_gpus(monkeypatch, "2", "1")
    with pytest.raises(PruningError, match="would put every process on one GPU"):
        devices.resolve("cuda:0")


def test_a_gpu_number_the_machine_lacks_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _two_gpus(monkeypatch, "1", "0")
    assert devices.resolve("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(PruningError, match="has 2 GPU"):
        devices.resolve("cuda:2")


def test_describe_and_of() -> None:
    assert devices.describe(torch.device("cpu")) == "cpu"
    assert devices.of(nn.Linear(2, 2)) == torch.device("cpu")
    assert devices.of(nn.ReLU()) == torch.device("cpu")  # no parameters: the CPU
    with torch.device("meta"):
        assert devices.of(nn.Linear(2, 2)).type == "meta"


def test_move_reaches_tensors_inside_containers_and_leaves_the_rest() -> None:
    batch = ({"input_ids": torch.ones(1, 2)}, [torch.zeros(1), 3], "text")
    moved = devices.move(batch, torch.device("meta"))
    assert moved[0]["input_ids"].is_meta and moved[1][0].is_meta
    assert moved[1][1] == 3 and moved[2] == "text" and isinstance(moved, tuple) and isinstance(moved[1], list)


# ---------------------------------------------------------------- no tensor made on the wrong device


def _pruned(meta: bool, **kw: object) -> nn.Module:
    model = _net()
    with torch.device("meta") if meta else contextlib.nullcontext():
        sc.prune(model, 0.5, data=[(X, Y)], loss_fn=F.cross_entropy, example_inputs=(X,), **kw)
    return model


def _same_masks(model: nn.Module, reference: nn.Module) -> None:
    got, want = sc.masks(model), sc.masks(reference)
    assert set(got) == set(want) and want
    for name, mask in want.items():
        assert got[name].device.type == "cpu" and torch.equal(got[name], mask), name


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("granularity", ["unstructured", "2:4", "channel"])
def test_prune_makes_no_tensor_off_the_models_device(criterion: str, granularity: str) -> None:
    """Every criterion (Wanda and OBS calibration included) and granularity, with any stray factory call
    landing on ``meta``: the masks are the very ones chosen without it, on the model's device."""
    kw = dict(criterion=criterion, granularity=granularity, scope="local",
              layers={"0": None} if granularity == "2:4" else None)  # the stem has 27 inputs, not 4k
    _same_masks(_pruned(True, **kw), _pruned(False, **kw))


@pytest.mark.parametrize("granularity", ["unstructured", "channel", (2, 2)])
def test_global_scope_makes_no_tensor_off_the_models_device(granularity: object) -> None:
    kw = dict(granularity=granularity, scope="global", layers={"0": None, "8": None} if granularity == (2, 2) else None)
    _same_masks(_pruned(True, **kw), _pruned(False, **kw))


def test_compact_merge_and_fold_keep_the_models_device() -> None:
    pruned = _pruned(False, granularity="channel")
    with torch.device("meta"):
        small = sc.compact(pruned, (X,))
        merged = sc.merge_neurons(_net(), amount=0.5, example_inputs=(X,)).model
        folded = sc.fold(_net(), 0.5, example_inputs=(X,)).model
    for model in (small, merged, folded):
        assert {t.device.type for t in [*model.parameters(), *model.buffers()]} == {"cpu"}
    assert torch.allclose(merged(X), sc.merge_neurons(_net(), amount=0.5, example_inputs=(X,)).model(X))
    with torch.no_grad():
        assert torch.allclose(small(X), pruned(X), atol=1e-5)


# ---------------------------------------------------------------- on a GPU (skipped without one)


@GPU
@pytest.mark.parametrize("criterion", CRITERIA)
def test_gpu_prune_with_cpu_batches_matches_the_cpu(criterion: str) -> None:
    """Scores computed on the GPU from CPU batches give the CPU's masks for deterministic criteria, and
    every mask stays on the GPU."""
    cpu, gpu = _net(), _net().cuda()
    kw = dict(criterion=criterion, data=[(X, Y)], loss_fn=F.cross_entropy, scope="local")
    sc.prune(cpu, 0.5, **kw)
    sc.prune(gpu, 0.5, **kw)
    assert {m.device.type for m in sc.masks(gpu).values()} == {"cuda"}
    if criterion in ("magnitude", "random"):
        for name, mask in sc.masks(cpu).items():
            assert torch.equal(mask, sc.masks(gpu)[name].cpu()), name
    assert abs(sc.sparsity(gpu) - sc.sparsity(cpu)) < 0.02


@GPU
@pytest.mark.parametrize("scope", ["local", "global"])
def test_gpu_channels_compact_merge_and_fold(scope: str) -> None:
    model = _net().cuda()
    x = X.cuda()
    sc.prune(model, 0.5, granularity="channel", scope=scope, example_inputs=(X,))  # CPU example inputs: moved
    small = sc.compact(model, (x,))
    with torch.no_grad():
        assert torch.allclose(small(x), model(x), atol=1e-4)
    for made in (small, sc.merge_neurons(_net().cuda(), amount=0.5, example_inputs=(x,)).model,
                 sc.fold(_net().cuda(), 0.5, example_inputs=(x,)).model):
        assert {t.device.type for t in made.parameters()} == {"cuda"}


@GPU
def test_gpu_schedules_train_on_the_gpu() -> None:
    model = _net().cuda()
    pruner = sc.RigL(model, sparsity=0.8, every=1)
    for _ in range(3):
        model.zero_grad()
        F.cross_entropy(model(X.cuda()), Y.cuda()).backward()
        pruner.step()
    assert {m.device.type for m in sc.masks(model).values()} == {"cuda"}
    assert abs(sc.sparsity(model) - 0.8) < 0.02
