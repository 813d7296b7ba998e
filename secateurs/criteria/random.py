"""Random: uniform scores, the baseline every criterion must beat."""

from __future__ import annotations

import zlib

import torch
from torch import Tensor

from . import Criterion, register


@register
class Random(Criterion):
    """Score each weight with an independent ``U(0, 1)`` draw.

    The draw for a weight depends only on ``seed`` and the weight's qualified
    name, so results are reproducible and do not depend on the order in which
    layers are scored.

    Example:
        >>> import torch
        >>> a = Random(seed=1).score("fc.weight", torch.zeros(2, 4))
        >>> bool((a == Random(seed=1).score("fc.weight", torch.zeros(2, 4))).all())
        True
    """

    name = "random"
    nonnegative = True

    def score(self, name: str, weight: Tensor) -> Tensor:
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + zlib.crc32(name.encode())) % 2**63)
        return torch.rand(weight.shape, generator=gen, device="cpu").to(weight.device)  # same on every device
