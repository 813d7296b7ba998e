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

:func:`export_onnx` writes a model (masks baked in) as ONNX for other runtimes.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from . import masking, sparse_format
from .errors import PruningError

FORMAT = "secateurs"
FORMAT_VERSION = "2"  # 2: masked weights stored sparse (sparse_format); 1 (dense + mask) still loads
MASK_SUFFIX = ".mask"
ARCH_ATTR = "secateurs_arch"
SURGERY_ATTR = "secateurs_surgery"


def plain_state(model: nn.Module) -> dict[str, Tensor]:
    """``state_dict`` with masked weights under their plain names, masks beside them."""
    out: dict[str, Tensor] = {}
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if ".parametrizations." not in f".{key}":
                out[key] = value
        for name, mask in masking.masks(model).items():
            module_name, _, tensor_name = name.rpartition(".")
            module = model.get_submodule(module_name)
            out[name] = getattr(module, tensor_name).detach()
            out[name + MASK_SUFFIX] = mask
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike[str], write: Any) -> None:
    """Call ``write(tmp_path)`` and move the result to ``path`` only if it succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give it the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
        from .surgery.compact import replay

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
            state[_parametrized_key(key, "original")] = value
            state[_parametrized_key(key, "0.mask")] = masks_[key]
        else:
            state[key] = value
    model.load_state_dict(state, strict=True)
    return model


def _parametrized_key(name: str, leaf: str) -> str:
    """``"fc1.weight"`` -> ``"fc1.parametrizations.weight.<leaf>"``."""
    module_name, _, tensor_name = name.rpartition(".")
    prefix = f"{module_name}." if module_name else ""
    return f"{prefix}parametrizations.{tensor_name}.{leaf}"


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
    from . import zoo

    arch = json.loads(header["architecture"])
    return zoo.model(arch["name"], **arch.get("kwargs", {}))


def export_onnx(model: nn.Module, example_inputs: Any, path: str | os.PathLike[str], *,
                dynamic_batch: bool = True, check: bool = True) -> float | None:
    """Write ``model`` as an ONNX file, masks baked in, atomically; check it with onnxruntime.

    Masked, finalized and compacted models all export (a copy is finalized; ``model`` is
    unchanged). torch's ``torch.export``-based exporter is used (it needs ``onnx`` and
    ``onnxscript``: ``pip install 'secateurs[onnx]'``). The file is self-contained
    (no external data), so models over 2 GB are not supported.

    Args:
        model: the model to export.
        example_inputs: a tuple of tensors (or one tensor) to trace the model with.
        path: the ``.onnx`` file to write.
        dynamic_batch: make dimension 0 of every input (and output) dynamic.
        check: run the file with onnxruntime (if installed) on ``example_inputs`` before
            it is moved into place.

    Returns:
        The largest absolute difference between onnxruntime's and torch's outputs, or
        ``None`` when not checked.

    Raises:
        PruningError: ``onnxscript`` is missing, the inputs are not tensors, or torch
            cannot export the model (the message says why).
        RuntimeError: onnxruntime's outputs differ from torch's by more than 1e-4 (relative).
    """
    from .accelerate import run_example
    from .analysis.flops import as_inputs

    inputs = as_inputs(example_inputs)
    if not inputs or not all(isinstance(t, Tensor) for t in inputs):
        raise PruningError("example_inputs must be tensors (or a tuple of tensors) for ONNX export")
    try:
        import onnxscript  # noqa: F401  torch's exporter imports it lazily; fail early with the fix
    except ImportError:
        raise PruningError("ONNX export needs onnx and onnxscript: pip install 'secateurs[onnx]'") from None
    net = masking.finalize(copy.deepcopy(model)).eval()
    with torch.no_grad():  # in eager mode first: wrong inputs then fail with a short message, not the exporter's trace
        run_example(net, inputs)
    if dynamic_batch:  # torch.export treats a dimension of size 1 as fixed: trace with a batch of 2
        inputs = tuple(torch.cat([t, t]) if t.dim() and t.shape[0] == 1 else t for t in inputs)
    diff: list[float | None] = [None]

    def write(tmp: str) -> None:
        _onnx_write(net, inputs, tmp, dynamic_batch)
        if check:
            diff[0] = onnx_check(tmp, net, inputs)

    atomic_write(path, write)
    return diff[0]


def _onnx_write(net: nn.Module, inputs: tuple[Tensor, ...], path: str, dynamic_batch: bool) -> None:
    names = ["input"] if len(inputs) == 1 else [f"input_{i}" for i in range(len(inputs))]
    dims = tuple({0: torch.export.Dim.DYNAMIC} if dynamic_batch and t.dim() else {} for t in inputs)
    registry = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry.level
    registry.setLevel(logging.ERROR)  # it warns that torchvision's ops are missing, which we never use
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))  # torch's own internals
            torch.onnx.export(net, inputs, path, dynamo=True, external_data=False, verbose=False,
                              input_names=names, output_names=["output"],
                              dynamic_shapes=dims if dynamic_batch else None)
    except Exception as exc:  # torch.export raises many types; the innermost cause says what to change
        while exc.__cause__ is not None:
            exc = exc.__cause__
        first = re.sub(r"\x1b\[[0-9;]*m", "", (str(exc).strip().splitlines() or [""])[0])  # no colour codes
        raise PruningError(f"torch cannot export this model to ONNX ({type(exc).__name__}: {first})") from None
    finally:
        registry.setLevel(level)


def onnx_check(path: str | os.PathLike[str], net: nn.Module, inputs: tuple[Tensor, ...]) -> float | None:
    """Max abs difference between onnxruntime on ``path`` and ``net`` on ``inputs`` (``None``: no onnxruntime).

    Raises:
        RuntimeError: the difference is above 1e-4 relative to the output's scale.
    """
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {i.name: t.detach().cpu().numpy() for i, t in zip(session.get_inputs(), inputs)}
    got = torch.from_numpy(session.run(None, feed)[0])
    with torch.no_grad():
        want = net(*inputs)
    want = (want[0] if isinstance(want, (tuple, list)) else want).detach().cpu()
    diff = float((got - want).abs().max()) if want.numel() else 0.0
    if got.shape != want.shape or diff > 1e-4 * max(1.0, float(want.abs().max()) if want.numel() else 1.0):
        raise RuntimeError(f"onnxruntime's outputs differ from torch's by {diff:.3g}; please report this as a bug")
    return diff
