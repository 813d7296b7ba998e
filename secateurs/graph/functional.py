"""Functions and tensor methods in a ``torch.fx`` graph that move channels without freezing them.

:mod:`.fx` labels every channel with an atom and freezes the atoms an unknown op touches. The ops
here are known: shape queries and asserts carry no data; functional norms keep each channel (or
say why not); views, permutes, slices, chunks and per-channel elementwise ops move the labels.
Ops that do not keep zero at zero (``sigmoid``, ``x + 1``) pass labels on marked
:data:`NONZERO`: a product with a zero channel (a squeeze-excitation gate), or a norm whose
entry is zeroed, makes them zero again; a layer reading them keeps them (``sc.compact`` relies
on a removed channel being zero). :func:`function` returns :data:`UNKNOWN` for anything else.
Parameters and what is computed from them alone are :data:`CONST` (:func:`with_constant` says what
a product or sum with one does); ``F.linear`` / ``F.conv*`` on a layer's own weight is that layer
(:func:`owning_layer`).
"""

from __future__ import annotations

import math
import operator
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .channels import NORMS, ChannelGraph, Labels
from .nodes import arg, flatten_args, labels_of, op_name, shape_of
from .stream import norm_labels, scaled, weight_owner

UNKNOWN = object()
"""Returned by :func:`function` for an op it does not know (the caller freezes its inputs)."""

QUERY_FUNCTIONS = {torch._assert, getattr(torch, "_assert_async", torch._assert), len, torch.numel, torch.is_tensor,
                   operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge, operator.not_}
QUERY_METHODS = {"size", "dim", "ndimension", "numel", "nelement", "get_device", "is_contiguous",
                 "is_floating_point"}
NONZERO = "nonzero"
"""An op name in :attr:`Labels.ops`: a removed channel may not be zero here (``sigmoid(0) = 0.5``)."""
ELEMENTWISE_FUNCTIONS = {F.silu: True, F.relu6: True, F.hardswish: True, F.gelu: True, F.elu: True, F.celu: True,
                         torch.abs: True, torch.sqrt: True, torch.square: True, torch.erf: True,
                         torch.sigmoid: False, F.sigmoid: False, F.hardsigmoid: False, torch.exp: False,
                         F.softplus: False, torch.clamp: False, torch.rsqrt: False}
"""Per-channel elementwise functions: ``{function: keeps zero at zero}``."""
ELEMENTWISE_METHODS = {"float": True, "half": True, "to": True, "type_as": True, "abs": True, "sqrt": True,
                       "square": True, "sigmoid": False, "sigmoid_": False, "exp": False, "clamp": False,
                       "clamp_": False, "clamp_min": False, "clamp_max": False, "rsqrt": False}
SCALAR_OPS = {operator.mul: True, operator.imul: True, torch.mul: True, "mul": True, "mul_": True,
              operator.truediv: True, operator.itruediv: True, torch.div: True, "div": True, "div_": True,
              operator.floordiv: True, operator.add: False, operator.iadd: False, torch.add: False, "add": False,
              "add_": False, operator.sub: False, operator.isub: False, torch.sub: False, "sub": False,
              "sub_": False, operator.pow: False, torch.pow: False, "pow": False}
"""Arithmetic with a Python number: ``{op: keeps zero at zero}``."""
NORM_FUNCTIONS = {F.batch_norm, torch.batch_norm}
CONST = "const"
"""A node's label when it is computed from parameters, buffers and numbers only (a layer-scale ``gamma``)."""
LAYER_FUNCTIONS: dict[Any, type[nn.Module]] = {F.linear: nn.Linear, F.conv1d: nn.Conv1d, F.conv2d: nn.Conv2d,
                                               F.conv3d: nn.Conv3d}
PARAMETRIZED = ".parametrizations.weight"


