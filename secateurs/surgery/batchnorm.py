"""BatchNorm folded into the layer before it, and back out.

In evaluation a BatchNorm after a conv or Linear is an affine map per channel,
``BN(u) = γ (u − μ) / √(v + ε) + β``, so with ``k = γ / √(v + ε)`` the pair computes

    BN(W x + b) = (k W) x + (β + k (b − μ)).

:func:`fold` writes ``k W`` into the layer (its bias, if any, set to 0) and leaves the BatchNorm in
place as an identity with a bias (``γ = 1``, ``μ = 0``, ``v = 1 − ε``, ``β ← β + k (b − μ)``):
the outputs are unchanged and every channel is now one row of weights plus one shift, which is what
neuron merging and folding compare and average. :func:`unfold` puts the statistics back (those of
the channel each kept channel came from), dividing the rows by ``k`` again, so the model has its
usual BatchNorms for fine-tuning (in training mode a BatchNorm re-normalises with batch statistics,
and an identity one would lose ``γ``). A channel with ``γ = 0`` stays folded (it cannot be divided).

Only a BatchNorm whose input is a conv or Linear read by nothing else, with affine parameters and
running statistics, is folded; others are left alone (and the channels they touch are not merged).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..graph import NORMS, trace
from ..graph.structural import recognised
from .tracing import LAYERS


@dataclass
class Folded:
    """One folded BatchNorm: its producer and its original parameters and statistics."""

    producer: str
    gamma: Tensor
    beta: Tensor
    mean: Tensor
    var: Tensor
    eps: float


def pairs(model: nn.Module, example_inputs: tuple[Any, ...]) -> dict[str, str]:
    """``{batchnorm: producer}`` for each foldable BatchNorm (see the module docstring)."""
    if recognised(model) or not any(isinstance(m, NORMS) for m in model.modules()):
        return {}
    gm = trace(model, example_inputs)
    out = {}
    for node in gm.graph.nodes:
        if node.op != "call_module" or not node.args or not isinstance(node.args[0], torch.fx.Node):
            continue
        bn, src = gm.get_submodule(str(node.target)), node.args[0]
        if not isinstance(bn, NORMS) or not bn.affine or bn.running_mean is None or src.op != "call_module":
            continue
        if isinstance(gm.get_submodule(str(src.target)), LAYERS) and len(src.users) == 1:
            out[str(node.target)] = str(src.target)
    return out


def _rows(t: Tensor, k: Tensor) -> Tensor:
    return t * k.reshape(-1, *([1] * (t.dim() - 1)))


def fold(model: nn.Module, found: Mapping[str, str]) -> dict[str, Folded]:
    """Fold each BatchNorm of ``found`` (``{batchnorm: producer}``) into its producer, in place.

    Returns:
        ``{batchnorm: Folded}``, what :func:`unfold` needs.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)).eval()
        >>> with torch.no_grad():
        ...     _ = net[1].running_var.fill_(4.0), net[1].weight.fill_(3.0)
        >>> x = torch.ones(1, 2); before = net(x)
        >>> _ = fold(net, {"1": "0"})
        >>> torch.allclose(net(x), before, atol=1e-5), float(net[1].weight.detach()[0])
        (True, 1.0)
    """
    out = {}
    with torch.no_grad():
        for name, producer in found.items():
            bn, layer = model.get_submodule(name), model.get_submodule(producer)
            saved = Folded(producer, bn.weight.detach().clone(), bn.bias.detach().clone(),
                           bn.running_mean.detach().clone(), bn.running_var.detach().clone(), float(bn.eps))
            k = saved.gamma / torch.sqrt(saved.var + saved.eps)
            b = layer.bias.detach().clone() if layer.bias is not None else torch.zeros_like(k)
            layer.weight.copy_(_rows(layer.weight, k))
            if layer.bias is not None:
                layer.bias.zero_()
            bn.bias.copy_(saved.beta + k * (b - saved.mean))
            bn.weight.fill_(1.0)
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - saved.eps)
            out[name] = saved
    return out


def unfold(model: nn.Module, folded: Mapping[str, Folded], kept: Mapping[str, Sequence[int] | None]) -> None:
    """Put the statistics back, in place: channel ``i`` of each BatchNorm takes those of the original
    channel ``kept[bn][i]`` (all channels, in order, when ``None``); outputs are unchanged."""
    with torch.no_grad():
        for name, saved in folded.items():
            bn, layer = model.get_submodule(name), model.get_submodule(saved.producer)
            idx = torch.tensor(list(kept.get(name) or range(len(saved.gamma))), dtype=torch.long, device=saved.gamma.device)
            gamma, mean, var = saved.gamma[idx], saved.mean[idx], saved.var[idx]
            k = gamma / torch.sqrt(var + saved.eps)
            ok = k != 0
            safe = torch.where(ok, k, torch.ones_like(k))
            layer.weight.copy_(_rows(layer.weight, 1 / safe))
            bn.bias.copy_(torch.where(ok, bn.bias + k * mean, bn.bias))
            bn.weight.copy_(torch.where(ok, gamma, bn.weight))
            bn.running_mean.copy_(torch.where(ok, mean, bn.running_mean))
            bn.running_var.copy_(torch.where(ok, var, bn.running_var))


def repair_stats(rows: Tensor, saved: Folded, idx: list[int], share: Tensor, merged: Tensor,
                 shift: Tensor) -> tuple[Tensor, Tensor]:
    """Scale a merged channel to its members' standard deviation around its (exact) mean, with no data.

    Args:
        rows: the members' folded rows, ``(m, fan_in)``.
        saved: the original BatchNorm parameters and statistics.
        idx: the members' channel indices.
        share: the members' weights in the merge (they sum to 1).
        merged, shift: the merged row and shift (``share``-weighted means).

    Returns:
        The repaired row and shift (see :mod:`.fold`, "Repair").
    """
    gamma = saved.gamma[idx].double().abs()
    norms = rows.norm(dim=1)
    ok = norms > 0
    if not bool(ok.any()):
        return merged, shift
    est = ((share[ok, None] * gamma[ok, None] * rows[ok] / norms[ok, None]).sum(0)).norm()
    target = (share * gamma).sum()
    if float(est) <= 0 or float(target) <= 0:
        return merged, shift
    alpha = (target / est).clamp(1.0, float(1 / share.norm())).sqrt()
    mean = (share * saved.beta[idx].double()).sum()
    return alpha * merged, alpha * shift + (1 - alpha) * mean
