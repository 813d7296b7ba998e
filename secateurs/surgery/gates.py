"""Runtime (input-dependent) channel pruning: each input picks which channels of a conv to compute.

A :class:`RuntimeGate` wraps an ``nn.Conv2d``. A tiny side network looks at
the input (global average pool → Linear → ReLU → Linear) and predicts a
saliency per output channel; for each example only the ``k = ceil(keep · C)``
most salient channels are computed and the others are exactly 0. The weights
stay dense: what is saved is computation, and it differs from input to input.
This is the family of Runtime Neural Pruning (Lin et al., NeurIPS 2017) and
Feature Boosting and Suppression (Gao et al., "Dynamic Channel Pruning",
ICLR 2019); the training rule here is a straight-through estimator (Bengio,
Léonard & Courville, 2013).

FLOPs follow :mod:`torch.utils.flop_counter`, as :mod:`secateurs.analysis.flops`
does: 2 per multiply-accumulate of convolutions and Linear layers; bias
additions, the average pool, ReLU, top-k and the gather/scatter of channels are
not counted.

Example:
    >>> import torch, torch.nn as nn
    >>> gate = RuntimeGate(nn.Conv2d(3, 8, 3, padding=1), keep=0.5).eval()
    >>> y = gate(torch.randn(2, 3, 5, 5))
    >>> [int(c) for c in (y.abs().sum(dim=(2, 3)) > 0).sum(dim=1)]
    [4, 4]
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import calibration
from ..errors import PruningError
from ..inputs import evaluating
from ..layers import assign


def kept_channels(keep: float, channels: int) -> int:
    """``ceil(keep · channels)``, rounded first to 9 decimals so that ``ceil(0.3 · 10)`` is 3, not 4.

    Raises:
        PruningError: ``keep`` outside (0, 1].
    """
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep <= 1:
        raise PruningError(f"keep must be a number in (0, 1] (the fraction of channels computed), got {keep!r}")
    return max(1, math.ceil(round(keep * channels, 9)))


class RuntimeGate(nn.Module):
    """A Conv2d that computes, for each input, only its ``ceil(keep · C)`` most salient output channels.

    Saliency ``s = W₂ · relu(W₁ · avgpool(x) + b₁) + b₂`` (one value per output
    channel). With ``m`` the top-k indicator of ``s`` per example:

    * training: the conv computes every channel and the output is
      ``conv(x) ⊙ m̃`` with ``m̃ = m + sigmoid(s) − stopgrad(sigmoid(s))``: the
      forward value is exactly ``m``, the gradient reaches ``s`` as if the mask
      were ``sigmoid(s)`` (straight-through estimator), so the side network learns
      which channels help the loss, the dropped ones included;
    * eval: only the kept filters are gathered per example and convolved (one
      grouped convolution over the batch); the other channels are filled with 0.
      Forward hooks on the wrapped ``conv`` do not fire in eval for this reason.

    Eval forwards are counted in :attr:`flops_spent` / :attr:`flops_dense`;
    training forwards (which compute every channel) are not.

    Args:
        conv: the convolution to wrap (any stride, padding, dilation, groups, padding mode).
        keep: fraction of output channels computed per input, in (0, 1].
        hidden: width of the side network's hidden layer.

    Raises:
        PruningError: ``conv`` not a Conv2d, ``keep`` outside (0, 1] or ``hidden`` < 1.
    """

    def __init__(self, conv: nn.Conv2d, keep: float = 0.5, hidden: int = 16) -> None:
        super().__init__()
        if not isinstance(conv, nn.Conv2d):
            raise PruningError(f"RuntimeGate wraps an nn.Conv2d, got {type(conv).__name__}")
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise PruningError(f"hidden must be a positive integer, got {hidden!r}")
        self.k = kept_channels(keep, conv.out_channels)
        self.keep = float(keep)
        self.conv = conv
        device, dtype = conv.weight.device, conv.weight.dtype
        self.saliency = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(conv.in_channels, hidden, device=device, dtype=dtype), nn.ReLU(),
            nn.Linear(hidden, conv.out_channels, device=device, dtype=dtype),
        )
        nn.init.zeros_(self.saliency[4].bias)  # at the start the choice depends on the input alone
        self.active: Tensor | None = None
        self.reset_flops()

    def reset_flops(self) -> None:
        """Forget the eval inputs counted so far."""
        self._seen, self._spent, self._dense = 0, 0, 0

    def forward(self, x: Tensor) -> Tensor:
        s = self.saliency(x)
        idx = s.topk(self.k, dim=1).indices
        hard = torch.zeros_like(s).scatter_(1, idx, 1.0)
        self.active = hard.detach().bool()
        if self.training:
            soft = torch.sigmoid(s)
            mask = hard + (soft - soft.detach())  # value: exactly `hard`; gradient: that of sigmoid(s)
            return self.conv(x) * mask[:, :, None, None]
        out = _kept_conv(self.conv, x, idx)
        self._count(x.shape[0], out.shape[2] * out.shape[3])
        return out

    def _count(self, n: int, positions: int) -> None:
        c = self.conv
        per_channel = 2 * positions * c.kernel_size[0] * c.kernel_size[1] * (c.in_channels // c.groups)
        side = 2 * (c.in_channels * self.saliency[2].out_features + self.saliency[4].in_features * c.out_channels)
        self._seen += n
        self._spent += n * (self.k * per_channel + side)
        self._dense += n * c.out_channels * per_channel

    @property
    def inputs_seen(self) -> int:
        """Number of inputs counted since :meth:`reset_flops` (eval forwards only)."""
        return self._seen

    @property
    def flops_spent(self) -> float:
        """Average FLOPs per input of the eval forwards since :meth:`reset_flops`: kept channels + side network.

        Raises:
            PruningError: when no input was seen in eval mode.
        """
        return self._average(self._spent)

    @property
    def flops_dense(self) -> float:
        """Average FLOPs per input the unwrapped conv would have spent on the same inputs."""
        return self._average(self._dense)

    def _average(self, total: int) -> float:
        if not self._seen:
            raise PruningError("RuntimeGate has seen no input in eval mode yet; run the model after model.eval()")
        return total / self._seen


def _kept_conv(conv: nn.Conv2d, x: Tensor, idx: Tensor) -> Tensor:
    """``conv(x)`` with only the channels ``idx`` (``(N, k)``) computed per example, the others 0.

    The kept filters of all examples form one grouped convolution: with ``groups=1``
    each example is a group (input ``(1, N·C_in, H, W)``, ``N·k`` filters); otherwise
    each kept channel is a group fed the input slice its filter reads.
    """
    n, k = idx.shape
    padding: Any = conv.padding
    if conv.padding_mode != "zeros":
        x = F.pad(x, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
        padding = 0
    if conv.groups == 1:
        xin, groups = x.reshape(1, -1, *x.shape[2:]), n
    else:
        per_in = conv.in_channels // conv.groups
        source = (idx // (conv.out_channels // conv.groups))[..., None] * per_in + torch.arange(per_in, device=x.device)
        gather = source.reshape(n, k * per_in)[:, :, None, None].expand(-1, -1, *x.shape[2:])
        xin, groups = x.gather(1, gather).reshape(1, -1, *x.shape[2:]), n * k
    weight, bias = conv.weight, conv.bias
    kept_bias = None if bias is None else bias[idx].reshape(-1)
    y = F.conv2d(xin, weight[idx].reshape(n * k, *weight.shape[1:]), kept_bias,
                 conv.stride, padding, conv.dilation, groups)
    y = y.reshape(n, k, *y.shape[2:])
    out = y.new_zeros(n, conv.out_channels, *y.shape[2:])
    return out.scatter(1, idx[:, :, None, None].expand_as(y), y)


def wrap_convs(model: nn.Module, keep: float = 0.5, layers: Iterable[str] | str | None = None,
               hidden: int = 16) -> list[str]:
    """Replace chosen ``nn.Conv2d`` modules of ``model`` by :class:`RuntimeGate` in place.

    Args:
        model: the network (its Conv2d modules are replaced; the wrapped conv is ``<name>.conv``).
        keep: fraction of output channels computed per input, in (0, 1].
        layers: module names or glob patterns of the convs to wrap; default every Conv2d
            not already wrapped.
        hidden: width of each side network's hidden layer.

    Returns:
        The names of the wrapped modules, in model order.

    Raises:
        PruningError: bad ``keep``, no Conv2d to wrap, a pattern that matches none, or a
            model that is itself a Conv2d (wrap it with ``RuntimeGate(conv)``).
    """
    kept_channels(keep, 1)
    wrapped = {id(m.conv) for m in model.modules() if isinstance(m, RuntimeGate)}
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and id(m) not in wrapped]
    if any(n == "" for n, _ in found):
        raise PruningError("the model is itself a Conv2d; wrap it with RuntimeGate(conv) instead")
    patterns = None if layers is None else [layers] if isinstance(layers, str) else list(layers)
    names = assign([n for n, _ in found], None if patterns is None else dict.fromkeys(patterns, True),
                   True if patterns is None else None, kind="unwrapped Conv2d",
                   match=lambda pattern, name: fnmatch.fnmatchcase(name, pattern))
    chosen = [(n, m) for n, m in found if n in names]
    if not chosen:
        raise PruningError(f"model {type(model).__name__} has no Conv2d to wrap")
    gates = [(name, RuntimeGate(conv, keep, hidden)) for name, conv in chosen]  # all checked before any change
    for name, gate in gates:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, gate)
    return [n for n, _ in gates]


@dataclass(frozen=True)
class RuntimeFlops:
    """Average FLOPs per input of the runtime-gated convs, from :func:`average_flops`.

    Attributes:
        spent: kept channels plus side networks, summed over the gates.
        dense: what the same convs compute without gating.
        layers: ``{gate module name: (spent, dense)}``.
    """

    spent: float
    dense: float
    layers: dict[str, tuple[float, float]]

    @property
    def ratio(self) -> float:
        """``spent / dense``: about ``keep`` plus the side networks' share."""
        return self.spent / self.dense


