"""Tiny transformer models for tests: random configs (2 layers, hidden 32, 4 heads), nothing downloaded.

``FAMILIES`` maps a family to ``(builder, units per model)``: the heads (key/value groups under
grouped-query attention) plus MLP neurons that structural pruning must find.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

SIZE = {"hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 64, "num_hidden_layers": 2}


def ids() -> torch.Tensor:
    return torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(0))


def _bert(name: str) -> tuple[nn.Module, tuple[Any, ...]]:
    import transformers as tf

    config, model = {"bert": (tf.BertConfig, tf.BertModel), "roberta": (tf.RobertaConfig, tf.RobertaModel)}[name]
    return model(config(vocab_size=50, **SIZE)), (ids(),)


def _distilbert() -> tuple[nn.Module, tuple[Any, ...]]:
    import transformers as tf

    return tf.DistilBertModel(tf.DistilBertConfig(vocab_size=50, n_layers=2, dim=32, n_heads=4, hidden_dim=64)), (ids(),)


def gpt2() -> tuple[nn.Module, tuple[Any, ...]]:
    import transformers as tf

    config = tf.GPT2Config(vocab_size=50, n_layer=2, n_embd=32, n_head=4, n_inner=64, n_positions=16,
                           bos_token_id=0, eos_token_id=0)
    return tf.GPT2LMHeadModel(config), (ids(),)


def llama(kind: str = "llama") -> tuple[nn.Module, tuple[Any, ...]]:
    import transformers as tf

    config, model = {"llama": (tf.LlamaConfig, tf.LlamaForCausalLM), "mistral": (tf.MistralConfig, tf.MistralForCausalLM),
                     "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM)}[kind]
    return model(config(vocab_size=50, num_key_value_heads=2, tie_word_embeddings=True, bos_token_id=0,
                        eos_token_id=0, pad_token_id=0, **SIZE)), (ids(),)


def _vit() -> tuple[nn.Module, tuple[Any, ...]]:
    import transformers as tf

    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    return tf.ViTModel(tf.ViTConfig(image_size=16, patch_size=8, **SIZE)), (x,)


# heads (or key/value groups) + MLP neurons, over both layers
FAMILIES: dict[str, tuple[Callable[[], tuple[nn.Module, tuple[Any, ...]]], int]] = {
    "bert": (lambda: _bert("bert"), 2 * (4 + 64)),
    "roberta": (lambda: _bert("roberta"), 2 * (4 + 64)),
    "distilbert": (_distilbert, 2 * (4 + 64)),
    "gpt2": (gpt2, 2 * (4 + 64)),
    "llama": (llama, 2 * (2 + 64)),
    "mistral": (lambda: llama("mistral"), 2 * (2 + 64)),
    "qwen2": (lambda: llama("qwen2"), 2 * (2 + 64)),
    "vit": (_vit, 2 * (4 + 64)),
}
HEADS_IN_CONFIG = {"llama", "mistral", "qwen2", "vit"}
"""Families whose config can hold pruned heads (they read ``config.head_dim``)."""


def output(out: Any) -> torch.Tensor:
    """The main tensor of a model's output (logits, last hidden state, or a plain tensor)."""
    for attr in ("logits", "last_hidden_state"):
        if hasattr(out, attr):
            return getattr(out, attr)
    return out[0] if isinstance(out, (tuple, list)) else out
