"""Magnitude: ``|w|``, the classic criterion (Han et al., 2015, "Learning both
Weights and Connections for Efficient Neural Networks")."""

from __future__ import annotations

from torch import Tensor

from . import Criterion, register


@register
class Magnitude(Criterion):
    """Score ``|w|``: small weights matter least.

    Example:
        >>> import torch
        >>> Magnitude().score("w", torch.tensor([[-3.0, 1.0], [0.5, -2.0]]))
        tensor([[3.0000, 1.0000],
                [0.5000, 2.0000]])
    """

    name = "magnitude"
    nonnegative = True
    elementwise = True

    def score(self, name: str, weight: Tensor) -> Tensor:
        return weight.detach().abs()
