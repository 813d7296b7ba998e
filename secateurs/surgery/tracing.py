"""Inputs to trace a model with when the caller gives none, built from shapes only (never data).

Data-free surgery (:func:`secateurs.merge_neurons`, :func:`secateurs.fold`) traces the model with
``torch.fx`` to learn which channels are coupled; tracing needs an input of the right shape, not a
real one. We build zeros: from the input shape a zoo model records, or from the ``in_features`` of
the first layer of an ``nn.Sequential`` MLP. A BERT-style encoder is read by its structure and needs
no input at all.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import PruningError
from ..graph.structural import recognised
from ..inputs import as_inputs
from ..zoo.models import ARCH_ATTR

LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def trace_inputs(model: nn.Module, example_inputs: Any, who: str) -> tuple[Any, ...]:
    """``example_inputs`` as a tuple, or zeros of the shape the model says it reads.

    Args:
        model: the model to trace.
        example_inputs: what the caller gave (``None`` for nothing).
        who: the public function, for the error message.

    Raises:
        PruningError: nothing given and the model does not say its input shape.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> trace_inputs(net, None, "merge_neurons")[0].shape
        torch.Size([1, 3])
    """
    if example_inputs is not None:
        return as_inputs(example_inputs)
    arch = getattr(model, ARCH_ATTR, None)
    if isinstance(arch, dict) and "input_shape" in arch:
        return (torch.zeros(*arch["input_shape"]),)
    if recognised(model):
        return ()
    first = next((m for m in model.modules() if isinstance(m, LAYERS)), None)
    if isinstance(model, nn.Sequential) and isinstance(first, nn.Linear):
        return (torch.zeros(1, first.in_features),)
    raise PruningError(f"{who} needs example_inputs= to trace this model "
                       "(zoo models, BERT-style encoders and nn.Sequential MLPs need none)")
