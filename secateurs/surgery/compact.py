"""``sc.compact``: physically remove dead channels, giving a smaller dense model.

A coupled channel (one union–find root of :mod:`.graph`) is *dead* when every
row that produces it is zero, its biases are zero and every BatchNorm entry on
it has zero weight and bias: it then contributes exactly nothing downstream,
and removing it, with the input columns that read it, leaves the outputs
unchanged. ``sc.prune(..., granularity="channel", example_inputs=...)`` prunes
in exactly that form. Each module keeps at least one output row.

The change is recorded on the new model as ``secateurs_surgery``: per module,
the rows, columns and norm entries kept. :func:`.records.replay` applies such a record
to a fresh instance of the original architecture, which is how :func:`secateurs.load`
rebuilds a compacted model from its file.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .. import masking
from ..graph import NORMS, ChannelGraph, analyse
from ..graph.patterns import HEAD_PARAMS, SCALED
from ..inputs import as_inputs, call_model, check_same, evaluating, first_tensor
from ..modules import norms
from ..modules.attention import row_tensors
from .records import apply, record

TOLERANCE = 1e-4


def _zero_rows(module: nn.Module) -> Tensor:
    weight_name, bias_name = row_tensors(module)
    w = masking.as_rows(module, getattr(module, weight_name).detach(), weight_name)
    dead = ~w.reshape(w.shape[0], -1).any(dim=1)
    bias = getattr(module, bias_name, None)
    if bias is not None:
        dead &= bias.detach() == 0
    return dead


def _zero_norm(module: nn.Module) -> Tensor:
    """Channels whose norm output is exactly 0 for a zero input: weight and bias both 0.

    Without affine parameters a norm maps 0 to ``-mean/std``, so no channel is dead. A LayerNorm / RMSNorm
    over the residual stream (``hidden=True``) outputs 0 where its weight (and bias, when it has one) is 0.
    """
    if norms.width(module) is not None:
        return ~norms.live(module)
    parts = [t.detach() == 0 for t in (getattr(module, "weight", None), getattr(module, "bias", None))
             if t is not None]
    if len(parts) < 2:
        return torch.zeros(module.num_features, dtype=torch.bool, device="cpu")
    return parts[0] & parts[1]


def _tensor(model: nn.Module, name: str) -> Tensor:
    """The tensor ``name`` (``a.b.weight``) as the module computes with it (masked)."""
    module_name, _, tensor_name = name.rpartition(".")
    return getattr(model.get_submodule(module_name), tensor_name)


def dead_roots(model: nn.Module, g: ChannelGraph) -> set[int]:
    """Roots whose every producing row and norm entry is zero (and not frozen)."""
    alive: set[int] = set()
    seen: set[int] = set()
    for name, atoms in g.rows.items():
        dead = _zero_rows(model.get_submodule(name))
        for a, d in zip(atoms, dead.tolist()):
            r = g.atoms.find(a)
            seen.add(r)
            if not d or g.atoms.is_frozen(a):
                alive.add(r)
    for name, atoms in g.norms.items():
        for a, d in zip(atoms, _zero_norm(model.get_submodule(name)).tolist()):
            if not d:
                alive.add(g.atoms.find(a))
    for name, (axis, atoms, masked) in g.params.items():  # an embedding or a token added to the channel
        if masked:
            value = _tensor(model, name)
            live = value.detach().movedim(axis, 0).reshape(len(atoms), -1).any(dim=1)
            alive.update(g.atoms.find(a) for a, x in zip(atoms, live.tolist()) if x)
    dead = seen - alive
    for atoms in g.rows.values():  # every module keeps one row at least
        roots = [g.atoms.find(a) for a in atoms]
        if roots and all(r in dead for r in roots):
            dead.discard(roots[0])
    return dead


def plan(model: nn.Module, g: ChannelGraph) -> dict[str, dict[str, Any]]:
    """``{module: {"rows"|"cols"|"norm": kept indices, "attrs": {...}}}`` for every module that shrinks."""
    dead = dead_roots(model, g)
    out: dict[str, dict[str, Any]] = {}
    replaced = g.attention | {f"{n}.out_proj" for n in g.attention}
    for name in g.attention:  # heads go by replacing the module (nn.MultiheadAttention cannot shrink)
        atoms = g.rows[name][: len(g.rows[name]) // 3]
        size = model.get_submodule(name).head_dim
        heads = [h // size for h in range(0, len(atoms), size) if g.atoms.find(atoms[h]) not in dead]
        if len(heads) < len(atoms) // size:
            out[name] = {"heads": heads}
    for kind, table in (("rows", g.rows), ("cols", g.cols), ("norm", g.norms)):
        for name, atoms in table.items():
            if name in replaced and not (kind == "rows" and name.endswith(".out_proj")):
                continue
            keep = [i for i, a in enumerate(atoms) if g.atoms.find(a) not in dead]
            if len(keep) < len(atoms):
                out.setdefault(name, {})[kind] = keep
    for name, (axis, atoms, _) in g.params.items():  # per-channel parameters: embeddings, tokens, layer scales
        keep = [i for i, a in enumerate(atoms) if g.atoms.find(a) not in dead]
        if len(keep) < len(atoms):
            module_name, _, tensor_name = name.rpartition(".")
            out.setdefault(module_name, {}).setdefault("slices", {})[tensor_name] = [axis, keep]
    for name, (atoms, size) in g.heads.items():  # head counts the module reads in forward
        kept = sum(g.atoms.find(a) not in dead for a in atoms)
        if kept < len(atoms):
            holder = model.get_submodule(name)
            attrs = {a: getattr(holder, a) * kept // len(atoms) for a in SCALED
                     if isinstance(getattr(holder, a, None), int) and not isinstance(getattr(holder, a), bool)}
            out.setdefault(name, {})["attrs"] = attrs
            if any(hasattr(holder, p) for p in HEAD_PARAMS):  # one slice per head (Swin's position biases)
                heads = [h // size for h in range(0, len(atoms), size) if g.atoms.find(atoms[h]) not in dead]
                out[name]["head_params"] = heads
    return out


def compact(model: nn.Module, example_inputs: Any, leaf_modules: Sequence[str] = ()) -> nn.Module:
    """A new, smaller, dense model whose outputs equal the masked model's.

    Args:
        model: a model pruned with ``granularity="channel"`` (or neuron / filter) and
            ``example_inputs=``, so that whole coupled channels are zero.
        example_inputs: a tuple of inputs (or one tensor) to trace the model with.
        leaf_modules: names of modules torch.fx should not trace into (their channels are kept).

    Returns:
        A new module (``model`` is unchanged) with plain parameters, the dead channels
        gone, and the change recorded for :func:`secateurs.save` / :func:`secateurs.load`.

    Raises:
        PruningError: the model cannot be traced (the message names the module).
        RuntimeError: the compacted outputs differ from the masked model's (a bug: please report it).
    """
    inputs = as_inputs(example_inputs)
    g = analyse(model, inputs, leaf_modules, hidden=bool(norms.hooked(model)))  # the residual stream pruned
    step = plan(model, g)
    new = masking.finalize(copy.deepcopy(model))
    tied = masking.tied(new)
    apply(new, step)
    _tie_again(tied)
    record(new, step)
    for name, change in step.items():  # narrowed, a norm computes over its kept channels itself
        if "norm" in change:
            norms.drop_statistics(new.get_submodule(name))
    with torch.no_grad(), evaluating(model, new):
        reference, out = first_tensor(call_model(model, inputs)), first_tensor(call_model(new, inputs))
        check_same(stream_outputs(reference, out, step, g), out, "compact", rtol=TOLERANCE)
    return new


def _tie_again(groups: list[list[tuple[nn.Module, str]]]) -> None:
    """Tensors tied before compaction (a language-model head and its token embedding), each sliced alike
    (``hidden=True`` cuts both along the residual stream), are one parameter again."""
    for (first, name), *rest in groups:
        shared = getattr(first, name)
        for module, other in rest:
            if isinstance(shared, nn.Parameter) and getattr(module, other).shape == shared.shape:
                setattr(module, other, shared)


def stream_outputs(reference: Any, out: Any, step: dict[str, dict[str, Any]], g: ChannelGraph) -> Any:
    """The masked model's outputs as the compacted model gives them: a model that returns its residual
    stream (a Hugging Face base model's hidden states, pruned with ``hidden=True``) returns its kept
    channels only, so the reference keeps those (the entries a narrowed norm over the stream kept)."""
    if not isinstance(reference, Tensor) or not isinstance(out, Tensor) or reference.shape == out.shape:
        return reference
    for name in g.stats:
        kept = step.get(name, {}).get("norm")
        if kept is not None and reference.shape[-1] == len(g.norms[name]) and out.shape[-1] == len(kept):
            return reference.index_select(-1, torch.tensor(kept, dtype=torch.long, device=reference.device))
    return reference


__all__ = ["NORMS", "compact", "dead_roots", "plan"]
