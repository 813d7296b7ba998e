"""Perplexity of a sharded causal LM, streaming one decoder layer at a time (``sc.llm.perplexity``)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import progress
from ..errors import PruningError
from .activations import DEFAULT_BUDGET, Geometry, Pair
from .checkpoint import Checkpoint
from .stream import embed, propagate
from .text import EVALUATION, chunks, token_ids


def perplexity(checkpoint_dir: str | Path, text: str | Path | Tensor | None = None, *, seqlen: int = 512,
               memory_budget: int = DEFAULT_BUDGET, show_progress: bool = True) -> float:
    """``exp`` of the mean next-token loss on ``text``, in consecutive windows of ``seqlen`` tokens.

    Every token but the first of each window is predicted from the tokens before it in its
    window (the last window may be shorter). The model is never whole in memory: the windows'
    activations go through the decoder layers one layer at a time, as :func:`secateurs.llm.prune`
    runs them.

    Args:
        checkpoint_dir: a Hugging Face folder of a Llama-layout model.
        text: a string, a text file, flat token ids, or ``None`` for the bundled held-out text
            (the standard library's docstrings), tokenized with the checkpoint's tokenizer.
        seqlen: tokens per window.
        memory_budget: bytes the activations may use before they are spilled to disk.
        show_progress: progress per layer.

    Raises:
        PruningError: a bad checkpoint, text or ``seqlen``.
    """
    ckpt = Checkpoint(checkpoint_dir)
    windows = chunks(token_ids(ckpt.path, text, EVALUATION), seqlen)
    ids = torch.cat([w.reshape(-1) for w in windows])
    if int(ids.max()) >= ckpt.config.vocab_size or int(ids.min()) < 0:
        raise PruningError(f"text has token ids outside [0, {ckpt.config.vocab_size})")
    geometry = Geometry(ckpt.skeleton, ckpt.config)
    pair = Pair(ids.numel() * ckpt.config.hidden_size * 4, memory_budget)
    try:
        embed(ckpt, windows, pair)
        with progress.Progress(ckpt.n_layers, "llm eval", "layer", show_progress) as bar:
            for i in range(ckpt.n_layers):
                propagate(ckpt.layer(i), geometry, pair)
                ckpt.release(i)
                bar.update()
        nll, count = _loss(ckpt, pair, windows)
    finally:
        pair.close()
    return math.exp(nll / count)


def _loss(ckpt: Checkpoint, pair: Pair, windows: list[Tensor]) -> tuple[float, int]:
    """Summed next-token loss and the number of predicted tokens, through the final norm and the head."""
    head_name = "model.embed_tokens.weight" if "lm_head.weight" not in ckpt.weight_map else "lm_head.weight"
    tensors = ckpt.read(["model.norm.weight", head_name])
    norm = ckpt.skeleton.model.norm.to_empty(device="cpu")
    norm.load_state_dict({"weight": tensors["model.norm.weight"].float()})
    head = tensors[head_name].float()
    total, count = 0.0, 0
    with torch.no_grad():
        for x, ids in zip(pair.inputs, windows):
            logits = norm(x) @ head.T
            total += float(F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                           reduction="sum"))
            count += ids[:, 1:].numel()
    ckpt.skeleton.model.norm.to("meta")
    return total, count
