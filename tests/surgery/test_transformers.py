"""Structured pruning and compaction of transformer models (heads, MLP neurons) with outputs unchanged."""

import warnings

import pytest
import torch
from torch import nn

import secateurs as sc
from tests.transformer_models import FAMILIES, output


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _compacted(model: nn.Module, x: tuple) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' own notices
        sc.prune(model, 0.5, granularity="channel", scope="local", example_inputs=x)
        return sc.compact(model, x)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_compacted_model_equals_the_masked_one(family):
    pytest.importorskip("transformers")
    model, x = FAMILIES[family][0]()
    model.eval()
    small = _compacted(model, x)
    with torch.no_grad():
        diff = (output(small(*x)) - output(model(*x))).abs().max()
    assert float(diff) <= 1e-4
    assert _params(small) < 0.8 * _params(model)
    assert sc.masks(small) == {}


def test_gpt2_heads_and_neurons_go_and_its_head_stays_tied():
    pytest.importorskip("transformers")
    model, x = FAMILIES["gpt2"][0]()
    small = _compacted(model.eval(), x)
    attn, mlp = small.transformer.h[0].attn, small.transformer.h[0].mlp
    assert (attn.num_heads, attn.split_size) == (2, 16)  # half the heads, and what forward reads of them
    assert tuple(attn.c_attn.weight.shape) == (32, 48) and tuple(mlp.c_fc.weight.shape) == (32, 32)
    assert small.lm_head.weight is small.transformer.wte.weight


def test_llama_keeps_whole_key_value_groups():
    pytest.importorskip("transformers")
    model, x = FAMILIES["llama"][0]()
    small = _compacted(model.eval(), x)
    attn = small.model.layers[0].self_attn
    assert (attn.q_proj.out_features, attn.k_proj.out_features, attn.v_proj.out_features) == (16, 8, 8)
    assert attn.o_proj.in_features == 16 and small.model.layers[0].mlp.down_proj.in_features == 32


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_torch_transformer_layers_are_pruned_and_compacted(kind, train):
    torch.manual_seed(0)
    if kind == "encoder":
        layer, x = nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0), (torch.randn(5, 2, 64),)
    else:
        layer, x = nn.TransformerDecoderLayer(64, 4, 128, dropout=0.0), (torch.randn(5, 2, 64), torch.randn(3, 2, 64))
    layer.train(train)
    result = sc.prune(layer, 0.5, granularity="channel", example_inputs=x)
    assert result.sparsity > 0.4  # was 0: the eval fast path and the attention inside froze everything
    small = sc.compact(layer, x)
    assert _params(small) < 0.7 * _params(layer)
    with torch.no_grad():
        assert float((small(*x) - layer(*x)).abs().max()) <= 1e-4
    small.eval()  # the compacted layer runs in eval mode too (torch's fused path is not taken)
    with torch.no_grad():
        assert float((small(*x) - layer.eval()(*x)).abs().max()) <= 1e-4