def constant(node: fx.Node, env: dict[fx.Node, Any]) -> bool:
    """Whether ``node`` reads parameters / buffers (and numbers) only: no channel of the model's input."""
    nodes = [a for a in flatten_args((node.args, node.kwargs)) if isinstance(a, fx.Node)]
    return any(env.get(a) is CONST for a in nodes) and all(
        env.get(a) is CONST or (env.get(a) is None and shape_of(a) is None) for a in nodes)


def owning_layer(node: fx.Node, model: nn.Module) -> str | None:
    """The Linear / conv whose own weight and bias a functional ``F.linear`` / ``F.conv*`` call uses.

    timm's ``Linear`` (a subclass of ``nn.Linear``) is traced into, giving ``F.linear(x, fc.weight, fc.bias)``:
    that call is the layer ``fc`` (once masked, its weight is read through ``fc.parametrizations.weight``).
    """
    if node.op != "call_function" or node.target not in LAYER_FUNCTIONS:
        return None
    w, b = arg(node, 1, "weight"), arg(node, 2, "bias")
    if not isinstance(w, fx.Node) or w.op not in ("get_attr", "call_module"):
        return None
    target = str(w.target)
    if w.op == "get_attr" and target.endswith(".weight"):
        owner = target[: -len(".weight")]
    elif w.op == "call_module" and target.endswith(PARAMETRIZED):
        owner = target[: -len(PARAMETRIZED)]
    else:
        return None
    module = model.get_submodule(owner)
    if not isinstance(module, LAYER_FUNCTIONS[node.target]) or not (
            b is None or (isinstance(b, fx.Node) and b.op == "get_attr" and b.target == f"{owner}.bias")):
        return None
    if node.target is not F.linear and arg(node, 6, "groups", 1) != module.groups:
        return None
    return owner


def function(node: fx.Node, model: nn.Module, g: ChannelGraph, env: dict[fx.Node, Any]) -> Any:
    """Labels of a known function / method node's output, or :data:`UNKNOWN`."""
    target, method = node.target, node.op == "call_method"
    x = labels_of(node.args[0], env) if node.args else None
    if (method and target in QUERY_METHODS) or (not method and target in QUERY_FUNCTIONS):
        return None
    if not method and target is getattr:  # x.shape, x.ndim, x.dtype: a query unless it gives a tensor
        return UNKNOWN if shape_of(node) is not None else None
    if x is None:
        return UNKNOWN
    table = ELEMENTWISE_METHODS if method else ELEMENTWISE_FUNCTIONS
    if target in table and all(not isinstance(a, fx.Node) for a in node.args[1:]):
        return _same_shape(node, x, table[target])
    if target in SCALAR_OPS and len(node.args) > 1 and not isinstance(node.args[1], fx.Node):
        return _same_shape(node, x, SCALAR_OPS[target])
    if not method and target in NORM_FUNCTIONS:
        return _batch_norm(node, x, model, g)
    if not method and target is F.layer_norm:
        return _layer_norm(node, x, model, g)
    if not method and target in (F.group_norm, F.instance_norm):  # statistics over groups: kept (see docs)
        g.atoms.freeze(x.atoms, f"{getattr(target, '__name__', target)} (statistics over channel groups)")
        return Labels(x.axis, x.atoms, x.ops | {"norm"})
    if target in ("permute", torch.permute, "transpose", torch.transpose, "swapaxes", "movedim", torch.movedim):
        return _permuted(node, x)
    if target in ("view", "reshape", torch.reshape, "view_as", "reshape_as"):
        return _reshaped(node, x, g)
    if target is operator.getitem:
        return _sliced(node, x, g)
    if target in ("chunk", torch.chunk, "split", torch.split, "unbind", torch.unbind):
        return _pieces(node, x, g)
    return UNKNOWN


def _same_shape(node: fx.Node, x: Labels, keeps_zero: bool) -> Any:
    out, inp = shape_of(node), shape_of(node.args[0])
    if out is None or inp is None or len(out) != len(inp) or out[x.axis] != len(x.atoms):
        return UNKNOWN
    ops = {str(getattr(node.target, "__name__", node.target))} | (set() if keeps_zero else {NONZERO})
    return Labels(x.axis, x.atoms, x.ops | ops)


