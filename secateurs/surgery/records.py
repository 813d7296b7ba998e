"""Surgery records: what compaction, merging and gating did to a model, replayable on a fresh instance.

A record is a list of *steps*; a step maps module names to changes:

- ``{"rows": [...], "cols": [...], "norm": [...]}``: the output rows, input columns or norm
  entries kept (:func:`shrink`);
- ``{"attrs": {...}}``: attributes set with them (a Hugging Face attention's head count);
- ``{"heads": [...]}``: the heads of an ``nn.MultiheadAttention`` kept (it is replaced by a
  :class:`~secateurs.modules.attention.PrunedMultiheadAttention`);
- ``{"runtime": {"keep": k, "hidden": h}}``: the conv wrapped by a runtime gate (:mod:`.gates`).

The record lives on the model as the attribute :data:`SURGERY_ATTR`, is saved in the file's
header, and :func:`replay` applies it to a fresh model before the weights are loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..modules.attention import PrunedMultiheadAttention
from ..progress import track
from .gates import wrap_convs

SURGERY_ATTR = "secateurs_surgery"
"""The model attribute that holds its surgery record (a list of steps)."""

Step = dict[str, dict[str, Any]]


def record(model: nn.Module, step: Step) -> None:
    """Append ``step`` to ``model``'s record."""
    setattr(model, SURGERY_ATTR, [*getattr(model, SURGERY_ATTR, []), step])


def _take(t: Tensor | None, dim: int, idx: list[int]) -> Tensor | None:
    return None if t is None else t.detach().index_select(dim, torch.tensor(idx, dtype=torch.long, device=t.device))


def _set(module: nn.Module, name: str, value: Tensor | None) -> None:
    if value is None:
        return
    old = getattr(module, name)
    if isinstance(old, nn.Parameter):
        setattr(module, name, nn.Parameter(value.clone(), requires_grad=old.requires_grad))
    else:
        setattr(module, name, value.clone())


def shrink(module: nn.Module, change: dict[str, Any]) -> None:
    """Apply one module's entry of a plan (rows, cols, norm, attrs) in place."""
    for attr, value in change.get("attrs", {}).items():
        setattr(module, attr, value)
    if "norm" in change:
        idx = change["norm"]
        for name in ("weight", "bias", "running_mean", "running_var"):
            _set(module, name, _take(getattr(module, name, None), 0, idx))
        module.num_features = len(idx)
    if "rows" in change:
        idx = change["rows"]
        _set(module, "weight", _take(module.weight, 0, idx))
        _set(module, "bias", _take(getattr(module, "bias", None), 0, idx))
        if isinstance(module, nn.Linear):
            module.out_features = len(idx)
        else:
            if module.groups > 1 and module.groups == module.in_channels:  # depthwise: inputs are the same channels
                module.in_channels = module.groups = len(idx) // (module.out_channels // module.groups)
            module.out_channels = len(idx)
    if "cols" in change:
        idx = change["cols"]
        _set(module, "weight", _take(module.weight, 1, idx))
        if isinstance(module, nn.Linear):
            module.in_features = len(idx)
        else:
            module.in_channels = len(idx) * module.groups  # a grouped conv loses the same columns in every group


def apply(model: nn.Module, step: dict[str, dict[str, Any]]) -> None:
    """Apply one plan to ``model`` in place: replace attention modules, wrap gated convs, shrink the rest."""
    for name, change in step.items():
        if "runtime" in change:  # input-dependent channel gating (schedule: runtime)
            wrap_convs(model, change["runtime"]["keep"], layers=[name], hidden=change["runtime"]["hidden"])
        if "heads" in change:
            parent, _, child = name.rpartition(".")
            old = model.get_submodule(name)
            setattr(model.get_submodule(parent) if parent else model, child,
                    PrunedMultiheadAttention.from_mha(old, change["heads"]).train(old.training))
    # A bar only for big models: a few dozen modules shrink in milliseconds.
    for name, change in track(step.items(), "compact", unit="module", enabled=len(step) >= 64):
        if "heads" not in change and "runtime" not in change:
            shrink(model.get_submodule(name), change)


def replay(model: nn.Module, steps: Sequence[dict[str, dict[str, Any]]]) -> nn.Module:
    """Apply recorded surgery ``steps`` to ``model`` (a fresh instance of the architecture), in place."""
    for step in steps:
        apply(model, step)
        record(model, step)
    return model
