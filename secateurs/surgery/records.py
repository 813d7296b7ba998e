"""Surgery records: what compaction, merging and gating did to a model, replayable on a fresh instance.

A record is a list of *steps*; a step maps module names to changes:

- ``{"rows": [...], "cols": [...], "norm": [...]}``: the output rows, input columns or norm
  entries kept (:func:`shrink`);
- ``{"attrs": {...}}``: attributes set with them (a Hugging Face attention's head count);
- ``{"head_params": [...]}``: the heads kept in an attention module's per-head parameters
  (:data:`~secateurs.graph.patterns.HEAD_PARAMS`, Swin's relative position biases);
- ``{"heads": [...]}``: the heads of an ``nn.MultiheadAttention`` kept (it is replaced by a
  :class:`~secateurs.modules.attention.PrunedMultiheadAttention`);
- ``{"runtime": {"keep": k, "hidden": h}}``: the conv wrapped by a runtime gate (:mod:`.gates`);
- ``{"slices": {tensor: [axis, [...]]}}``: the entries kept along ``axis`` of a module's own parameters
  with one entry per channel of the residual stream (an embedding, a class token, a layer-scale
  ``gamma``; ``sc.prune(..., hidden=True)``).

The record lives on the model as the attribute :data:`SURGERY_ATTR`, is saved in the file's
header, and :func:`replay` applies it to a fresh model before the weights are loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .. import masking
from ..errors import PruningError
from ..graph.patterns import HEAD_PARAMS, SCALED
from ..modules import norms
from ..modules.attention import PrunedMultiheadAttention
from ..progress import track
from .gates import RuntimeGate, wrap_convs

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
    for name, axis in HEAD_PARAMS.items():
        if "head_params" in change and getattr(module, name, None) is not None:
            _set(module, name, _take(getattr(module, name), axis, change["head_params"]))
    if "norm" in change:
        idx = change["norm"]
        for name in ("weight", "bias", "running_mean", "running_var"):
            _set(module, name, _take(getattr(module, name, None), 0, idx))
        if norms.width(module) is None:
            module.num_features = len(idx)
        elif isinstance(getattr(module, "normalized_shape", None), tuple):  # LayerNorm, nn.RMSNorm
            module.normalized_shape = (len(idx),)
    for name, (axis, idx) in change.get("slices", {}).items():
        _set(module, name, _take(getattr(module, name), axis, idx))
        if isinstance(module, nn.Embedding) and name == "weight":
            module.embedding_dim = len(idx)
    flip = int(masking.transposed(module))  # Conv1D stores (in, out): its rows are dim 1
    if "rows" in change:
        idx = change["rows"]
        _set(module, "weight", _take(module.weight, flip, idx))
        _set(module, "bias", _take(getattr(module, "bias", None), 0, idx))
        if flip:
            module.nf = len(idx)
        elif isinstance(module, nn.Linear):
            module.out_features = len(idx)
        else:
            if module.groups > 1 and module.groups == module.in_channels:  # depthwise: inputs are the same channels
                module.in_channels = module.groups = len(idx) // (module.out_channels // module.groups)
            module.out_channels = len(idx)
    if "cols" in change:
        idx = change["cols"]
        _set(module, "weight", _take(module.weight, 1 - flip, idx))
        if flip:
            module.nx = len(idx)
        elif isinstance(module, nn.Linear):
            module.in_features = len(idx)
        else:
            module.in_channels = len(idx) * module.groups  # a grouped conv loses the same columns in every group


ATTRS = set(SCALED)
"""The only attributes a record may set (the head counts :func:`~secateurs.surgery.compact.plan` lowers on an
attention module, :data:`secateurs.graph.patterns.SCALED`): anything else in a file (``forward``,
``__dict__``, ``out_features``) is refused."""

MAX_HIDDEN = 4096
"""The widest side network a ``runtime`` record may ask for (gates use 16 by default)."""

_KEYS = {"rows", "cols", "norm", "attrs", "heads", "head_params", "runtime", "slices"}


def _indices(value: Any, size: int, where: str) -> None:
    """``value`` must be a non-empty list of distinct ints in ``[0, size)``."""
    if (not isinstance(value, list) or not value or len(value) > size
            or not all(type(i) is int and 0 <= i < size for i in value) or len(set(value)) != len(value)):
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise PruningError(f"surgery record {where}: expected distinct indices in [0, {size}), got {shown}")


def _check_change(model: nn.Module, name: str, change: Any) -> None:
    """Raise :class:`PruningError` unless ``change`` is one module's entry as :func:`plan` / gates write it."""
    where = f"entry {name!r}"
    if not isinstance(change, dict) or not change or not set(change) <= _KEYS:
        raise PruningError(f"surgery record {where}: expected a mapping with keys among {sorted(_KEYS)}, "
                           f"got {str(change)[:60]!r}")
    try:
        module = model.get_submodule(name)
    except (AttributeError, TypeError):
        raise PruningError(f"surgery record names {name[:60]!r}, which the model does not have") from None
    weight = getattr(module, "weight", None)
    layer = isinstance(module, masking.PRUNABLE_TYPES) or masking.transposed(module)
    for kind, dim in (("rows", 0), ("cols", 1)):
        if kind in change:
            if not layer:
                raise PruningError(f"surgery record {where}: {kind} applies to a Linear, conv or Conv1D layer, "
                                   f"not {type(module).__name__}")
            _indices(change[kind], masking.as_rows(module, weight).shape[dim], f"{where} {kind}")
    if "norm" in change:
        size = norms.width(module) or getattr(module, "num_features", None)
        if not isinstance(size, int):
            raise PruningError(f"surgery record {where}: norm applies to a norm layer, not {type(module).__name__}")
        _indices(change["norm"], size, f"{where} norm")
    if "slices" in change:
        _check_slices(module, change["slices"], where)
    attrs = change.get("attrs", {})
    if not isinstance(attrs, dict) or not set(attrs) <= ATTRS or not all(
            hasattr(module, a) and type(v) is int and 0 < v <= getattr(module, a) for a, v in attrs.items()):
        raise PruningError(f"surgery record {where}: attrs may only lower {sorted(ATTRS)} on a module that has "
                           f"them, got {str(attrs)[:60]!r}")
    if "head_params" in change:
        sizes = {getattr(module, p).shape[axis] for p, axis in HEAD_PARAMS.items() if hasattr(module, p)}
        if len(sizes) != 1:
            raise PruningError(f"surgery record {where}: head_params apply to a module with one of "
                               f"{sorted(HEAD_PARAMS)}, not {type(module).__name__}")
        _indices(change["head_params"], sizes.pop(), f"{where} head_params")
    if "heads" in change:
        if not isinstance(module, (nn.MultiheadAttention, PrunedMultiheadAttention)):
            raise PruningError(f"surgery record {where}: heads apply to attention, not {type(module).__name__}")
        _indices(change["heads"], module.num_heads, f"{where} heads")
    if "runtime" in change:
        _check_runtime(module, change["runtime"], where)


