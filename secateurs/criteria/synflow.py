"""SynFlow: iterative synaptic flow pruning, data-free.

Tanaka, Kunin, Yamins & Ganguli, "Pruning neural networks without any data by
iteratively conserving synaptic flow" (NeurIPS 2020). On a copy of the network
in float64 with every weight replaced by its absolute value and every bias
(and BatchNorm running mean) set to zero (the "linearised" network: with the
biases gone, flow is conserved from layer to layer, which is what the paper's
argument against layer collapse needs), the synaptic flow is ``R = 1ᵀ f(1)``, the sum of the
outputs for an all-ones input, and the score is ``θ ⊙ ∂R/∂θ``. Pruning is
repeated over ``rounds`` rounds (default 100) with the exponential schedule
``p_k = 1 − (1 − p)^{k/rounds}``, rescoring each time; this is what avoids
layer collapse.

The copy is pruned with the call's scope and granularity; per-layer overrides
from ``layers=`` apply to the final pruning only. The input shape comes from
``example_inputs`` or from the first batch of ``data``. The returned scores are
those of the last round, with entries removed in earlier rounds at ``-inf``, so
pruning to ``p`` keeps exactly what the iterations kept.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from .. import calibration, masking
from ..errors import PruningError
from ..layers import Target
from ..selection import keep_masks
from . import Context, Criterion, register
from ._gradient import Accumulated


class _Given(Accumulated):
    """Scores computed elsewhere (by the rounds below)."""

    name = "_given"
    needs_data = needs_loss = False

    def __init__(self, scores: dict[str, Tensor]) -> None:
        super().__init__()
        self.scores = scores


@register
class SynFlow(Criterion):
    """Score ``θ ⊙ ∂R/∂θ`` on the linearised network, pruned iteratively.

    Args:
        seed: unused (SynFlow is deterministic).
        rounds: pruning rounds when used by :func:`secateurs.prune`.

    Example:
        For a chain ``y = b · a · x`` with ``a = 2``, ``b = -3``: ``R = |a||b| = 6``
        and both weights score ``6``; flow is conserved through the chain.
    """

    name = "synflow"  # not nonnegative: entries removed in earlier rounds score -inf

    def __init__(self, seed: int = 0, rounds: int = 100) -> None:
        super().__init__(seed)
        self.rounds = rounds
        self.scores: dict[str, Tensor] = {}

    def prepare(self, ctx: Context) -> None:
        net = _linearised(ctx.model)
        layers = {name: net.get_submodule(name.rpartition(".")[0]) for name in ctx.layers}
        device = next((p.device for p in net.parameters()), torch.device("cpu"))
        x = torch.ones(_input_shape(ctx), dtype=torch.float64, device=device)
        targets = [Target(n.rpartition(".")[0], m, ctx.sparsity) for n, m in layers.items()]
        rounds = self.rounds if ctx.sparsity else 1
        for k in range(1, rounds + 1):
            scores = _flow(net, layers, x)
            if not ctx.sparsity:
                break
            p = 1 - (1 - ctx.sparsity) ** (k / rounds)
            keep, _ = keep_masks(targets, _Given(scores), ctx.granularity, ctx.scope, p, ctx.min_density)
            for t, mask in zip(targets, keep):
                masking.set_mask(t.module, mask)
        for name, module in layers.items():
            mask = masking.get_mask(module)
            if mask is not None:
                scores[name] = scores[name].masked_fill(~mask, float("-inf"))
        self.scores = {n: s.float() for n, s in scores.items()}

    def score(self, name: str, weight: Tensor) -> Tensor:
        return self.scores[name].clone().to(weight.device)


def _linearised(model: nn.Module) -> nn.Module:
    """A float64 copy with ``|weights|``, zero biases and zero BatchNorm means."""
    net = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for name, t in list(net.named_parameters()) + list(net.named_buffers()):
            if not t.is_floating_point():
                continue
            plain = masking.split_key(name)[0]
            leaf = plain.rpartition(".")[2]  # e.g. "bias", "in_proj_bias", "running_mean"
            t.zero_() if leaf.endswith("bias") or leaf == "running_mean" else t.abs_()
    return net


def _input_shape(ctx: Context) -> tuple[int, ...]:
    if ctx.example_inputs is not None:
        first: Any = ctx.example_inputs[0] if isinstance(ctx.example_inputs, (tuple, list)) else ctx.example_inputs
        return (1, *first.shape[1:])
    if ctx.data is not None:
        args, _, _ = next(calibration.batches(ctx.data, desc=None))
        if args and isinstance(args[0], Tensor):
            return (1, *args[0].shape[1:])
    raise PruningError("criterion 'synflow' needs example_inputs= (or data=) to know the input shape")


def _flow(net: nn.Module, layers: dict[str, nn.Module], x: Tensor) -> dict[str, Tensor]:
    params = {n: masking.original(m) for n, m in layers.items()}
    with calibration.scoring(net, params.values()):
        out = net(x)
        if not isinstance(out, Tensor):
            raise PruningError("criterion 'synflow' needs a model whose output is a tensor")
        grads = torch.autograd.grad(out.sum(), list(params.values()), allow_unused=True)
    with torch.no_grad():
        return {n: (layers[n].weight * g if g is not None else torch.zeros_like(p))
                for (n, p), g in zip(params.items(), grads)}
