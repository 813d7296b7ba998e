"""Channel dependency analysis on a ``torch.fx`` graph.

Every channel that flows through the model gets an *atom*. A Linear's output
features, a conv's output channels are new atoms; elementwise ops that keep zero
at zero (ReLU, GELU, pooling, dropout, BatchNorm with its channel's parameters
zeroed) pass them on; a residual ``add`` or a ``mul`` ties the atoms of its two
operands index by index (union–find); ``cat`` along channels concatenates them;
``flatten`` repeats each channel once per spatial position; a depthwise conv
keeps its input's atoms. Anything else — an op we do not know, a LayerNorm, a
grouped conv, the model's inputs and outputs — *freezes* the atoms it touches:
those channels are never removed.

The result, a :class:`ChannelGraph`, says for every prunable module which atom
each output row and each input column belongs to, so a decision per coupled
channel (one union–find root) turns into rows and columns to keep in every
module at once.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Collection, Sequence
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import PruningError
from ..inputs import evaluating
from ..modules.attention import ATTENTION, packed
from .channels import NORMS, Atoms, ChannelGraph, Labels
from .functional import CONST, NONZERO, UNKNOWN, constant, function, owning_layer, with_constant
from .nodes import fresh, freeze_all, labels_of, op_name, shape_of
from .stream import norm_labels

KEEPS_ZERO_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Tanh, nn.LeakyReLU, nn.ELU, nn.Hardtanh, nn.Hardswish, nn.Mish,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
)
NONZERO_MODULES: tuple[type[nn.Module], ...] = (nn.Sigmoid, nn.Hardsigmoid, nn.Softplus, nn.LogSigmoid)
"""Per-channel elementwise modules that do not keep zero at zero (see :data:`.functional.NONZERO`)."""
KEEPS_ZERO_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.gelu, F.silu, torch.tanh, F.tanh, F.leaky_relu, F.elu, F.hardtanh,
    F.hardswish, F.mish, F.dropout, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, operator.neg,
    torch.neg,
}
KEEPS_ZERO_METHODS = {"relu", "tanh", "contiguous", "clone", "detach", "neg", "relu_"}
TIES = {operator.add, torch.add, operator.iadd, operator.sub, torch.sub, operator.mul, torch.mul, operator.imul}
TIES_METHODS = {"add", "sub", "mul", "add_", "mul_"}
class LeafTracer(fx.Tracer):
    """A tracer that keeps each module named in ``leaves`` as one ``call_module`` node."""

    def __init__(self, leaves: Collection[str]) -> None:
        super().__init__()
        self.leaves = set(leaves)

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return qualname in self.leaves or super().is_leaf_module(m, qualname)


def trace(model: nn.Module, example_inputs: tuple[Any, ...], leaves: Sequence[str] = ()) -> fx.GraphModule:
    """Symbolic trace with shapes; an untraceable module is a :class:`PruningError` naming it."""
    tracer = LeafTracer(leaves)
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # fx raises many types; name the module that failed
        name, where = _failing_module(model, exc)
        advice = (f"pass leaf_modules=[{name!r}] to treat it as one opaque layer (its channels are then kept)"
                  if name else "it fails in the model's own forward, where leaf_modules= cannot help: move that "
                  "code into a submodule, or prune without example_inputs (layer by layer)")
        raise PruningError(
            f"torch.fx cannot trace {where}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}; {advice}"
        ) from None
    gm = fx.GraphModule(model, graph)
    with torch.no_grad(), evaluating(gm, model):
        try:
            ShapeProp(gm).propagate(*example_inputs)
        except Exception as exc:  # a shape or type mismatch deep inside the model
            raise PruningError(
                f"example_inputs do not fit the model: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            ) from None
    return gm


def _failing_module(model: nn.Module, exc: BaseException) -> tuple[str, str]:
    """The qualified name of the innermost submodule whose code raised (``""``: the model itself) and a
    description naming it and the line of the model's code that failed."""
    names = {id(m): n for n, m in model.named_modules()}
    tb, name, line = exc.__traceback__, "", ""
    while tb is not None:
        frame = tb.tb_frame
        frame_self = frame.f_locals.get("self")
        if isinstance(frame_self, nn.Module) and names.get(id(frame_self)):
            name = names[id(frame_self)]
        if "/torch/" not in frame.f_code.co_filename.replace("\\", "/"):
            line = f"{frame.f_code.co_name} at {frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}"
        tb = tb.tb_next
    what = f"module {name!r} ({type(model.get_submodule(name)).__name__})" if name else "the model"
    return name, f"{what}{f' (in {line})' if line else ''}"


