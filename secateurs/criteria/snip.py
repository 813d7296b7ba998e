"""SNIP: connection sensitivity at initialisation.

Lee, Ajanthan & Torr, "SNIP: Single-shot Network Pruning based on Connection
Sensitivity" (ICLR 2019): with a multiplicative gate ``c`` on every weight,
``∂L/∂c = w · ∂L/∂w`` at ``c = 1``; the saliency is its magnitude (the paper
normalises by the sum over the network, which does not change the ranking).
"""

from __future__ import annotations

from . import Context, register
from ._gradient import Accumulated, masked_weights, mean_over_batches


@register
class Snip(Accumulated):
    """Score ``|w ⊙ ḡ|`` with ``ḡ`` the gradient averaged over the given batches.

    Unlike ``taylor``, the gradient is averaged *before* the absolute value, as
    if all batches were one.

    Example:
        For ``w = [2, -1]`` and batch gradients ``[1, 1]`` and ``[-1, 3]``,
        ``ḡ = [0, 2]`` and the scores are ``[0, 2]``.
    """

    name = "snip"
    nonnegative = True

    def prepare(self, ctx: Context) -> None:
        w = masked_weights(ctx)
        g = mean_over_batches(ctx, lambda grads: grads)
        self.scores = {n: (w[n] * g[n]).abs() for n in g}
