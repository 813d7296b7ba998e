"""OBD: Optimal Brain Damage, ``w² · H_jj / 2``.

LeCun, Denker & Solla, "Optimal Brain Damage" (NIPS 1989): at a minimum of the
loss, removing weight ``j`` raises the loss by about ``½ H_jj w_j²``, with
``H_jj`` the diagonal of the Hessian of the loss.

Estimator: Hutchinson's, ``H_jj ≈ E_z[z_j (H z)_j]`` with Rademacher probes
``z ∈ {−1, +1}ⁿ`` and Hessian-vector products by double back-propagation
(``samples`` probes per batch, averaged over batches). It is exact when the
Hessian is diagonal and unbiased otherwise. The empirical-Fisher variant of
this idea is the ``fisher`` criterion.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import Context, register
from ._gradient import Accumulated, hessian_vector_products, masked_weights


@register
class OBD(Accumulated):
    """Score ``w² · Ĥ_jj / 2`` with ``Ĥ_jj`` Hutchinson's estimate of the Hessian diagonal.

    Args:
        seed: seeds the probes.
        samples: probes per batch.

    Example:
        A weight ``w = 3`` whose loss is ``½ · 4 · w²`` (so ``H = 4``) scores ``9 · 4 / 2 = 18``.
    """

    name = "obd"

    def __init__(self, seed: int = 0, samples: int = 4) -> None:
        super().__init__(seed)
        self.samples = samples

    def prepare(self, ctx: Context) -> None:
        gen = torch.Generator().manual_seed(self.seed)  # drawn on the CPU: the same probes on every device

        def probes(params: dict[str, Tensor]) -> list[dict[str, Tensor]]:
            return [{n: (torch.randint(0, 2, p.shape, generator=gen, device="cpu") * 2 - 1).to(p) for n, p in params.items()}
                    for _ in range(self.samples)]

        diag: dict[str, Tensor] = {}
        count = 0
        for pairs in hessian_vector_products(ctx, probes):
            for z, hz in pairs:
                for n in z:
                    d = (z[n] * hz[n]).detach()
                    diag[n] = diag[n] + d if n in diag else d
                count += 1
        w = masked_weights(ctx)
        self.scores = {n: w[n].pow(2) * diag[n] / count / 2 for n in w}