def traced_graph(model: nn.Module, example_inputs: tuple[Any, ...], leaves: Sequence[str] = (),
                 hidden: bool = False) -> ChannelGraph:
    """Trace ``model`` and label every channel (see the module docstring; ``hidden``: :mod:`.stream`)."""
    gm = trace(model, example_inputs, leaves)
    g = ChannelGraph(Atoms(), hidden=hidden)
    env: dict[fx.Node, Any] = {}
    for node in gm.graph.nodes:
        env[node] = _visit(node, model, g, env)
    return g


def _visit(node: fx.Node, model: nn.Module, g: ChannelGraph, env: dict[fx.Node, Any]) -> Any:
    if node.op == "placeholder":
        return fresh(node, g, "the model's input")
    if node.op == "get_attr":
        return CONST
    if node.op == "output":
        freeze_all(node.args, env, g, "the model's output")
        return None
    if node.op == "call_module":
        return _module(node, model.get_submodule(str(node.target)), str(node.target), g, env)
    return _function(node, model, g, env)


def _module(node: fx.Node, m: nn.Module, name: str, g: ChannelGraph, env: dict[fx.Node, Any]) -> Any:
    x = labels_of(node.args[0], env) if node.args else None
    in_shape = shape_of(node.args[0]) if node.args else None
    if name in g.rows or name in g.norms:  # a layer called twice: keep all its channels
        freeze_all(node.args, env, g, f"layer {name!r}, called twice")
        for table in (g.rows, g.cols, g.norms):
            g.atoms.freeze(table.get(name, []), f"layer {name!r}, called twice")
        return Labels(1 if not isinstance(m, nn.Linear) else len(shape_of(node) or (0, 0)) - 1,
                      g.rows.get(name) or g.norms[name])
    if isinstance(m, nn.Linear):
        if x is not None and in_shape is not None and x.axis == len(in_shape) - 1:
            g.cols[name] = x.atoms
            g.via[name] = x.ops
            if NONZERO in x.ops:  # a removed channel would not be zero here
                g.atoms.freeze(x.atoms, f"a nonzero op ({', '.join(sorted(x.ops))}) before layer {name!r}")
        else:
            freeze_all(node.args, env, g, f"layer {name!r} reads them along another axis")
            g.cols[name] = g.atoms.new(m.in_features, frozen=True)
        out = g.atoms.new(m.out_features)
        g.rows[name] = out
        return Labels(len(shape_of(node) or (0, 0)) - 1, out)
    if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return _conv(node, m, name, x, g, env)
    if isinstance(m, ATTENTION) and packed(m):
        return _attention(node, m, name, g, env)
    if isinstance(m, NORMS) and x is not None and x.axis == 1:
        g.norms[name] = x.atoms
        return Labels(x.axis, x.atoms, (x.ops - {NONZERO}) | {"norm"})
    if isinstance(m, KEEPS_ZERO_MODULES) and x is not None:
        return _reduced(node, x, in_shape, type(m).__name__)
    if isinstance(m, NONZERO_MODULES) and x is not None:
        return _reduced(node, Labels(x.axis, x.atoms, x.ops | {NONZERO}), in_shape, type(m).__name__)
    if isinstance(m, nn.Flatten) and x is not None and in_shape is not None:
        return _flattened(x, in_shape, m.start_dim, m.end_dim, g)
    followed = g.hidden and x is not None and in_shape is not None and norm_labels(name, m, x, len(in_shape), g)
    if followed:
        return followed
    freeze_all((node.args, node.kwargs), env, g, _unknown(node, m))
    return fresh(node, g)


def _unknown(node: fx.Node, m: nn.Module) -> str:
    if isinstance(m, (nn.LayerNorm, nn.GroupNorm)):
        return f"{op_name(node)} ({type(m).__name__}): a norm over channels mixes them"
    return f"{op_name(node)} ({type(m).__name__}), unknown to secateurs"


