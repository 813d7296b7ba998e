"""OBS: Optimal Brain Surgeon, layer by layer, as in SparseGPT.

Hassibi & Stork, "Second order derivatives for network pruning: Optimal Brain
Surgeon" (NIPS 1993); layer-wise form from Frantar & Alistarh, "SparseGPT:
Massive Language Models Can Be Accurately Pruned in One-Shot" (ICML 2023).

For a layer ``y = W x`` the reconstruction error ``‖W X − Ŵ X‖²`` has Hessian
``H = 2 X Xᵀ`` (``X``: the calibration inputs, one column per token; we average
over tokens and add the dampening ``λ = 0.01 · mean(diag H)``). Removing
``w_ij`` alone and correcting the rest of row ``i`` optimally costs

    ε_ij = w_ij² / (2 · [H⁻¹]_jj)

which is the score. Once the mask is chosen, :meth:`OBS.update` applies the OBS
correction of the surviving weights of each row, column by column from left to
right with the Cholesky factor of ``H⁻¹`` (SparseGPT's algorithm, blocks of 128
columns, with the mask fixed in advance). Pruning with ``obs`` therefore changes
the kept weights, which is the point: the layer's outputs on the calibration
data move as little as possible.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import masking
from ..errors import PruningError
from . import Context, Criterion, register
from ._inputs import accumulate, as_matrix, as_stored, collect, patches

BLOCK = 128
DAMP = 0.01


@register
class OBS(Criterion):
    """Score ``w_ij² / (2 [H⁻¹]_jj)`` with ``H = 2 X Xᵀ / N``; then correct the kept weights.

    Example:
        ``H = diag(2, 8)`` (before dampening) gives ``[H⁻¹]_jj = (0.5, 0.125)``, so a
        row ``[1, 1]`` scores ``[1, 4]``: the second input carries more signal.
    """

    name = "obs"
    needs_data = True
    nonnegative = True

    def prepare(self, ctx: Context) -> None:
        sums: dict[str, Tensor] = {}
        rows: dict[str, int] = {}
        self.flipped: dict[str, bool] = {}

        def add(name: str, module: nn.Module, x: Tensor) -> None:
            self.flipped[name] = masking.transposed(module)
            p = patches(x, module).float()
            accumulate(sums, name, 2 * p.T @ p)
            rows[name] = rows.get(name, 0) + p.shape[0]

        collect(ctx, add)
        with torch.no_grad():  # the weights as pruned so far: the correction starts from them
            self.before = {n: m.weight.detach().clone() for n, m in ctx.layers.items() if n in sums}
        self.hessians = {n: damped(sums[n] / rows[n], n) for n in sums}
        self.inverses = {n: torch.cholesky_inverse(torch.linalg.cholesky(h)) for n, h in self.hessians.items()}

    def score(self, name: str, weight: Tensor) -> Tensor:
        if name not in self.inverses:
            return torch.zeros_like(weight)
        flipped = self.flipped[name]
        return as_stored(obs_scores(as_matrix(weight, flipped), self.inverses[name]), weight.shape, flipped)

    def update(self, name: str, module: nn.Module, keep: Tensor) -> None:
        if name not in self.inverses:
            return
        u = torch.linalg.cholesky(self.inverses[name], upper=True)
        w = masking.original(module)
        with torch.no_grad():  # from the masked weight: entries pruned earlier are already gone
            flipped = self.flipped[name]
            new = surgeon(as_matrix(self.before[name], flipped).float(), as_matrix(keep, flipped), u.to(w.device))
            w.copy_(as_stored(new, w.shape, flipped).to(w.dtype))


def obs_scores(weight: Tensor, inverse: Tensor) -> Tensor:
    """``w_ij² / (2 [H⁻¹]_jj)`` for a weight matrix (out × in) and the inverse input Hessian (in × in)."""
    d = torch.diagonal(inverse).to(weight)
    return weight.pow(2) / (2 * d)


def damped(h: Tensor, name: str) -> Tensor:
    """``H + λI``; inputs that never fire get ``H_jj = 1`` so ``H`` stays invertible."""
    h = h.clone()
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    damp = DAMP * torch.diagonal(h).mean()
    for _ in range(6):
        candidate = h + damp * torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
        if torch.linalg.cholesky_ex(candidate).info == 0:
            return candidate
        damp *= 10
    raise PruningError(f"obs: the input Hessian of {name} is not positive definite even with dampening")


def surgeon(w: Tensor, keep: Tensor, u: Tensor) -> Tensor:
    """SparseGPT's sequential OBS update of ``w`` (out × d) for a fixed mask ``keep``.

    Args:
        w: the weights, one row per output.
        keep: bool mask of ``w``'s shape.
        u: upper Cholesky factor of ``H⁻¹`` (d × d).

    Returns:
        The corrected weights, exactly zero where ``keep`` is False.
    """
    w = w.clone()
    d = w.shape[1]
    for i1 in range(0, d, BLOCK):
        i2 = min(i1 + BLOCK, d)
        w1, u1 = w[:, i1:i2].clone(), u[i1:i2, i1:i2]
        err = torch.zeros_like(w1)
        for i in range(i2 - i1):
            col = w1[:, i]
            e = (col - col * keep[:, i1 + i]) / u1[i, i]
            w1[:, i:] -= e.unsqueeze(1) * u1[i, i:].unsqueeze(0)
            err[:, i] = e
        w[:, i1:i2] = w1
        w[:, i2:] -= err @ u[i1:i2, i2:]
    return w * keep
