"""Save and load pruned models as safetensors: weights, masks and a JSON header.

Layout of a file written by :func:`save`:

- a masked weight as its kept values plus a bitmask or CSR indices
  (``<layer>.weight.values`` / ``.bits`` or ``.crow`` + ``.col``, see :mod:`.sparse_format`);
  format 1 files (the weight as the layer computes it, ``<layer>.weight``, and its bool
  mask, ``<layer>.weight.mask``) still load;
- every other parameter and buffer under its ``state_dict`` name;
- metadata ``{"format": "secateurs", "format_version": "1", "architecture": ..., "surgery": ...}``,
  the architecture being the zoo name and arguments when the model came from the zoo, and
  the surgery the rows/columns kept by :func:`secateurs.compact`, as JSON, so that a
  compacted model is rebuilt from a fresh instance of the original architecture.

Nothing is pickled; loading never runs code from the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from .. import masking, zoo
from ..errors import PruningError
from ..files import atomic_write
from ..surgery.records import SURGERY_ATTR, replay
from ..zoo.models import ARCH_ATTR
from . import sparse as sparse_format

FORMAT = "secateurs"
FORMAT_VERSION = "2"  # 2: masked weights stored sparse (sparse_format); 1 (dense + mask) still loads
MASK_SUFFIX = ".mask"


def plain_state(model: nn.Module) -> dict[str, Tensor]:
    """``state_dict`` with masked weights under their plain names, masks beside them."""
    out: dict[str, Tensor] = {}
    masking.adopt_torch_pruning(model)  # torch.nn.utils.prune's weight_orig / weight_mask become ours
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if masking.split_key(key)[1] is None:
                out[key] = value
        for name, mask in masking.masks(model).items():
            module_name, _, tensor_name = name.rpartition(".")
            module = model.get_submodule(module_name)
            out[name] = getattr(module, tensor_name).detach()
            out[name + MASK_SUFFIX] = mask
    return out


def save(model: nn.Module, path: str | os.PathLike[str], metadata: dict[str, str] | None = None,
         compress: bool = True) -> None:
    """Write ``model`` (weights and masks) to a safetensors file, atomically.

    Args:
        model: a model, pruned or not.
        path: the file to write.
        metadata: extra string key/values for the header.
        compress: store each masked weight as its kept values plus a bitmask or CSR
            indices, whichever is smaller (``False``: dense weight plus bool mask, format 1).
    """
    tensors = {k: v.detach().contiguous().cpu().clone() for k, v in plain_state(model).items()}
    header = {"format": FORMAT, "format_version": FORMAT_VERSION if compress else "1", **(metadata or {})}
    if compress:
        sparse = {}
        for key in [k for k in tensors if k.endswith(MASK_SUFFIX)]:
            name = key[: -len(MASK_SUFFIX)]
            parts, sparse[name] = sparse_format.encode(name, tensors.pop(name), tensors.pop(key))
            tensors.update(parts)
        if sparse:
            header["sparse"] = json.dumps(sparse, separators=(",", ":"))
    arch = getattr(model, ARCH_ATTR, None)
    if arch is not None:
        header["architecture"] = json.dumps(arch)
    surgery = getattr(model, SURGERY_ATTR, None)
    if surgery:
        header["surgery"] = json.dumps(surgery, separators=(",", ":"))
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))


def read(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and header of a secateurs file.

    Raises:
        PruningError: when the file is missing or is not a secateurs save.
    """
    if not Path(path).is_file():
        raise PruningError(f"no such file: {str(path)!r}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises several types for a bad header
        raise PruningError(f"{str(path)!r} is not a safetensors file: {exc}") from None
    if header.get("format") != FORMAT:
        raise PruningError(f"{str(path)!r} is not a secateurs save (its header has no format=secateurs)")
    try:
        for name, meta in json.loads(header.get("sparse", "{}")).items():  # format 2: back to dense + mask
            tensors[name], tensors[name + MASK_SUFFIX] = sparse_format.decode(name, tensors, meta)
    except (KeyError, ValueError, RuntimeError, IndexError) as exc:
        raise PruningError(f"{str(path)!r}: its sparse tensors are damaged ({type(exc).__name__}: {exc})") from None
    return tensors, header


def load(path: str | os.PathLike[str], model: nn.Module | None = None) -> nn.Module:
    """Load weights and masks from ``path`` into ``model`` (a fresh instance is fine).

    Args:
        path: a file written by :func:`save`.
        model: the architecture to load into; ``None`` rebuilds a zoo model
            from the file's header.

    Returns:
        The model, with the saved weights and the saved masks attached.

    Raises:
        PruningError: a missing or foreign file, or a model whose parameters do not
            match the file (names and shapes are checked before anything changes).
    """
    tensors, header = read(path)
    if model is None:
        model = _build_from_header(header, path)
    if "surgery" in header and not getattr(model, SURGERY_ATTR, None):
        replay(model, json.loads(header["surgery"]))  # a fresh instance: shrink it the same way first
    masks_ = {k[: -len(MASK_SUFFIX)]: v for k, v in tensors.items() if k.endswith(MASK_SUFFIX)}
    values = {k: v for k, v in tensors.items() if not k.endswith(MASK_SUFFIX)}
    _check_matches(model, values, masks_, path)
    masking.restore(model)
    for name, mask in masks_.items():
        module_name, _, tensor_name = name.rpartition(".")
        masking.set_mask(model.get_submodule(module_name), mask, tensor_name)
    state = {}
    for key, value in values.items():
        if key in masks_:  # the weight goes to the parametrization's original, beside its mask
            state[masking.parametrized_key(key, "original")] = value
            state[masking.parametrized_key(key, "0.mask")] = masks_[key]
        else:
            state[key] = value
    model.load_state_dict(state, strict=True)
    return model


def _check_matches(model: nn.Module, values: dict[str, Tensor], masks_: dict[str, Tensor], path: Any) -> None:
    expected = {k: tuple(v.shape) for k, v in plain_state(model).items() if not k.endswith(MASK_SUFFIX)}
    got = {k: tuple(v.shape) for k, v in values.items()}
    missing, unexpected = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    if missing or unexpected:
        raise PruningError(
            f"{str(path)!r} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for k, shape in got.items():
        if expected[k] != shape:
            raise PruningError(f"{str(path)!r}: {k} has shape {shape}, the model has {expected[k]}")
    for k, m in masks_.items():
        if k not in got or tuple(m.shape) != got[k] or m.dtype != torch.bool:
            raise PruningError(f"{str(path)!r}: mask for {k} does not match its weight")


def _build_from_header(header: dict[str, str], path: Any) -> nn.Module:
    if "architecture" not in header:
        raise PruningError(f"{str(path)!r} does not record its architecture; pass model= to load it into")
    arch = json.loads(header["architecture"])
    return zoo.model(arch["name"], **arch.get("kwargs", {}))
