"""Export a model (masks baked in) as ONNX for other runtimes, checked with onnxruntime."""

from __future__ import annotations

import copy
import logging
import os
import re
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from .. import masking
from ..errors import PruningError
from ..files import atomic_write
from ..inputs import as_inputs, difference, run_example, same


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
    diff = difference(got, want)
    if not same(got, want, rtol=1e-4):
        raise RuntimeError(f"onnxruntime's outputs differ from torch's by {diff:.3g}; please report this as a bug")
    return diff
