"""FLOP counting with ``torch.utils.flop_counter``, per prunable layer."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .. import masking
from ..inputs import as_inputs, call_model, evaluating


def count_flops(model: nn.Module, example_inputs: Any) -> tuple[dict[str, int], int]:
    """FLOPs of one forward pass in eval mode, in total and per prunable layer.

    Returns:
        ``({qualified_param_name: flops of that layer}, total flops)``. Multiplying the
        weight by its mask is an elementwise op and is not counted.
    """
    inputs = as_inputs(example_inputs)
    per_layer: dict[str, int] = {}
    counter = FlopCounterMode(display=False)
    handles = []
    for name, module in masking.prunable_layers(model):
        key = masking.param_name(name)

        def pre(_m: nn.Module, _a: Any, key: str = key) -> None:
            per_layer[key] = per_layer.get(key, 0) - counter.get_total_flops()

        def post(_m: nn.Module, _a: Any, _o: Any, key: str = key) -> None:
            per_layer[key] += counter.get_total_flops()

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        with torch.no_grad(), evaluating(model), counter:
            call_model(model, inputs)
    finally:
        for h in handles:
            h.remove()
    return per_layer, int(counter.get_total_flops())
