"""The residual stream (hidden width) as one coupled group: ``sc.prune(..., hidden=True)``.

By default a LayerNorm / RMSNorm over channels freezes the channels it reads: its statistics mix
them, so removing one changes the others' outputs. With ``hidden=True`` such a norm passes its
channels on instead, its weight and bias entries belong to them, and the masked model's norm
normalises over the kept channels only (:mod:`secateurs.modules.norms`), so that compaction stays
exact. Every writer into the stream (embeddings, a patch-embedding conv, attention output and MLP
down projections, ConvNeXt's depthwise and pointwise convs, a layer-scale ``gamma``), every reader
(q/k/v or fused qkv columns, MLP up / gate columns, the classifier's columns) and every norm over it
then share its atoms: one channel of the stream is one unit.

Traced models (:mod:`.fx`, ConvNeXt) go through :func:`norm_labels` and :func:`scaled`; models read by
structure (:mod:`.structural`: Hugging Face BERT, RoBERTa, DistilBERT, ViT, GPT-2, Llama; timm ViT,
DeiT) through :func:`structural_stream`, which finds the stream by its width.
"""

from __future__ import annotations

import torch.fx as fx
from torch import nn

from .. import masking
from ..modules import norms
from .channels import ChannelGraph, Labels
from .nodes import shape_of
from .patterns import MIXING, Attention, Mlp

ADDED = ("token", "embed", "embedding")
"""Parameters of a stream's width named with one of these (a class token, position embeddings) are added
to the stream: a removed channel's entries are zeroed (masked) and sliced."""
SCALES = ("gamma", "scale")
"""Parameters named so multiply the stream (timm's ``LayerScale``): sliced, a zero channel stays zero."""
PARAMETRIZED = ".parametrizations.weight"


def norm_labels(owner: str, module: nn.Module, x: Labels, rank: int, g: ChannelGraph,
                axis: int | None = None) -> Labels | None:
    """A norm over the channel axis of ``x`` (``rank`` dims): its entries join the channels' atoms.

    ``axis``: the axis normalised (default: the module's own, :func:`~secateurs.modules.norms.channel_axis`;
    ``F.layer_norm`` inside a module normalises the last). Returns ``None`` when it cannot be followed (not a
    known norm over this axis, no weight, called twice).
    """
    own = norms.channel_axis(module)
    if own is None or owner in g.norms or norms.width(module) != len(x.atoms):
        return None
    if x.axis != (own if axis is None else axis) % rank:
        return None
    g.norms[owner] = x.atoms
    g.stats.add(owner)
    return Labels(x.axis, x.atoms, frozenset(x.ops - {"nonzero"}) | {"norm"})


def weight_owner(node: object) -> str | None:
    """The module whose ``weight`` a traced node reads (``a.b.weight`` or a masked ``a.b.parametrizations.weight``)."""
    if not isinstance(node, fx.Node) or node.op not in ("get_attr", "call_module"):
        return None
    target = str(node.target)
    for suffix in (".weight", PARAMETRIZED):
        if target.endswith(suffix):
            return target[: -len(suffix)]
    return None


def scaled(x: Labels, const: fx.Node, g: ChannelGraph) -> bool:
    """``x * gamma`` with a per-channel parameter: record it to be sliced with the channels (``True``), or
    ``False`` when it is not one parameter with one entry per channel."""
    node = const
    while node.op != "get_attr" and len(node.all_input_nodes) == 1:
        node = node.all_input_nodes[0]
    shape = shape_of(node) or ()
    sizes = [d for d in shape if d != 1]
    if node.op != "get_attr" or sizes != [len(x.atoms)] or str(node.target) in g.params:
        return False
    g.params[str(node.target)] = (list(shape).index(len(x.atoms)), x.atoms, False)
    return True


def structural_stream(model: nn.Module, g: ChannelGraph, blocks: list[Attention], mlps: list[Mlp]) -> str:
    """Join the residual stream of a model read by structure into one group; ``""`` or why it cannot be."""
    if any(a.packed for a in blocks):
        return "torch's packed nn.MultiheadAttention reads it, not followed"
    widths = {_in(model, a.q) for a in blocks} | {_in(model, m.inputs[0]) for m in mlps}
    if len(widths) != 1:
        return f"several hidden widths ({', '.join(map(str, sorted(widths)))}: stages), not followed"
    hidden = widths.pop()
    stream = g.atoms.new(hidden)
    for a in blocks:
        for name in (a.q, a.k, a.v):
            if name:
                g.cols[name] = stream
        g.rows[a.out] = stream
    for m in mlps:
        for name in m.inputs:
            g.cols[name] = stream
        g.rows[m.out] = stream
    for name, module in masking.prunable_layers(model):
        rows = masking.as_rows(module, masking.original(module))
        if name in g.cols or name in g.rows:
            continue
        if rows.shape[1] == hidden and not isinstance(module, nn.modules.conv._ConvNd):
            g.cols[name] = stream  # a reader: a pooler, a classifier, a language-model head
            if "pooler" in name and rows.shape[0] == hidden:  # its width is the hidden size in HF configs (BERT)
                g.rows[name] = stream
        elif rows.shape[0] == hidden:
            g.rows[name] = stream  # a writer: a patch embedding
    inside = {f"{holder}.{attr}" for holder in [a.holder for a in blocks] + [m.out.rpartition(".")[0] for m in mlps]
              for attr in MIXING}  # timm's scale_norm between the heads (or neurons) and the output projection
    return _norms_and_params(model, g, stream, hidden, inside)


def _in(model: nn.Module, name: str) -> int:
    module = model.get_submodule(name)
    return int(masking.as_rows(module, masking.original(module)).shape[1])


def _norms_and_params(model: nn.Module, g: ChannelGraph, stream: list[int], hidden: int, inside: set[str]) -> str:
    """The norms over the stream, and the other parameters of its width (embeddings, tokens, scales); the
    modules ``inside`` a block (a norm over its heads) are not the stream's."""
    layers = {id(m) for _, m in masking.prunable_layers(model)}
    for name, module in model.named_modules():
        if "parametrizations" in name.split(".") or name in inside:  # a mask's own holder; a block's own norm
            continue
        if norms.width(module) == hidden:
            g.norms[name] = stream
            g.stats.add(name)
            continue
        if id(module) in layers or norms.width(module) is not None:
            continue
        for tensor_name in masking.tensor_names(module):
            shape = tuple(masking.original(module, tensor_name).shape)
            qualified = masking.param_name(name, tensor_name)
            if not shape or shape[-1] != hidden:
                continue
            if isinstance(module, nn.Embedding) or any(k in tensor_name.lower() for k in ADDED):
                g.params[qualified] = (len(shape) - 1, stream, True)
            elif any(k in tensor_name.lower() for k in SCALES):
                g.params[qualified] = (len(shape) - 1, stream, False)
            else:
                why = f"parameter {qualified} {shape} of the hidden width, not followed"
                g.atoms.freeze(stream, why)
                return why
    return ""
