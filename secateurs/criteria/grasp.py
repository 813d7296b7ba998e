"""GraSP: gradient signal preservation at initialisation.

Wang, Zhang & Grosse, "Picking Winning Tickets Before Training by Preserving
Gradient Flow" (ICLR 2020): the paper scores ``S(−w) = −w ⊙ H g`` with ``g`` the
gradient and ``H`` the Hessian, and removes the weights with the *largest*
``S``, whose removal reduces the gradient norm least. With our convention
(higher = keep) the score is ``w ⊙ H g``. The paper's logit temperature is not
applied.
"""

from __future__ import annotations

from torch import Tensor

from . import Context, register
from ._gradient import Accumulated, hessian_vector_products, masked_weights, mean_over_batches


@register
class GraSP(Accumulated):
    """Score ``w ⊙ (H g)`` with ``g`` the mean gradient over the batches, ``H g`` averaged over them.

    Example:
        For a loss ``½ a w²`` of one weight, ``g = a w``, ``H g = a² w`` and the score is ``a² w²``.
    """

    name = "grasp"

    def prepare(self, ctx: Context) -> None:
        g = mean_over_batches(ctx, lambda grads: grads)
        hg: dict[str, Tensor] = {}
        count = 0
        for pairs in hessian_vector_products(ctx, lambda _params: [g]):
            for _, h in pairs:
                for n, v in h.items():
                    hg[n] = hg[n] + v.detach() if n in hg else v.detach()
            count += 1
        w = masked_weights(ctx)
        self.scores = {n: w[n] * hg[n] / count for n in w}