def average_flops(model: nn.Module, data: Iterable[Any]) -> RuntimeFlops:
    """Run ``data`` through ``model`` in eval mode and average the FLOPs its runtime gates spent.

    Args:
        model: a network containing :class:`RuntimeGate` modules (see :func:`wrap_convs`).
        data: batches: ``(inputs, targets)``, a tensor, or a dict of tensors (targets are ignored).

    Returns:
        A :class:`RuntimeFlops`; the gates' counters are reset first and hold these inputs after.

    Raises:
        PruningError: no RuntimeGate in ``model``, or no batch in ``data``.
    """
    gates = {n: m for n, m in model.named_modules() if isinstance(m, RuntimeGate)}
    if not gates:
        raise PruningError(f"model {type(model).__name__} has no RuntimeGate; wrap its convs with wrap_convs()")
    for g in gates.values():
        g.reset_flops()
    with torch.no_grad(), evaluating(model):
        for batch in calibration.batches(data, desc="flops per input"):
            calibration.forward(model, batch)
    layers = {n: (g.flops_spent, g.flops_dense) for n, g in gates.items() if g.inputs_seen}  # skip unused gates
    if not layers:
        raise PruningError("no RuntimeGate of the model was reached by the data")
    return RuntimeFlops(sum(s for s, _ in layers.values()), sum(d for _, d in layers.values()), layers)
