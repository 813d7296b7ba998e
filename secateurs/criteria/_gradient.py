"""Shared machinery of the gradient-based criteria (not a criterion itself)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from .. import calibration
from . import Context, Criterion


class Accumulated(Criterion):
    """A criterion whose scores are computed in :meth:`prepare` and stored per layer."""

    needs_data = True
    needs_loss = True

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self.scores: dict[str, Tensor] = {}

    def score(self, name: str, weight: Tensor) -> Tensor:
        return self.scores[name].clone()


def mean_over_batches(ctx: Context, per_batch: Callable[[dict[str, Tensor]], dict[str, Tensor]]) -> dict[str, Tensor]:
    """Average of ``per_batch(grads)`` over the batches, per layer."""
    total: dict[str, Tensor] = {}
    n = 0
    assert ctx.data is not None and ctx.loss_fn is not None
    for grads in calibration.gradients(ctx.model, ctx.layers, ctx.data, ctx.loss_fn):
        for name, value in per_batch(grads).items():
            total[name] = total[name] + value if name in total else value.detach().clone()
        n += 1
    return {k: v / n for k, v in total.items()}


def masked_weights(ctx: Context) -> dict[str, Tensor]:
    """The weights as the layers compute them (pruned entries are 0)."""
    with torch.no_grad():
        return {name: module.weight.detach().clone() for name, module in ctx.layers.items()}


def output_gradients(
    ctx: Context, per_call: Callable[[str, Tensor, Tensor], None]
) -> int:
    """For every batch, call ``per_call(name, h, dL_n/dh)`` on each layer's output ``h``.

    ``h`` and its gradient are shaped ``(batch, positions, channels)``; the gradient is
    that of each example's own loss (the batch-mean loss times the batch size).

    Returns:
        The number of examples seen.
    """
    assert ctx.data is not None and ctx.loss_fn is not None
    captured: list[tuple[str, Tensor]] = []

    def keep(name: str, module: torch.nn.Module, _inputs: object, output: Tensor) -> None:
        captured.append((name, output))

    seen = 0
    with calibration.scoring(ctx.model, calibration.weights(ctx.layers).values()), calibration.hooks(ctx.layers, keep):
        for loss, batch in calibration.losses(ctx.model, ctx.data, ctx.loss_fn):
            size = calibration.batch_size(batch)
            grads = torch.autograd.grad(loss * size, [h for _, h in captured], allow_unused=True)
            for (name, h), g in zip(captured, grads):
                module = ctx.layers[name]
                g = torch.zeros_like(h) if g is None else g
                per_call(name, calibration.outputs_per_channel(h.detach(), module),
                         calibration.outputs_per_channel(g, module))
            captured.clear()
            seen += size
    return seen


def per_channel(name: str, ctx: Context, values: Tensor) -> Tensor:
    """Broadcast one value per output channel to the shape of the layer's weight."""
    weight = calibration.weights({name: ctx.layers[name]})[name]
    shape = tuple(weight.shape)  # on the weight's device: a layer no batch reached has a CPU zero here
    return values.to(weight.device).reshape(-1, *([1] * (len(shape) - 1))).expand(shape).clone()


def hessian_vector_products(
    ctx: Context, vectors: Callable[[dict[str, Tensor]], list[dict[str, Tensor]]]
) -> Iterator[list[tuple[dict[str, Tensor], dict[str, Tensor]]]]:
    """Per batch: ``[(v, H v), ...]`` for the vectors ``vectors(params)`` returns.

    ``H`` is the Hessian of the batch loss with respect to the layers' weights
    (double back-propagation; one backward pass per vector).
    """
    assert ctx.data is not None and ctx.loss_fn is not None
    params = calibration.weights(ctx.layers)
    names, tensors = list(params), list(params.values())
    with calibration.scoring(ctx.model, tensors):
        for loss, _ in calibration.losses(ctx.model, ctx.data, ctx.loss_fn):
            grads = torch.autograd.grad(loss, tensors, create_graph=True)
            out = []
            vs = vectors(params)
            for k, v in enumerate(vs):
                dot = sum((g * v[n]).sum() for n, g in zip(names, grads))
                hv = torch.autograd.grad(dot, tensors, retain_graph=k < len(vs) - 1, allow_unused=True)
                out.append((v, {n: (h if h is not None else torch.zeros_like(p))
                                for n, h, p in zip(names, hv, tensors)}))
            yield out