def _batch_norm(node: fx.Node, x: Labels, model: nn.Module, g: ChannelGraph) -> Any:
    """``F.batch_norm`` with a module's parameters (timm's ``BatchNormAct2d``): that module is a norm."""
    params = [*node.args[1:5], *(node.kwargs.get(k) for k in ("running_mean", "running_var", "weight", "bias"))]
    owners = {str(a.target).rpartition(".")[0] for a in params if isinstance(a, fx.Node) and a.op == "get_attr"}
    if x.axis != 1 or len(owners) > 1:
        return UNKNOWN
    if owners:
        owner = owners.pop()
        module = model.get_submodule(owner)
        if not isinstance(module, NORMS) or module.num_features != len(x.atoms) or owner in g.norms:
            return UNKNOWN
        g.norms[owner] = x.atoms
    return Labels(1, x.atoms, (x.ops - {NONZERO}) | {"norm"})  # a removed channel's zeroed entry gives 0


def _layer_norm(node: fx.Node, x: Labels, model: nn.Module, g: ChannelGraph) -> Labels:
    """Statistics over the channel axis mix channels: they are kept (followed with ``hidden``, see
    :mod:`.stream`); over other axes they pass."""
    shape = shape_of(node.args[0]) or ()
    normalized = arg(node, 1, "normalized_shape", ())
    owner = weight_owner(arg(node, 2, "weight")) if g.hidden else None
    followed = owner is not None and norm_labels(owner, model.get_submodule(owner), x, len(shape), g, -1)
    if followed:
        return followed
    if x.axis >= len(shape) - len(normalized):
        g.atoms.freeze(x.atoms, "a LayerNorm over channels (its statistics mix them)")
    return Labels(x.axis, x.atoms, x.ops | {"layer_norm"})


def _dims(node: fx.Node) -> list[Any]:
    rest = list(node.args[1:])
    if len(rest) == 1 and isinstance(rest[0], (list, tuple)):
        return list(rest[0])
    return rest or list(node.kwargs.get("dims", ()))


def _permuted(node: fx.Node, x: Labels) -> Any:
    rank = len(shape_of(node.args[0]) or ())
    if not rank:
        return UNKNOWN
    name = str(getattr(node.target, "__name__", node.target))
    dims = [int(d) % rank for d in _dims(node)]
    if name == "permute":
        return Labels(dims.index(x.axis), x.atoms, x.ops)
    if name in ("transpose", "swapaxes") and len(dims) == 2:
        a, b = dims
        return Labels(b if x.axis == a else a if x.axis == b else x.axis, x.atoms, x.ops)
    return UNKNOWN


def _reshaped(node: fx.Node, x: Labels, g: ChannelGraph) -> Any:
    """A reshape that keeps the channel axis, or merges it with the axes after it (a flatten)."""
    inp, out = shape_of(node.args[0]), shape_of(node)
    if inp is None or out is None:
        return UNKNOWN
    before, after = math.prod(inp[: x.axis]), math.prod(inp[x.axis + 1 :])
    for j, size in enumerate(out):  # the channel axis kept whole; the axes before (or after) it merged or split
        if size == inp[x.axis] and math.prod(out[:j]) == before and math.prod(out[j + 1 :]) == after:
            return Labels(j, x.atoms, x.ops)
    if tuple(out[: x.axis]) != tuple(inp[: x.axis]) or len(out) <= x.axis:
        return UNKNOWN
    for end in range(x.axis, len(inp)):
        merged = math.prod(inp[x.axis : end + 1])
        if merged == out[x.axis]:
            inner = math.prod(inp[x.axis + 1 : end + 1])
            return Labels(x.axis, [a for a in x.atoms for _ in range(inner)], x.ops | {"flatten"} if inner > 1 else x.ops)
        if merged > out[x.axis]:
            break
    g.atoms.freeze(x.atoms, f"a .{getattr(node.target, '__name__', node.target)}() that splits the channel axis "
                   "(attention heads, a channel shuffle), not followed")
    return UNKNOWN


