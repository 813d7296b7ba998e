"""Capturing what each layer receives, for Wanda and OBS (not a criterion itself)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import calibration, masking
from ..errors import PruningError
from . import Context


def patches(x: Tensor, module: nn.Module) -> Tensor:
    """What each output position of ``module`` sees, as rows: ``(N, fan_in)``.

    For a Linear layer (and ``transformers``' ``Conv1D``) the rows are its input vectors; for a Conv2d
    (``groups=1``) the unfolded patches, laid out like the weight viewed as ``(out, in·kh·kw)``.
    """
    if isinstance(module, nn.Linear) or masking.transposed(module):
        return x.reshape(-1, x.shape[-1])
    if isinstance(module, nn.Conv2d) and module.groups == 1 and isinstance(module.padding, tuple):
        cols = F.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    raise PruningError(
        f"{type(module).__name__} layers are not supported by this criterion (Linear, transformers' Conv1D and "
        "Conv2d with groups=1 and numeric padding are); exclude them with layers={...: None}"
    )


def collect(ctx: Context, fn: Callable[[str, nn.Module, Tensor], None]) -> None:
    """Run the data through the model once, calling ``fn(name, module, layer input)`` per call."""
    assert ctx.data is not None

    def hook(name: str, module: nn.Module, inputs: tuple[Tensor, ...], _output: object) -> None:
        fn(name, module, inputs[0].detach())

    with calibration.hooks(ctx.layers, hook):
        calibration.run(ctx.model, ctx.data)


def accumulate(store: dict[str, Tensor], name: str, value: Tensor) -> None:
    """``store[name] += value`` (creating it)."""
    store[name] = store[name] + value if name in store else value


def as_matrix(weight: Tensor, flipped: bool = False) -> Tensor:
    """A weight as ``(out, fan_in)``; ``flipped``: it is stored ``(in, out)`` (``Conv1D``) and is transposed."""
    return weight.t() if flipped else weight.reshape(weight.shape[0], -1)


def as_stored(matrix: Tensor, shape: torch.Size, flipped: bool = False) -> Tensor:
    """The inverse of :func:`as_matrix`: an ``(out, fan_in)`` matrix back in the weight's own layout."""
    return matrix.t() if flipped else matrix.reshape(shape)