def _check_slices(module: nn.Module, value: Any, where: str) -> None:
    """``{tensor name: [axis, indices]}`` over the module's own parameters."""
    if not isinstance(value, dict) or not value:
        raise PruningError(f"surgery record {where}: slices must map parameter names to [axis, indices], "
                           f"got {str(value)[:60]!r}")
    own = masking.tensor_names(module)
    for name, entry in value.items():
        if name not in own or not isinstance(entry, list) or len(entry) != 2 or type(entry[0]) is not int:
            raise PruningError(f"surgery record {where}: slices entry {str(name)[:40]!r} must name a parameter of "
                               f"{type(module).__name__} ({', '.join(own)}) with [axis, indices]")
        shape = masking.original(module, name).shape
        if not 0 <= entry[0] < len(shape):
            raise PruningError(f"surgery record {where}: slices axis {entry[0]} of {name} outside [0, {len(shape)})")
        _indices(entry[1], shape[entry[0]], f"{where} slices {name}")


def _check_runtime(module: nn.Module, value: Any, where: str) -> None:
    ok = (isinstance(value, dict) and set(value) == {"keep", "hidden"} and type(value["hidden"]) is int
          and 1 <= value["hidden"] <= MAX_HIDDEN and type(value["keep"]) in (int, float) and 0 < value["keep"] <= 1)
    if not ok:
        raise PruningError(f"surgery record {where}: runtime must be {{keep: (0, 1], hidden: 1..{MAX_HIDDEN}}}, "
                           f"got {str(value)[:60]!r}")
    if not isinstance(module, nn.Conv2d) or isinstance(module, RuntimeGate):
        raise PruningError(f"surgery record {where}: runtime gates wrap a Conv2d, not {type(module).__name__}")


def check(model: nn.Module, step: Any) -> None:
    """Raise :class:`PruningError` unless ``step`` is a record step that fits ``model`` as it is now."""
    if not isinstance(step, dict) or not all(isinstance(k, str) for k in step):
        raise PruningError(f"surgery record: a step is a mapping of module names, got {str(step)[:60]!r}")
    for name, change in step.items():
        _check_change(model, name, change)


def apply(model: nn.Module, step: dict[str, dict[str, Any]]) -> None:
    """Apply one plan to ``model`` in place: replace attention modules, wrap gated convs, shrink the rest.

    Raises:
        PruningError: a step that does not fit ``model`` (checked before anything changes).
    """
    check(model, step)
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
    """Apply recorded surgery ``steps`` to ``model`` (a fresh instance of the architecture), in place.

    Raises:
        PruningError: ``steps`` that are not a list of steps fitting the model; a step found wrong
            after an earlier one was applied leaves the model part-way (replay on a skeleton first:
            :func:`secateurs.load` does).
    """
    if not isinstance(steps, list):
        raise PruningError(f"surgery record: expected a list of steps, got {str(steps)[:60]!r}")
    for step in steps:
        apply(model, step)
        record(model, step)
    return model