def _conv(node: fx.Node, m: nn.Module, name: str, x: Labels | None, g: ChannelGraph, env: dict[fx.Node, Any]) -> Any:
    """A conv's filters are new channels; grouped and depthwise convs tie channels so groups stay equal."""
    if x is None or x.axis != 1 or len(x.atoms) != m.in_channels:
        freeze_all(node.args, env, g, f"conv {name!r} reads them along another axis")
        g.cols[name] = g.atoms.new(m.in_channels // m.groups, frozen=True)
        g.rows[name] = g.atoms.new(m.out_channels, frozen=m.groups > 1,
                                   reason=f"grouped conv {name!r} reads channels secateurs cannot follow")
        return Labels(1, g.rows[name])
    g.via[name] = x.ops
    if NONZERO in x.ops:  # a removed channel would not be zero here
        g.atoms.freeze(x.atoms, f"a nonzero op ({', '.join(sorted(x.ops))}) before layer {name!r}")
    if m.groups > 1 and m.groups == m.in_channels:  # depthwise (times a multiplier): filters follow inputs
        mult = m.out_channels // m.groups
        g.rows[name] = [a for a in x.atoms for _ in range(mult)]
        g.depthwise.add(name)
        return Labels(1, g.rows[name])
    per_in, per_out = m.in_channels // m.groups, m.out_channels // m.groups
    for k in range(1, m.groups):  # position p of every group goes together: groups keep one width
        for p in range(per_in):
            g.atoms.union(x.atoms[p], x.atoms[k * per_in + p])
    rows = g.atoms.new(m.out_channels)
    for k in range(1, m.groups):
        for q in range(per_out):
            g.atoms.union(rows[q], rows[k * per_out + q])
    g.cols[name], g.rows[name] = x.atoms[:per_in], rows
    return Labels(1, rows)


def _attention(node: fx.Node, m: nn.Module, name: str, g: ChannelGraph, env: dict[fx.Node, Any]) -> Any:
    """Heads of a packed attention module: one unit per head (its q, k, v rows, out_proj columns)."""
    freeze_all((node.args, node.kwargs), env, g, f"the residual stream of attention {name!r}")  # its inputs are the residual stream: kept
    inner = m.num_heads * m.head_dim
    atoms = g.atoms.new(inner)
    for h in range(0, inner, m.head_dim):
        for a in atoms[h + 1 : h + m.head_dim]:
            g.atoms.union(atoms[h], a)
    g.rows[name] = atoms * 3
    g.attention.add(name)
    g.cols[f"{name}.out_proj"] = atoms
    out = g.atoms.new(m.embed_dim)
    g.rows[f"{name}.out_proj"] = out
    shape = shape_of(node.args[0]) if node.args else None
    return (Labels(len(shape) - 1 if shape else 2, out), None)


def _reduced(node: fx.Node, x: Labels, in_shape: tuple[int, ...] | None, op: str) -> Labels:
    """Pass labels through a channel-preserving op whose output rank may drop (pooling keeps it)."""
    out = shape_of(node)
    ops = x.ops | {op}
    if out is not None and in_shape is not None and len(out) == len(in_shape):
        return Labels(x.axis, x.atoms, ops)
    return Labels(min(x.axis, len(out) - 1) if out else x.axis, x.atoms, ops)


def _flattened(x: Labels, shape: tuple[int, ...], start: int, end: int, g: ChannelGraph) -> Labels:
    start, end = start % len(shape), end % len(shape)
    if not start <= x.axis <= end:
        shift = end - start if x.axis > end else 0
        return Labels(x.axis - shift, x.atoms, x.ops)
    inner = math.prod(shape[x.axis + 1 : end + 1])
    outer = math.prod(shape[start : x.axis])
    atoms = [a for a in x.atoms for _ in range(inner)] * outer
    if outer > 1:
        g.atoms.freeze(x.atoms, "a flatten that interleaves channels")  # channels interleaved with an outer dim: keep it simple
    return Labels(start, atoms, x.ops | {"flatten"})


def _function(node: fx.Node, model: nn.Module, g: ChannelGraph, env: dict[fx.Node, Any]) -> Any:
    owner = owning_layer(node, model)
    if owner is not None:  # F.linear(x, fc.weight, fc.bias): the layer fc, traced into
        return _module(node, model.get_submodule(owner), owner, g, env)
    if constant(node, env):
        return CONST
    known = function(node, model, g, env)
    if known is not UNKNOWN:
        return known
    target = node.target
    method = node.op == "call_method"
    args = node.args
    first = labels_of(args[0], env) if args else None
    if target is operator.getitem and isinstance(env.get(args[0]), tuple):
        part = env[args[0]][args[1]] if isinstance(args[1], int) else None
        return part
    if (method and target in KEEPS_ZERO_METHODS) or (not method and target in KEEPS_ZERO_FUNCTIONS):
        if first is not None:
            return _reduced(node, first, shape_of(args[0]), str(getattr(target, "__name__", target)))
    if (method and target in TIES_METHODS) or (not method and target in TIES):
        tied = _tie(node, g, env)
        if tied is not None:
            return tied
    if (method and target == "flatten") or (not method and target is torch.flatten):
        shape = shape_of(args[0])
        if first is not None and shape is not None:
            start = args[1] if len(args) > 1 else node.kwargs.get("start_dim", 0)
            end = args[2] if len(args) > 2 else node.kwargs.get("end_dim", -1)
            return _flattened(first, shape, int(start), int(end), g)
    if not method and target is torch.cat:
        return _cat(node, g, env)
    if method and target in ("mean", "sum", "amax") or (not method and target in (torch.mean, torch.sum)):
        reduced = _reduction(node, first)
        if reduced is not None:
            return reduced
    if method and target in ("size", "dim"):
        return None
    freeze_all((node.args, node.kwargs), env, g, f"{op_name(node)}, an op secateurs does not follow")
    return fresh(node, g)


def _tie(node: fx.Node, g: ChannelGraph, env: dict[fx.Node, Any]) -> Labels | None:
    """``a + b``, ``a * b``: tie the operands' channels index by index (broadcasting allowed)."""
    a = node.args[0]
    b = node.args[1] if len(node.args) > 1 else node.kwargs.get("other")
    la, lb = labels_of(a, env), labels_of(b, env)
    if lb is not None and la is None and isinstance(a, fx.Node) and env.get(a) is CONST:
        a, b, la, lb = b, a, lb, la
    if la is not None and isinstance(b, fx.Node) and env.get(b) is CONST:
        return with_constant(node, la, b, g)
    if la is not None and not isinstance(b, fx.Node):  # a Python number: x * k keeps zeros, x + k does not
        return la if node.target in (operator.mul, torch.mul, operator.imul, "mul", "mul_") else None
    if la is not None and lb is not None and (la.axis != lb.axis or len(la.atoms) != len(lb.atoms)):
        g.atoms.freeze(la.atoms + lb.atoms, f"{op_name(node)} of tensors whose channels lie on different axes "
                       "(tokens and features, as in MLP-Mixer)")
        return None
    if la is None or lb is None:
        return None
    for x, y in zip(la.atoms, lb.atoms):
        g.atoms.union(x, y)
    ops = la.ops | lb.ops
    if node.target in (operator.mul, torch.mul, operator.imul, "mul", "mul_") and NONZERO not in la.ops & lb.ops:
        ops = ops - {NONZERO}  # a product with a zero channel is zero
    return Labels(la.axis, la.atoms, ops)


def _cat(node: fx.Node, g: ChannelGraph, env: dict[fx.Node, Any]) -> Labels | None:
    tensors = node.args[0]
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    labels = [labels_of(t, env) for t in tensors]
    shape = shape_of(node)
    if shape is None or any(lab is None for lab in labels) or len({lab.axis for lab in labels}) != 1:
        freeze_all(node.args, env, g, "a torch.cat it cannot follow")
        return fresh(node, g)
    axis = labels[0].axis
    if int(dim) % len(shape) == axis:
        return Labels(axis, [a for lab in labels for a in lab.atoms], frozenset().union(*(lab.ops for lab in labels)))
    for lab in labels[1:]:
        for x, y in zip(labels[0].atoms, lab.atoms):
            g.atoms.union(x, y)
    return labels[0]


def _reduction(node: fx.Node, x: Labels | None) -> Labels | None:
    shape, out = shape_of(node.args[0]), shape_of(node)
    if x is None or shape is None or out is None:
        return None
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    if dims is None:
        return None
    dims = [d % len(shape) for d in (dims if isinstance(dims, (list, tuple)) else [dims])]
    if x.axis in dims:
        return None
    keep = node.kwargs.get("keepdim", False) or (len(node.args) > 2 and node.args[2])
    return Labels(x.axis if keep else x.axis - sum(d < x.axis for d in dims), x.atoms, x.ops | {"mean"})
