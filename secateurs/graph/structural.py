"""Hugging Face BERT-style encoders: attention heads and FFN neurons, found by structure.

``torch.fx`` cannot trace Hugging Face models, so for encoder layers shaped like
BERT's — ``attention.self.{query,key,value}``, ``attention.output.dense``,
``intermediate.dense``, ``output.dense`` — the channel graph is built from the
module structure instead:

- an FFN neuron is a row of ``intermediate.dense`` and the matching column of
  ``output.dense`` (the activation between them must map 0 to 0, as GELU does);
- a head is its ``head_size`` rows of each of ``query``, ``key`` and ``value`` and
  the matching columns of ``attention.output.dense``. With the head's q, k and v
  rows and biases zero, its attention output is exactly zero, so removing it
  changes nothing downstream.

The residual stream (hidden size) is left alone: LayerNorm reads all of it.
"""

from __future__ import annotations

import torch
from torch import nn

from .channels import Atoms, ChannelGraph


def _is_linear(m: object) -> bool:
    return isinstance(m, nn.Linear)


def bert_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, layer)`` of every BERT-style encoder layer inside ``model``."""
    out = []
    for name, m in model.named_modules():
        try:
            sa, ao = m.attention.self, m.attention.output
            parts = (sa.query, sa.key, sa.value, ao.dense, m.intermediate.dense, m.output.dense)
        except AttributeError:
            continue
        if all(_is_linear(p) for p in parts) and hasattr(sa, "attention_head_size"):
            out.append((name, m))
    return out


def _keeps_zero(layer: nn.Module) -> bool:
    act = getattr(layer.intermediate, "intermediate_act_fn", None)
    if act is None:
        return False
    with torch.no_grad():
        return bool(act(torch.zeros(1)).abs().max() == 0)


def structural_graph(model: nn.Module) -> ChannelGraph:
    """Channel graph of the heads and FFN neurons of every BERT-style layer."""
    g = ChannelGraph(Atoms())
    for name, layer in bert_layers(model):
        p = f"{name}." if name else ""
        ffn = g.atoms.new(layer.intermediate.dense.out_features, frozen=not _keeps_zero(layer))
        g.rows[f"{p}intermediate.dense"] = ffn
        g.cols[f"{p}output.dense"] = ffn
        act = getattr(layer.intermediate, "intermediate_act_fn", None)
        g.via[f"{p}output.dense"] = frozenset({type(act).__name__})
        sa = layer.attention.self
        size = int(sa.attention_head_size)
        atoms = g.atoms.new(sa.query.out_features)
        for h in range(0, len(atoms), size):
            for a in atoms[h + 1 : h + size]:
                g.atoms.union(atoms[h], a)  # one head, one unit
        for part in ("query", "key", "value"):
            g.rows[f"{p}attention.self.{part}"] = atoms
        g.cols[f"{p}attention.output.dense"] = atoms
        g.heads[f"{p}attention.self"] = (atoms, size)
    return g
