"""Transformer blocks: attention heads and MLP neurons, found by structure.

For models whose attention :mod:`.patterns` recognises (Hugging Face BERT, RoBERTa,
DistilBERT, GPT-2, Llama / Mistral / Qwen2, ViT; timm ViT, DeiT, Swin; torch's own
``nn.TransformerEncoderLayer`` / ``DecoderLayer``) the channel graph is built from
the module structure instead of a trace:

- an MLP neuron is a row of the input projection (and of the gate, when gated) and
  the matching column of the output projection. Ungated, the activation between them
  must map 0 to 0 (ReLU, GELU, SiLU do); gated (``act(gate) * up``) a zero ``up`` row
  is enough;
- a head is its ``head_size`` rows of each of q, k and v and the matching columns of
  the output projection. With grouped-query attention one unit is a key/value head and
  the ``heads / kv_heads`` query heads that read it. With a unit's q, k and v rows and
  biases zero its attention output is exactly zero, so removing it changes nothing
  downstream.

The residual stream (hidden size) is left alone: the layer norms read all of it. With ``hidden``
(``sc.prune(..., hidden=True)``) it is one more coupled group (:mod:`.stream`).
"""

from __future__ import annotations

from torch import nn

from .channels import Atoms, ChannelGraph
from .patterns import Attention, Mlp, attention_blocks, keeps_zero, mlp_blocks
from .stream import structural_stream


def recognised(model: nn.Module) -> bool:
    """Whether ``model`` has attention blocks :mod:`.patterns` recognises (then it is read by structure)."""
    return bool(attention_blocks(model))


def _heads(g: ChannelGraph, a: Attention) -> None:
    rep, size = a.heads // a.kv_heads, a.head_size
    frozen = {"frozen": True, "reason": a.kept} if a.kept else {}
    q = g.atoms.new(a.heads * size, **frozen)
    k, v = g.atoms.new(a.kv_heads * size, **frozen), g.atoms.new(a.kv_heads * size, **frozen)
    for group in range(a.kv_heads):  # one unit: a key/value head and the query heads that read it
        root = k[group * size]
        for atoms, lo, hi in ((q, group * rep * size, (group + 1) * rep * size),
                              (k, group * size, (group + 1) * size), (v, group * size, (group + 1) * size)):
            for atom in atoms[lo:hi]:
                g.atoms.union(root, atom)
    if a.packed:  # nn.MultiheadAttention: rows of in_proj_weight; replaced by PrunedMultiheadAttention
        g.rows[a.q] = q + k + v
        g.attention.add(a.q)
    elif a.k is None:  # fused projection, rows [q | k | v]
        g.rows[a.q] = q + k + v
    else:
        g.rows[a.q], g.rows[a.k], g.rows[a.v] = q, k, v
    g.cols[a.out] = q
    if not a.packed:
        g.heads[a.holder] = (q, size)


def _mlp(g: ChannelGraph, m: Mlp) -> None:
    gated = len(m.inputs) > 1
    zero = gated or keeps_zero(m.activation)
    why = m.kept or ("" if zero else f"the activation before {m.out!r} does not map 0 to 0")
    atoms = g.atoms.new(m.width, frozen=bool(why), reason=why or "")
    for name in m.inputs:
        g.rows[name] = atoms
    g.cols[m.out] = atoms
    g.via[m.out] = frozenset({type(m.activation).__name__, *(("mul",) if gated else ())})


def structural_graph(model: nn.Module, hidden: bool = False) -> ChannelGraph:
    """Channel graph of the heads and MLP neurons of every recognised block (and its residual stream)."""
    g = ChannelGraph(Atoms(), hidden=hidden)
    blocks, mlps = attention_blocks(model), []
    for a in blocks:
        _heads(g, a)
    for m in mlp_blocks(model):
        if m.out not in g.cols and not any(n in g.rows for n in m.inputs):  # not an attention projection
            _mlp(g, m)
            mlps.append(m)
    if hidden:
        g.stream = structural_stream(model, g, blocks, mlps)
    return g
