"""Perplexity by streaming equals the Hugging Face model's own loss."""

from __future__ import annotations

import math

import pytest
import torch

import secateurs as sc
from secateurs.errors import PruningError

from .conftest import SEQLEN, save_tiny, transformers


def test_streamed_perplexity_equals_the_in_memory_loss(checkpoint, calibration):
    model = transformers.LlamaForCausalLM.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        loss = torch.stack([model(input_ids=w, labels=w).loss for w in calibration.split(1)]).mean()
    ppl = sc.llm.perplexity(checkpoint, calibration.reshape(-1), seqlen=SEQLEN, memory_budget=0,
                            show_progress=False)
    assert abs(ppl - math.exp(float(loss))) < 1e-4 * ppl


def test_a_shorter_last_window_is_scored(checkpoint, calibration):
    ids = calibration.reshape(-1)[:40]  # windows of 16, 16 and 8 tokens
    model = transformers.LlamaForCausalLM.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        nll = sum(model(input_ids=w.unsqueeze(0), labels=w.unsqueeze(0)).loss * (len(w) - 1) for w in ids.split(16))
    ppl = sc.llm.perplexity(checkpoint, ids, seqlen=16, show_progress=False)
    assert abs(ppl - math.exp(float(nll) / 37)) < 1e-4 * ppl


def test_pruning_raises_perplexity_and_text_is_tokenized(tmp_path):
    path = save_tiny(tmp_path / "tok", tokenizer=True)
    sc.llm.prune(path, tmp_path / "out", 0.5, "magnitude", show_progress=False)
    text = "Return a new list containing all items from the iterable in ascending order."
    dense = sc.llm.perplexity(path, text, seqlen=16, show_progress=False)
    assert dense > 1 and sc.llm.perplexity(tmp_path / "out", text, seqlen=16, show_progress=False) != dense


def test_bad_text(checkpoint):
    with pytest.raises(PruningError, match="no tokenizer"):
        sc.llm.perplexity(checkpoint, "some words", show_progress=False)
    with pytest.raises(PruningError, match="outside"):
        sc.llm.perplexity(checkpoint, torch.tensor([1, 2, 500]), show_progress=False)
    with pytest.raises(PruningError, match="seqlen must be an int >= 2"):
        sc.llm.perplexity(checkpoint, torch.tensor([1, 2, 3]), seqlen=1, show_progress=False)
