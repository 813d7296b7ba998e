"""Files from others: a header's sizes are checked against the stored tensors before anything is
allocated, a failed load leaves the model as it was, and every bad file is one PruningError."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import secateurs as sc
from secateurs import zoo
from secateurs.errors import PruningError

HEADER = {"format": "secateurs", "format_version": "2"}


def _sparse(name: str, shape: list[int], layout: str) -> dict[str, str]:
    return {**HEADER, "sparse": json.dumps({name: {"shape": shape, "dtype": "float32", "layout": layout}})}


def _bitmask(path: Path, shape: list[int]) -> None:
    save_file({"fc1.weight.values": torch.ones(1), "fc1.weight.bits": torch.tensor([128], dtype=torch.uint8)},
              str(path), metadata=_sparse("fc1.weight", shape, "bitmask"))


def _csr(path: Path, shape: list[int]) -> None:
    save_file({"fc1.weight.values": torch.ones(0), "fc1.weight.crow": torch.tensor([0, 0], dtype=torch.int32),
               "fc1.weight.col": torch.zeros(0, dtype=torch.int32)}, str(path),
              metadata=_sparse("fc1.weight", shape, "csr"))


def _arch(path: Path, widths: list[int]) -> None:
    arch = {"name": "mlp", "kwargs": {"in_features": 4, "widths": widths, "num_classes": 2}}
    save_file({"fc1.weight": torch.ones(2, 2)}, str(path), metadata={**HEADER, "architecture": json.dumps(arch)})


def _edited(src: Path, path: Path, edit: Callable[[dict[str, str]], None]) -> None:
    with safe_open(str(src), "pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())
    edit(meta)
    save_file(tensors, str(path), metadata=meta)


def _lenet(tmp_path: Path) -> Path:
    path = tmp_path / "lenet.safetensors"
    sc.save(zoo.model("lenet-5"), path)
    return path


def _hidden(meta: dict[str, str]) -> None:
    meta["surgery"] = json.dumps([{"conv1": {"runtime": {"keep": 0.5, "hidden": 20_000_000}}}])


def _image_size(meta: dict[str, str]) -> None:
    arch = json.loads(meta["architecture"])
    arch["kwargs"]["image_size"] = 12000
    meta["architecture"] = json.dumps(arch)


def _hostile(tmp_path: Path) -> dict[str, Path]:
    """Files of a few KB whose headers ask for 0.6 to 2 GB when trusted."""
    files = {k: tmp_path / f"{k}.safetensors" for k in ("bitmask", "csr", "arch", "hidden", "image_size")}
    _bitmask(files["bitmask"], [20000, 20000])
    _csr(files["csr"], [1, 400_000_000])
    _arch(files["arch"], [20000, 20000])
    _edited(_lenet(tmp_path), files["hidden"], _hidden)
    _edited(_lenet(tmp_path), files["image_size"], _image_size)
    return files


PEAK = r"""
import resource, sys, secateurs as sc
from secateurs import zoo
for path in sys.argv[1:]:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        zoo.example_inputs(sc.load(path))
        print(path, "loaded")
    except sc.PruningError as exc:
        pass
    print(path, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def test_loading_hostile_headers_stays_within_memory(tmp_path: Path) -> None:
    files = _hostile(tmp_path)
    out = subprocess.run([sys.executable, "-c", PEAK, *map(str, files.values())], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert "loaded" not in out
    grown = {Path(line.split()[0]).stem: int(line.split()[1]) for line in out.splitlines()}
    assert set(grown) == set(files) and all(mib < 100 for mib in grown.values()), grown


@pytest.mark.parametrize(("kind", "field"), [("bitmask", "sparse"), ("csr", "sparse"), ("arch", "architecture"),
                                             ("hidden", "runtime"), ("image_size", "image_size")])
def test_hostile_header_names_its_field(tmp_path: Path, kind: str, field: str) -> None:
    with pytest.raises(PruningError, match=field):
        sc.load(_hostile(tmp_path)[kind])


BAD_HEADERS = {
    "sparse not json": {"sparse": "{oops"},
    "sparse a list": {"sparse": "[1, 2]"},
    "sparse bad layout": {"sparse": json.dumps({"fc1.weight": {"shape": [2, 4], "layout": "zip", "dtype": "float32"}})},
    "sparse bad shape": {"sparse": json.dumps({"fc1.weight": {"shape": [-2, 4], "layout": "bitmask",
                                                              "dtype": "float32"}})},
    "sparse bad dtype": {"sparse": json.dumps({"fc1.weight": {"shape": [2, 4], "layout": "bitmask", "dtype": "int8"}})},
    "architecture not json": {"architecture": "{"},
    "architecture a string": {"architecture": '"mlp"'},
    "architecture unknown": {"architecture": json.dumps({"name": "nope"})},
    "architecture bad kwarg": {"architecture": json.dumps({"name": "mlp", "kwargs": {"widths": "wide"}})},
    "architecture huge": {"architecture": json.dumps({"name": "mlp", "kwargs": {"widths": [10**6, 10**6]}})},
    "surgery not json": {"surgery": "[{"},
    "surgery a dict": {"surgery": "{}"},
    "surgery unknown module": {"surgery": json.dumps([{"nope": {"rows": [0]}}])},
    "surgery out of range": {"surgery": json.dumps([{"fc1": {"rows": [0, 99999]}}])},
    "surgery negative": {"surgery": json.dumps([{"fc1": {"rows": [-1]}}])},
    "surgery forward": {"surgery": json.dumps([{"fc1": {"attrs": {"forward": 1}}}])},
    "surgery __dict__": {"surgery": json.dumps([{"fc1": {"attrs": {"__dict__": {}}}}])},
    "surgery out_features": {"surgery": json.dumps([{"fc1": {"attrs": {"out_features": 3}}}])},
    "surgery unknown key": {"surgery": json.dumps([{"fc1": {"_forward_hooks": [0]}}])},
    "surgery heads on linear": {"surgery": json.dumps([{"fc1": {"heads": [0]}}])},
    "surgery runtime on linear": {"surgery": json.dumps([{"fc1": {"runtime": {"keep": 0.5, "hidden": 4}}}])},
}


def _pruned_mlp(tmp_path: Path) -> Path:
    m = zoo.model("mlp", in_features=8, widths=[6], num_classes=3)
    sc.prune(m, 0.5)
    path = tmp_path / "ok.safetensors"
    sc.save(m, path)
    return path


@pytest.mark.parametrize("case", sorted(BAD_HEADERS))
def test_damaged_header_is_one_pruning_error(tmp_path: Path, case: str) -> None:
    path = tmp_path / "bad.safetensors"
    _edited(_pruned_mlp(tmp_path), path, lambda meta: meta.update(BAD_HEADERS[case]))
    with pytest.raises(PruningError) as info:
        sc.load(path)
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


def test_damaged_sparse_values_are_refused(tmp_path: Path) -> None:
    """Counts and indices that disagree with the header are found before the dense weight is built."""
    src = _pruned_mlp(tmp_path)
    with safe_open(str(src), "pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())
    tensors["fc1.weight.bits"] = torch.full_like(tensors["fc1.weight.bits"], 255)  # keeps more than stored
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(PruningError, match="entries"):
        sc.load(tmp_path / "bad.safetensors")


def test_failed_load_leaves_the_model_as_it_was(tmp_path: Path) -> None:
    """The file's surgery fits the model but its weights do not: nothing changes."""
    m = zoo.model("mlp", in_features=8, widths=[6], num_classes=3)
    path = tmp_path / "bad.safetensors"
    sc.save(m, tmp_path / "ok.safetensors")
    _edited(tmp_path / "ok.safetensors", path,
            lambda meta: meta.update(surgery=json.dumps([{"fc1": {"rows": [0, 1]}, "fc2": {"cols": [0, 1]}}])))
    fresh = zoo.model("mlp", in_features=8, widths=[6], num_classes=3)
    state = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(PruningError, match="shape"):
        sc.load(path, fresh)
    assert fresh.fc1.out_features == 6 and not hasattr(fresh, "secateurs_surgery")
    assert all(torch.equal(state[k], v) for k, v in fresh.state_dict().items())


def test_load_into_a_pruned_model_still_works(tmp_path: Path) -> None:
    m = zoo.model("mlp", in_features=8, widths=[6], num_classes=3)
    sc.prune(m, 0.5)
    sc.save(m, tmp_path / "m.safetensors")
    other = zoo.model("mlp", in_features=8, widths=[6], num_classes=3)
    sc.prune(other, 0.2)
    sc.load(tmp_path / "m.safetensors", other)
    assert all(torch.equal(sc.masks(m)[k], v) for k, v in sc.masks(other).items())
