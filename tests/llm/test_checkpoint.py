"""Reading a sharded checkpoint one layer at a time, and the bad ones it refuses."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from secateurs.errors import PruningError
from secateurs.llm.checkpoint import INDEX, Checkpoint

from .conftest import tiny_config, transformers


def test_skeleton_on_meta_and_one_layer_read(checkpoint):
    ckpt = Checkpoint(checkpoint)
    assert ckpt.n_layers == 2 and all(p.is_meta for p in ckpt.skeleton.parameters())
    layer = ckpt.layer(1)
    dense = transformers.LlamaForCausalLM.from_pretrained(checkpoint).model.layers[1].state_dict()
    assert all(torch.equal(layer.state_dict()[k], v) for k, v in dense.items())
    ckpt.release(1)
    assert all(p.is_meta for p in ckpt.skeleton.parameters())


def test_identity_follows_the_config_and_shards(checkpoint, tmp_path):
    copy = shutil.copytree(checkpoint, tmp_path / "copy")
    assert Checkpoint(copy).identity == Checkpoint(checkpoint).identity
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps(config | {"rms_norm_eps": 1e-5}))
    assert Checkpoint(copy).identity != Checkpoint(checkpoint).identity


def test_a_tensor_whose_shape_disagrees(checkpoint, tmp_path):
    copy = shutil.copytree(checkpoint, tmp_path / "copy")
    name = "model.layers.0.self_attn.q_proj.weight"
    shard = copy / json.loads((copy / INDEX).read_text())["weight_map"][name]
    tensors = load_file(shard)
    tensors[name] = torch.zeros(32, 16)
    save_file(tensors, shard)
    with pytest.raises(PruningError, match=r"q_proj.weight in .* has shape \(32, 16\) but config.json says \(32, 32\)"):
        Checkpoint(copy)


def test_missing_index(checkpoint, tmp_path):
    copy = shutil.copytree(checkpoint, tmp_path / "copy")
    (copy / INDEX).unlink()
    with pytest.raises(PruningError, match="has neither model.safetensors.index.json nor model.safetensors"):
        Checkpoint(copy)


def test_no_config(tmp_path):
    with pytest.raises(PruningError, match="has no config.json"):
        Checkpoint(tmp_path)


def test_not_a_llama(tmp_path):
    cfg = transformers.GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=10)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path)
    with pytest.raises(PruningError, match="model_type 'gpt2' is not supported; allowed: llama, mistral, qwen2"):
        Checkpoint(tmp_path)


def test_shapes_that_disagree_with_the_config(checkpoint, tmp_path):
    copy = shutil.copytree(checkpoint, tmp_path / "copy")
    config = json.loads((copy / "config.json").read_text())
    config["intermediate_size"] = 48
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(PruningError, match=r"mlp\.\w+_proj\.weight in .* has shape .* but config.json says"):
        Checkpoint(copy)


def test_a_weight_missing_from_the_shards(checkpoint, tmp_path):
    copy = shutil.copytree(checkpoint, tmp_path / "copy")
    index = json.loads((copy / INDEX).read_text())
    del index["weight_map"]["model.norm.weight"]
    (copy / INDEX).write_text(json.dumps(index))
    with pytest.raises(PruningError, match="lack 1 weights the config expects, e.g. 'model.norm.weight'"):
        Checkpoint(copy)


def test_mistral_layout_is_read(tmp_path):
    cfg = transformers.MistralConfig(**tiny_config().to_diff_dict() | {"model_type": "mistral"})
    transformers.MistralForCausalLM(cfg).save_pretrained(tmp_path)
    assert Checkpoint(tmp_path).n_layers == 2
