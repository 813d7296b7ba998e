"""Taylor: first-order saliency ``|w · ∂L/∂w|``, accumulated over batches.

Molchanov et al., "Importance Estimation for Neural Network Pruning" (CVPR 2019),
and Mozer & Smolensky (1989): removing ``w`` changes the loss by about
``-w · ∂L/∂w``.
"""

from __future__ import annotations

from . import Context, register
from ._gradient import Accumulated, masked_weights, mean_over_batches


@register
class Taylor(Accumulated):
    """Score ``(1/B) Σ_b |w ⊙ ∂L_b/∂w|`` over the ``B`` given batches.

    Example:
        For ``w = [2, -1]`` and one batch with gradient ``[0.5, 3]`` the scores
        are ``[|2·0.5|, |-1·3|] = [1, 3]``.
    """

    name = "taylor"
    nonnegative = True

    def prepare(self, ctx: Context) -> None:
        w = masked_weights(ctx)
        self.scores = mean_over_batches(ctx, lambda g: {n: (w[n] * g[n]).abs() for n in g})
