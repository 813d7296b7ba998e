"""Fisher: channel importance from Fisher information.

Theis, Korshunova, Tejani & Huszár, "Faster gaze prediction with dense networks
and Fisher pruning" (2018), eq. 6: with a binary mask ``m_c`` on output channel
``c``, the loss increase from removing it is about

    Δ_c = 1/(2N) · Σ_n ( Σ_p h_ncp · ∂L_n/∂h_ncp )²

over the ``N`` examples and the ``p`` positions of the channel's output ``h``
(the layer's output, before any following norm or nonlinearity). It is the
empirical Fisher information of the mask variable. Every weight of channel
``c`` gets the score ``Δ_c``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import Context, register
from ._gradient import Accumulated, output_gradients, per_channel


@register
class Fisher(Accumulated):
    """Score ``Δ_c = Σ_n (Σ_p h·∂L_n/∂h)² / (2N)`` for each output channel, broadcast to its weights.

    Example:
        One example, a Linear layer with output ``h = [2, 1]`` and gradient
        ``[0.5, -4]``: ``Δ = [(2·0.5)²/2, (1·-4)²/2] = [0.5, 8]``.
    """

    name = "fisher"
    nonnegative = True

    def prepare(self, ctx: Context) -> None:
        acc: dict[str, Tensor] = {}

        def add(name: str, h: Tensor, g: Tensor) -> None:
            s = (h * g).sum(dim=1).pow(2).sum(dim=0)  # Σ_n (Σ_p h g)²
            acc[name] = acc[name] + s if name in acc else s

        n = output_gradients(ctx, add)
        self.scores = {name: per_channel(name, ctx, acc.get(name, torch.zeros(1)) / (2 * n))
                       for name in ctx.layers}
