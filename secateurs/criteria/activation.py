"""Activation: first-order Taylor saliency of a channel's output.

Molchanov, Tyree, Karras, Aila & Kautz, "Pruning Convolutional Neural Networks
for Resource Efficient Inference" (ICLR 2017): removing output channel ``c``
(setting its activation ``h`` to zero) changes the loss by about
``-mean(∂L/∂h · h)``, so the saliency is

    Θ_c = | mean_{n,p} ( ∂L_n/∂h_ncp · h_ncp ) |

over examples ``n`` and positions ``p`` of the layer's output (before any
following norm or nonlinearity). Every weight of channel ``c`` gets ``Θ_c``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import Context, register
from ._gradient import Accumulated, output_gradients, per_channel


@register
class Activation(Accumulated):
    """Score ``|mean(∂L/∂h · h)|`` per output channel, broadcast to its weights.

    Example:
        Outputs ``h = [[2, 1], [4, 1]]`` (two examples) with gradients
        ``[[1, 1], [-1, 1]]``: channel 0 gets ``|(2 - 4)/2| = 1``, channel 1 gets 1.
    """

    name = "activation"
    nonnegative = True

    def prepare(self, ctx: Context) -> None:
        sums: dict[str, Tensor] = {}
        counts: dict[str, int] = {}

        def add(name: str, h: Tensor, g: Tensor) -> None:
            s = (h * g).sum(dim=(0, 1))
            sums[name] = sums[name] + s if name in sums else s
            counts[name] = counts.get(name, 0) + h.shape[0] * h.shape[1]

        output_gradients(ctx, add)
        self.scores = {name: per_channel(name, ctx, (sums.get(name, torch.zeros(1)) / max(counts.get(name, 1), 1)).abs())
                       for name in ctx.layers}
