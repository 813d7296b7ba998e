"""A tiny random Llama saved as 3 shards, with an offline tokenizer: the checkpoint the llm tests stream."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

VOCAB = 128
SEQLEN = 16


def tiny_config(**overrides: object) -> object:
    kw = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "vocab_size": VOCAB, "max_position_embeddings": 64, "tie_word_embeddings": False}
    kw.update(overrides)
    return transformers.LlamaConfig(**kw)


def save_tiny(path: Path, dtype: torch.dtype = torch.float32, tokenizer: bool = False) -> Path:
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(tiny_config()).to(dtype).eval()
    model.save_pretrained(path, max_shard_size=f"{10 * dtype.itemsize}KB")
    assert len(list(path.glob("*.safetensors"))) == 3
    if tokenizer:
        _tokenizer().save_pretrained(path)
    return path


def _tokenizer() -> object:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from secateurs.llm.text import bundled

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<unk>"])
    tok.train_from_iterator([bundled("calibration")[:5000]], trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny") / "ckpt")


@pytest.fixture(scope="session")
def calibration() -> torch.Tensor:
    return torch.randint(0, VOCAB, (6, SEQLEN), generator=torch.Generator().manual_seed(1))