def _sliced(node: fx.Node, x: Labels, g: ChannelGraph) -> Any:
    """``x[..., a:b]``: labels pass when the channel axis is taken whole; a cut freezes it."""
    index = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
    if any(i is Ellipsis or i is None or isinstance(i, fx.Node) for i in index[: x.axis + 1]):
        return UNKNOWN
    axis = x.axis - sum(isinstance(i, int) for i in index[: x.axis])
    if len(index) <= x.axis:
        return Labels(axis, x.atoms, x.ops)
    cut = index[x.axis]
    dynamic = isinstance(cut, slice) and any(isinstance(v, fx.Node) for v in (cut.start, cut.stop, cut.step))
    if isinstance(cut, slice) and not dynamic and range(len(x.atoms))[cut] == range(len(x.atoms)):
        return Labels(axis, x.atoms, x.ops)
    g.atoms.freeze(x.atoms, "a slice that cuts the channel axis")  # a fixed cut point would move once channels go
    return UNKNOWN


def _pieces(node: fx.Node, x: Labels, g: ChannelGraph) -> Any:
    """``chunk`` / ``split`` / ``unbind``: along channels, equal chunks tie position by position."""
    rank = len(shape_of(node.args[0]) or ())
    name = str(getattr(node.target, "__name__", node.target))
    dim = int(arg(node, 2, "dim", 0)) % rank if rank else 0
    if name == "unbind":
        dim = int(arg(node, 1, "dim", 0)) % rank if rank else 0
        return UNKNOWN if dim == x.axis else None
    metas = node.meta.get("tensor_meta")
    count = len(metas) if isinstance(metas, (tuple, list)) else 0
    if dim != x.axis:
        return tuple(Labels(x.axis, x.atoms, x.ops) for _ in range(count))
    chunks = arg(node, 1, "chunks" if name == "chunk" else "split_size_or_sections", 1)
    if name != "chunk" or len(x.atoms) % int(chunks):
        g.atoms.freeze(x.atoms, "a split into fixed sizes along channels")  # fixed sizes would no longer add up once channels go
        return UNKNOWN
    size = len(x.atoms) // int(chunks)
    for p in range(size):
        for k in range(1, int(chunks)):
            g.atoms.union(x.atoms[p], x.atoms[k * size + p])
    return tuple(Labels(x.axis, x.atoms[k * size : (k + 1) * size], x.ops) for k in range(int(chunks)))


def source(node: fx.Node) -> str:
    """The parameter or buffer a constant node is computed from (``blocks.0.gamma``)."""
    while node.op != "get_attr":
        parents = node.all_input_nodes
        if not parents:
            return node.name
        node = parents[0]
    return str(node.target)


def with_constant(node: fx.Node, x: Labels, const: fx.Node, g: ChannelGraph) -> Labels:
    """``x * gamma``, ``x + pos_embed`` with a parameter: it passes when it is one value across channels; a
    per-channel one is kept whole by compaction, so the channels it meets are kept."""
    out, shape = shape_of(node) or (), shape_of(const) or ()
    at = x.axis - (len(out) - len(shape))
    multiply = node.target in (operator.mul, torch.mul, operator.imul, "mul", "mul_")
    if 0 <= at < len(shape) and shape[at] != 1 and not (g.hidden and multiply and scaled(x, const, g)):
        g.atoms.freeze(x.atoms, f"a per-channel parameter ({source(const)}) in {op_name(node)}")
    if multiply:
        return Labels(x.axis, x.atoms, x.ops)
    return Labels(x.axis, x.atoms, x.ops | {NONZERO})
