"""Norms over channels that normalise over their *live* channels only (the residual stream pruned).

A LayerNorm or RMSNorm computes its statistics over every channel, so a channel removed from the
residual stream (``sc.prune(..., hidden=True)``) changes them: the compacted model, whose norm is
narrower, would not compute what the masked model computes. :func:`keep_statistics` registers a
forward hook that makes the masked model's norm compute exactly what the narrower one will: the
mean and variance (or the mean square, for RMSNorm) are taken over the live channels, those whose
weight or bias is not zero, and the removed channels output 0. A norm whose channels are all live
computes as before. The hook is plain Python state on the module (``copy.deepcopy`` keeps it);
:func:`secateurs.load` puts it back on norms whose saved masks remove channels.

Known norms (:func:`channel_axis`): ``nn.LayerNorm`` and its subclasses over one channel axis (the
last; timm's ``LayerNorm2d`` normalises axis 1 of its NCHW input), ``nn.RMSNorm`` and the RMSNorms of
Hugging Face models that compute ``weight * x / rms(x)`` (Llama, Mistral, Qwen2, T5).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

RMS_NAMES = ("LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm", "T5LayerNorm", "RMSNorm")
"""Class names of RMSNorms computing ``weight * x * rsqrt(mean(x²) + eps)`` (Gemma's ``1 + weight`` is not one)."""
NCHW_NAMES = ("LayerNorm2d", "LayerNorm2dFp32")
"""Subclasses of ``nn.LayerNorm`` that normalise axis 1 of an NCHW input (timm)."""
HOOK_ATTR = "secateurs_kept_statistics"
"""The module attribute that says the norm is hooked (the hook itself is found in ``_forward_hooks``: a deep
copy's handle would still point at the original's hooks)."""


def _named(module: nn.Module, names: tuple[str, ...]) -> bool:
    """Whether the module's class, or a base (a masked module's class is torch's ``Parametrized*``), is named so."""
    return any(c.__name__ in names for c in type(module).__mro__)


def is_rms(module: nn.Module) -> bool:
    """Whether ``module`` is an RMSNorm this module knows (no mean subtracted)."""
    return _named(module, RMS_NAMES) or isinstance(module, getattr(nn, "RMSNorm", ()))


def channel_axis(module: nn.Module) -> int | None:
    """The axis of its input a known norm normalises (``-1`` or ``1``), or ``None`` for other modules.

    Example:
        >>> channel_axis(nn.LayerNorm(8)), channel_axis(nn.BatchNorm2d(8))
        (-1, None)
    """
    weight = getattr(module, "weight", None)
    if not isinstance(weight, Tensor) or weight.dim() != 1:
        return None
    if isinstance(module, nn.LayerNorm):
        if len(module.normalized_shape) != 1:
            return None
        return 1 if _named(module, NCHW_NAMES) else -1
    return -1 if is_rms(module) else None


def width(module: nn.Module) -> int | None:
    """The number of channels a known norm normalises (``None`` for other modules)."""
    return None if channel_axis(module) is None else int(module.weight.shape[0])


def _eps(module: nn.Module) -> float:
    eps = next((getattr(module, a) for a in ("eps", "variance_epsilon") if getattr(module, a, None) is not None),
               None)
    return float(eps) if eps is not None else float(torch.finfo(module.weight.dtype).eps)


def live(module: nn.Module) -> Tensor:
    """The channels whose weight or bias is not zero (a removed channel has both zero)."""
    alive = module.weight.detach() != 0
    bias = getattr(module, "bias", None)
    return alive | (bias.detach() != 0) if isinstance(bias, Tensor) else alive


class KeptStatistics:
    """Forward hook: recompute a norm's output with statistics over its live channels (see the module docstring)."""

    def __call__(self, module: nn.Module, args: tuple[Any, ...], output: Tensor) -> Tensor | None:
        if _tracing() or not args or not isinstance(args[0], Tensor):
            return None
        keep = live(module)
        if bool(keep.all()):
            return None
        axis = channel_axis(module)
        x = args[0]
        idx = torch.nonzero(keep).flatten().to(x.device)
        part = x.index_select(axis, idx)
        y = part.float()
        if not is_rms(module):
            y = y - y.mean(dim=axis, keepdim=True)
        y = (y * torch.rsqrt(y.pow(2).mean(dim=axis, keepdim=True) + _eps(module))).to(x.dtype)
        shape = [1] * x.dim()
        shape[axis] = idx.numel()
        y = y * module.weight.index_select(0, idx).reshape(shape)
        bias = getattr(module, "bias", None)
        if isinstance(bias, Tensor):
            y = y + bias.index_select(0, idx).reshape(shape)
        return torch.zeros_like(output).index_copy(axis % x.dim(), idx, y.to(output.dtype))


def _tracing() -> bool:
    """Whether torch.fx is tracing (the hook is then left out of the graph: channel analysis reads the norm)."""
    return bool(is_fx_symbolic_tracing())


def keep_statistics(module: nn.Module) -> None:
    """Make ``module`` (a known norm) normalise over its live channels from now on (idempotent)."""
    if channel_axis(module) is None:
        raise ValueError(f"{type(module).__name__} is not a LayerNorm / RMSNorm over one channel axis")
    if not getattr(module, HOOK_ATTR, False):
        module.register_forward_hook(KeptStatistics())
        setattr(module, HOOK_ATTR, True)


def drop_statistics(module: nn.Module) -> None:
    """Remove the hook of :func:`keep_statistics` (a no-op when there is none)."""
    for key, hook in list(module._forward_hooks.items()):
        if isinstance(hook, KeptStatistics):
            del module._forward_hooks[key]
    if HOOK_ATTR in module.__dict__:
        delattr(module, HOOK_ATTR)


def hooked(model: nn.Module) -> list[str]:
    """Names of the norms of ``model`` that normalise over their live channels."""
    return [n for n, m in model.named_modules() if getattr(m, HOOK_ATTR, False)]
