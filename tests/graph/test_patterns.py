"""Attention / MLP blocks recognised by structure (secateurs.graph.patterns, secateurs.graph.structural)."""

import pytest
import torch
from torch import nn

from secateurs.graph import analyse
from secateurs.graph.patterns import attention_blocks, keeps_zero, mlp_blocks
from secateurs.graph.structural import recognised
from tests.transformer_models import FAMILIES


@pytest.mark.parametrize("family", list(FAMILIES))
def test_heads_and_mlp_neurons_of_each_family_are_units(family):
    pytest.importorskip("transformers")
    build, units = FAMILIES[family]
    model, x = build()
    assert recognised(model)
    assert len(attention_blocks(model)) == 2 and len(mlp_blocks(model)) == 2
    assert len(analyse(model.eval(), x).units()) == units


def test_grouped_query_attention_unit_is_a_kv_head_and_its_query_heads():
    pytest.importorskip("transformers")
    model, x = FAMILIES["llama"][0]()
    g = analyse(model, x)
    name = "model.layers.0.self_attn"
    (block,) = [a for a in attention_blocks(model) if a.holder == name]
    assert (block.heads, block.kv_heads, block.head_size) == (4, 2, 8)
    root = g.atoms.find(g.rows[f"{name}.k_proj"][0])  # key/value head 0 ...
    q = [g.atoms.find(a) for a in g.rows[f"{name}.q_proj"]]
    assert q[:16] == [root] * 16 and root not in q[16:]  # ... goes with query heads 0 and 1, not 2 and 3
    assert g.atoms.find(g.rows[f"{name}.v_proj"][7]) == root and g.atoms.find(g.rows[f"{name}.v_proj"][8]) != root


@pytest.mark.parametrize("train", [True, False])
def test_torch_transformer_layers_have_heads_and_ffn_neurons(train):
    enc = nn.TransformerEncoderLayer(64, 4, 128).train(train)
    dec = nn.TransformerDecoderLayer(64, 4, 128).train(train)
    assert len(analyse(enc, (torch.randn(5, 2, 64),)).units()) == 4 + 128
    assert len(analyse(dec, (torch.randn(5, 2, 64), torch.randn(3, 2, 64))).units()) == 4 + 4 + 128


def test_plain_models_are_still_traced():
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    bare = nn.MultiheadAttention(8, 2)  # outside torch's Transformer layers: the fx path handles it
    assert not recognised(net) and not recognised(nn.Sequential(bare))


def test_an_activation_that_moves_zero_freezes_its_neurons():
    assert keeps_zero(torch.relu) and keeps_zero(nn.GELU()) and not keeps_zero(torch.sigmoid) and not keeps_zero(None)
    layer = nn.TransformerEncoderLayer(16, 2, 32, activation=torch.sigmoid)
    assert len(analyse(layer, (torch.randn(3, 1, 16),)).units()) == 2  # heads only
