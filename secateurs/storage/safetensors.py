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

import contextlib
import copy
import itertools
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
from ..modules import norms
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


def _inspect(path: str | os.PathLike[str]) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """Header and stored tensor shapes of a secateurs file, read without loading any tensor."""
    if not Path(path).is_file():
        raise PruningError(f"no such file: {str(path)!r}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:  # safetensors raises several types for a bad header
        raise PruningError(f"{str(path)!r} is not a safetensors file: {str(exc)[:200]}") from None
    if header.get("format") != FORMAT:
        raise PruningError(f"{str(path)!r} is not a secateurs save (its header has no format=secateurs)")
    return header, stored


def _field(header: dict[str, str], name: str, path: Any, kind: type, default: Any) -> Any:
    """The header's JSON field ``name`` parsed, or ``default`` when absent."""
    if name not in header:
        return default
    try:
        value = json.loads(header[name])
    except ValueError as exc:
        raise PruningError(f"{str(path)!r}: header field {name!r} is not valid JSON ({exc})") from None
    if not isinstance(value, kind):
        raise PruningError(f"{str(path)!r}: header field {name!r} must be a JSON {kind.__name__}, "
                           f"got {str(value)[:60]!r}")
    return value


def _declared(header: dict[str, str], stored: dict[str, tuple[int, ...]], path: Any) -> dict[str, tuple[int, ...]]:
    """Shapes of the tensors the file holds once decoded (masked weights dense, masks beside them),
    each sparse entry's sizes checked against the stored tensors first."""
    out = dict(stored)
    try:
        for name, meta in _field(header, "sparse", path, dict, {}).items():
            out[name] = out[name + MASK_SUFFIX] = sparse_format.check(name, stored, meta)
            for part in ("values", "bits", "crow", "col"):
                out.pop(f"{name}.{part}", None)
    except sparse_format.DamagedError as exc:
        raise PruningError(f"{str(path)!r}: header field 'sparse' is damaged: {exc}") from None
    return out


def read(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and header of a secateurs file; sparse entries are checked against the stored
    tensors before they are decoded (memory stays a constant times the file's tensors).

    Raises:
        PruningError: when the file is missing, is not a secateurs save or is damaged.
    """
    header, stored = _inspect(path)
    _declared(header, stored, path)
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    try:
        for name, meta in _field(header, "sparse", path, dict, {}).items():  # format 2: back to dense + mask
            tensors[name], tensors[name + MASK_SUFFIX] = sparse_format.decode(name, tensors, meta)
    except (KeyError, ValueError, RuntimeError, IndexError) as exc:
        raise PruningError(f"{str(path)!r}: its sparse tensors are damaged ({type(exc).__name__}: {exc})") from None
    return tensors, header


def load(path: str | os.PathLike[str], model: nn.Module | None = None) -> nn.Module:
    """Load weights and masks from ``path`` into ``model`` (a fresh instance is fine).

    Everything is checked before anything is allocated or changed: the header's sizes against the
    stored tensors, then the architecture and the surgery on a ``meta`` copy of the model (no memory)
    against the file's shapes. A failed load leaves ``model`` exactly as it was.

    Args:
        path: a file written by :func:`save`.
        model: the architecture to load into; ``None`` rebuilds a zoo model
            from the file's header.

    Returns:
        The model, with the saved weights and the saved masks attached.

    Raises:
        PruningError: a missing, foreign or damaged file, or a model whose parameters do not
            match the file (names and shapes are checked before anything changes).
    """
    header, stored = _inspect(path)
    declared = _declared(header, stored, path)
    surgery = _field(header, "surgery", path, list, None)
    skeleton = _meta_copy(model) if model is not None else _build_from_header(header, path, meta=True)
    if surgery and not getattr(skeleton, SURGERY_ATTR, None):
        with torch.device("meta"):
            replay(skeleton, surgery)
    _check_matches(skeleton, declared, path, "the model" if model is not None else
                   "the model its header field 'architecture' describes")
    tensors, header = read(path)
    if model is None:
        model = _build_from_header(header, path)
    if surgery and not getattr(model, SURGERY_ATTR, None):
        replay(model, surgery)  # a fresh instance: shrink it the same way first (checked on the skeleton)
    masks_ = {k[: -len(MASK_SUFFIX)]: v for k, v in tensors.items() if k.endswith(MASK_SUFFIX)}
    values = {k: v for k, v in tensors.items() if not k.endswith(MASK_SUFFIX)}
    for k, m in masks_.items():
        if m.dtype != torch.bool:
            raise PruningError(f"{str(path)!r}: mask for {k} is {m.dtype}, not bool")
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
    masking.tie(model)  # tied weights (a head and its embedding) share one mask again
    _kept_statistics(model)
    return model


def _kept_statistics(model: nn.Module) -> None:
    """Norms over the residual stream whose masks remove whole channels (weight and bias alike, as
    ``sc.prune(..., hidden=True)`` leaves them) normalise over the kept channels again."""
    for module in model.modules():
        if norms.width(module) is None:
            continue
        weight = masking.get_mask(module, "weight")
        bias = masking.get_mask(module, "bias") if getattr(module, "bias", None) is not None else weight
        if weight is not None and bias is not None and not bool(weight.all()) and torch.equal(weight, bias):
            norms.keep_statistics(module)


def _meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters and buffers live on the ``meta`` device (no memory)."""
    memo: dict[int, Any] = {}
    for t in itertools.chain(model.parameters(), model.buffers()):
        empty = torch.empty_like(t, device="meta")
        memo[id(t)] = nn.Parameter(empty, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else empty
    return copy.deepcopy(model, memo)


def _check_matches(model: nn.Module, got: dict[str, tuple[int, ...]], path: Any, what: str) -> None:
    expected = {k: tuple(v.shape) for k, v in plain_state(model).items() if not k.endswith(MASK_SUFFIX)}
    values = {k: v for k, v in got.items() if not k.endswith(MASK_SUFFIX)}
    missing, unexpected = sorted(set(expected) - set(values)), sorted(set(values) - set(expected))
    if missing or unexpected:
        raise PruningError(
            f"{str(path)!r} does not match {what}: missing {missing[:5]}, unexpected {[u[:60] for u in unexpected[:5]]}"
        )
    for k, shape in values.items():
        if expected[k] != shape:
            raise PruningError(f"{str(path)!r}: {k} has shape {shape}, {what} has {expected[k]}")
    for k, shape in got.items():
        if k.endswith(MASK_SUFFIX) and values.get(k[: -len(MASK_SUFFIX)]) != shape:
            raise PruningError(f"{str(path)!r}: mask for {k[: -len(MASK_SUFFIX)][:60]} does not match its weight")


def _build_from_header(header: dict[str, str], path: Any, meta: bool = False) -> nn.Module:
    """The zoo model the header's ``architecture`` names (on the ``meta`` device with ``meta=True``)."""
    if "architecture" not in header:
        raise PruningError(f"{str(path)!r} does not record its architecture; pass model= to load it into")
    arch = _field(header, "architecture", path, dict, None)
    name, kwargs = arch.get("name"), arch.get("kwargs", {})
    if not isinstance(name, str) or not isinstance(kwargs, dict):
        raise PruningError(f"{str(path)!r}: header field 'architecture' needs a name and a kwargs mapping")
    try:
        with torch.device("meta") if meta else contextlib.nullcontext():
            return zoo.model(name, **kwargs)
    except PruningError as exc:
        raise PruningError(f"{str(path)!r}: header field 'architecture': {exc}") from None
