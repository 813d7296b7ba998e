"""Channel dependency analysis: which channels of which layers must be removed together.

:func:`analyse` traces the model with ``torch.fx`` (:mod:`.fx`), or, for transformers whose attention blocks
:mod:`.patterns` recognises (Hugging Face, timm, torch's Transformer layers), reads their module
structure (:mod:`.structural`). Both give a :class:`ChannelGraph` (:mod:`.channels`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from .channels import NORMS, Atoms, ChannelGraph, Labels
from .fx import trace, traced_graph
from .structural import recognised, structural_graph

__all__ = ["NORMS", "Atoms", "ChannelGraph", "Labels", "analyse", "trace"]


def analyse(model: nn.Module, example_inputs: tuple[Any, ...], leaves: Sequence[str] = (),
            hidden: bool = False) -> ChannelGraph:
    """The channel graph of ``model``: by structure for recognised transformers (:mod:`.patterns`), else traced.

    With ``hidden`` the residual stream (the channels norms over channels read) is followed too, and
    its writers, readers, norms and per-channel parameters become one coupled group.

    Raises:
        PruningError: torch.fx cannot trace the model (the message names the module and ``leaf_modules=``).
    """
    if recognised(model):
        return structural_graph(model, hidden)
    return traced_graph(model, example_inputs, leaves, hidden)
