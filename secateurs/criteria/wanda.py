"""Wanda: pruning by weights and activations.

Sun, Liu, Bair & Kolter, "A Simple and Effective Pruning Approach for Large
Language Models" (ICLR 2024): the score of ``W_ij`` is ``|W_ij| · ‖X_j‖₂``,
where ``X_j`` collects input feature ``j`` over every calibration token, and
weights are compared within each output row (under local scope each row loses
the same fraction; under global scope one threshold is used over all layers).

We use the root-mean-square of ``X_j`` (``‖X_j‖₂ / √N``), which orders every
row the same way and makes layers that see different numbers of tokens
comparable under global scope. For a Conv2d the features are the unfolded
patches (input channel × kernel position).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import Context, Criterion, register
from .. import masking
from ._inputs import accumulate, as_matrix, as_stored, collect, patches


@register
class Wanda(Criterion):
    """Score ``|W_ij| · rms(X_j)`` from calibration inputs; compared within output rows.

    Example:
        ``W = [[1, -2]]`` and inputs ``X = [[3, 0], [4, 1]]`` (two tokens): the
        feature RMS are ``[√12.5, √0.5]`` and the scores ``[3.54, 1.41]``.
    """

    name = "wanda"
    needs_data = True
    nonnegative = True
    compare_rows = True

    def prepare(self, ctx: Context) -> None:
        squares: dict[str, Tensor] = {}
        rows: dict[str, int] = {}
        self.flipped: dict[str, bool] = {}

        def add(name: str, module: nn.Module, x: Tensor) -> None:
            self.flipped[name] = masking.transposed(module)
            p = patches(x, module).float()
            accumulate(squares, name, p.pow(2).sum(dim=0))
            rows[name] = rows.get(name, 0) + p.shape[0]

        collect(ctx, add)
        self.norms = {n: (squares[n] / rows[n]).sqrt() for n in squares}

    def score(self, name: str, weight: Tensor) -> Tensor:
        norm = self.norms.get(name)
        if norm is None:  # the layer never ran on the calibration data
            return torch.zeros_like(weight)
        flipped = self.flipped.get(name, False)
        return as_stored(wanda_scores(as_matrix(weight, flipped), norm), weight.shape, flipped)


def wanda_scores(weight: Tensor, norm: Tensor) -> Tensor:
    """``|W_ij| · norm_j`` for a weight matrix (out × in) and the inputs' per-feature RMS ``norm``.

    Example:
        >>> wanda_scores(torch.tensor([[1.0, -2.0]]), torch.tensor([3.0, 0.5]))
        tensor([[3., 1.]])
    """
    return weight.abs() * norm.to(weight)
