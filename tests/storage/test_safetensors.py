"""sc.save / sc.load: sparse safetensors with masks, atomic writes, checked loads."""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

import secateurs as sc
from secateurs import zoo
from secateurs.storage import safetensors as export
from secateurs.errors import PruningError


def _net(seed: int = 0, width: int = 12) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(2, 4, 3), flatten=nn.Flatten(),
        fc1=nn.Linear(4 * 3 * 3, width), relu=nn.ReLU(), fc2=nn.Linear(width, 3),
    ))


def _x() -> torch.Tensor:
    return torch.randn(5, 2, 5, 5, generator=torch.Generator().manual_seed(3))


def _snapshot(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    return ({k: v.detach().clone() for k, v in model.state_dict().items()},
            {k: v.clone() for k, v in sc.masks(model).items()})


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_pruned_model_round_trips_into_a_fresh_instance(tmp_path: Path) -> None:
    src = _net(seed=0)
    sc.prune(src, sparsity=0.7, layers={"fc2": None})  # fc2 stays unmasked
    with torch.no_grad():  # move the stored originals under the masks: only W * M must be saved
        for name, module in (("conv", src.conv), ("fc1", src.fc1)):
            module.parametrizations.weight.original.add_(1.0)
    path = tmp_path / "pruned.safetensors"
    sc.save(src, path)

    dst = _net(seed=1)  # fresh, unpruned, different weights
    assert sc.masks(dst) == {}
    out = sc.load(path, dst)
    assert out is dst
    got, want = sc.masks(dst), sc.masks(src)
    assert set(got) == {"conv.weight", "fc1.weight"}
    assert _same(got, want)
    assert all(m.dtype == torch.bool for m in got.values())
    with torch.no_grad():
        assert torch.equal(dst(_x()), src(_x()))
        for name in ("conv", "fc1", "fc2"):
            assert torch.equal(getattr(dst, name).weight, getattr(src, name).weight), name
    assert sc.sparsity(dst) == sc.sparsity(src)


def test_loaded_masks_keep_pruned_weights_pruned_while_training(tmp_path: Path) -> None:
    src = _net()
    sc.prune(src, sparsity=0.5)
    sc.save(src, tmp_path / "m.safetensors")
    dst = sc.load(tmp_path / "m.safetensors", _net(seed=2))
    opt = torch.optim.SGD(dst.parameters(), lr=0.1)
    dst(_x()).sum().backward()
    opt.step()
    for name, mask in sc.masks(dst).items():
        weight = dst.get_submodule(name.rpartition(".")[0]).weight.detach()
        assert float(weight[~mask].abs().sum()) == 0.0, name


def test_unpruned_model_round_trips(tmp_path: Path) -> None:
    src = _net(seed=0)
    path = tmp_path / "dense.safetensors"
    sc.save(src, path)
    dst = sc.load(path, _net(seed=5))
    assert sc.masks(dst) == {}
    assert _same(dst.state_dict(), src.state_dict())
    with torch.no_grad():
        assert torch.equal(dst(_x()), src(_x()))


def test_loading_an_unpruned_file_removes_existing_masks(tmp_path: Path) -> None:
    src = _net(seed=0)
    sc.save(src, tmp_path / "dense.safetensors")
    dst = _net(seed=4)
    sc.prune(dst, sparsity=0.9)
    sc.load(tmp_path / "dense.safetensors", dst)
    assert sc.masks(dst) == {}
    assert sc.sparsity(dst) == 0.0
    assert _same(dst.state_dict(), src.state_dict())


def test_file_is_safetensors_with_secateurs_metadata(tmp_path: Path) -> None:
    src = zoo.model("mlp", in_features=6, widths=[5])
    sc.prune(src, sparsity=0.5)
    path = tmp_path / "m.safetensors"
    sc.save(src, path, metadata={"note": "hello"}, compress=False)  # format 1: dense weight + bool mask
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        keys = set(f.keys())
        fc1 = f.get_tensor("fc1.weight")
        mask = f.get_tensor("fc1.weight.mask")
    assert meta["format"] == "secateurs"
    assert meta["format_version"] == "1"
    assert meta["note"] == "hello"
    assert json.loads(meta["architecture"])["name"] == "mlp"
    # plain names, masks beside the weights, no parametrization keys
    assert keys == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc1.weight.mask", "fc2.weight.mask"}
    assert mask.dtype == torch.bool and mask.shape == fc1.shape
    assert float(fc1[~mask].abs().sum()) == 0.0


def test_shape_mismatch_names_the_parameter_and_changes_nothing(tmp_path: Path) -> None:
    src = zoo.model("mlp", in_features=64, widths=[8])
    sc.prune(src, sparsity=0.5)
    path = tmp_path / "m.safetensors"
    sc.save(src, path)
    target = zoo.model("mlp", in_features=60, widths=[8])  # only fc1.weight differs
    sc.prune(target, sparsity=0.3)
    before = _snapshot(target)
    with pytest.raises(PruningError, match=r"fc1\.weight"):
        sc.load(path, target)
    after = _snapshot(target)
    assert _same(after[0], before[0]) and _same(after[1], before[1])


def test_missing_parameters_are_named_and_change_nothing(tmp_path: Path) -> None:
    src = zoo.model("mlp", in_features=8, widths=[4])
    sc.save(src, tmp_path / "m.safetensors")
    target = zoo.model("mlp", in_features=8, widths=[4, 4])  # has an fc3 the file lacks
    before = _snapshot(target)
    with pytest.raises(PruningError, match=r"fc3\.weight"):
        sc.load(tmp_path / "m.safetensors", target)
    after = _snapshot(target)
    assert _same(after[0], before[0]) and after[1] == {}


def test_missing_path_is_a_pruning_error(tmp_path: Path) -> None:
    with pytest.raises(PruningError, match="nope.safetensors"):
        sc.load(tmp_path / "nope.safetensors", _net())


@pytest.mark.parametrize("content", [b"", b"this is just text\n", b"\xff" * 64])
def test_a_file_that_is_not_safetensors_is_a_pruning_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.safetensors"
    path.write_bytes(content)
    with pytest.raises(PruningError, match="x.safetensors"):
        sc.load(path, _net())


def test_a_foreign_safetensors_file_is_a_pruning_error(tmp_path: Path) -> None:
    path = tmp_path / "foreign.safetensors"
    save_file({k: v.contiguous() for k, v in _net().state_dict().items()}, str(path))
    target = _net(seed=9)
    before = _snapshot(target)
    with pytest.raises(PruningError, match="secateurs"):
        sc.load(path, target)
    assert _same(_snapshot(target)[0], before[0])


def test_load_without_a_model_needs_a_recorded_architecture(tmp_path: Path) -> None:
    sc.save(_net(), tmp_path / "plain.safetensors")  # not from the zoo: no architecture
    with pytest.raises(PruningError, match="architecture"):
        sc.load(tmp_path / "plain.safetensors")


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(tensors, filename, metadata=None):  # writes half a file, then fails
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(export, "save_file", broken)
    net = _net()
    sc.prune(net, sparsity=0.5)
    with pytest.raises(OSError, match="disk full"):
        sc.save(net, tmp_path / "m.safetensors")
    assert os.listdir(tmp_path) == []  # neither the file nor a temporary one


def test_failed_save_leaves_an_existing_file_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.safetensors"
    old = _net(seed=0)
    sc.save(old, path)
    saved = path.read_bytes()

    def broken(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise RuntimeError("boom")

    monkeypatch.setattr(export, "save_file", broken)
    with pytest.raises(RuntimeError, match="boom"):
        sc.save(_net(seed=1), path)
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors"]
    assert path.read_bytes() == saved
    monkeypatch.undo()
    assert _same(sc.load(path, _net(seed=2)).state_dict(), old.state_dict())


def test_save_creates_parent_folders(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "m.safetensors"
    sc.save(_net(), path)
    assert path.is_file()
    assert sorted(os.listdir(path.parent)) == ["m.safetensors"]


def test_format_2_stores_kept_values_and_loads_bit_identical(tmp_path: Path) -> None:
    torch.manual_seed(0)

    def build():
        return nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 256))

    dense = build()
    sc.save(dense, tmp_path / "dense.safetensors")
    pruned = build()
    pruned.load_state_dict(dense.state_dict())
    sc.prune(pruned, 0.9)
    sc.save(pruned, tmp_path / "p90.safetensors")
    size = (tmp_path / "p90.safetensors").stat().st_size / (tmp_path / "dense.safetensors").stat().st_size
    assert size <= 0.2
    with safe_open(str(tmp_path / "p90.safetensors"), framework="pt") as f:
        assert f.metadata()["format_version"] == "2"
        assert {"0.weight.values", "0.weight.bits"} <= set(f.keys())
    loaded = sc.load(tmp_path / "p90.safetensors", build())
    for name, mask in sc.masks(pruned).items():
        assert torch.equal(sc.masks(loaded)[name], mask)
        module = name.rsplit(".", 1)[0]
        assert torch.equal(loaded.get_submodule(module).weight, pruned.get_submodule(module).weight)
    sc.prune(pruned, 0.999)  # very sparse: CSR indices are smaller than a bitmask
    sc.save(pruned, tmp_path / "p999.safetensors")
    with safe_open(str(tmp_path / "p999.safetensors"), framework="pt") as f:
        assert {"0.weight.crow", "0.weight.col"} <= set(f.keys())
    again = sc.load(tmp_path / "p999.safetensors", build())
    assert torch.equal(again[2].weight, pruned[2].weight)


def test_format_1_files_keep_loading(tmp_path: Path) -> None:
    src = zoo.model("mlp", in_features=6, widths=[5])
    sc.prune(src, sparsity=0.5)
    sc.save(src, tmp_path / "v1.safetensors", compress=False)
    loaded = sc.load(tmp_path / "v1.safetensors")
    x = torch.randn(3, 6)
    assert torch.equal(loaded(x), src(x))
