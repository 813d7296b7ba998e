"""Calibration activations between decoder layers: in memory, or spilled to disk past a budget.

Only two sets exist at any time: the current layer's inputs and its outputs (the next
layer's inputs). When one set (``samples × seqlen × hidden`` float32) is larger than the
budget, each batch lives in its own small safetensors file in a work folder and is read
back one batch at a time, so the resident memory is one batch whatever the sample count.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

DEFAULT_BUDGET = 2 << 30
"""Bytes one set of activations may take in memory before it is spilled to disk."""


class Store:
    """One set of activations, batch by batch, in memory or in files.

    Args:
        spill_dir: a folder for the files, or ``None`` to keep the batches in memory.
    """

    def __init__(self, spill_dir: Path | None) -> None:
        self.spill_dir = spill_dir
        self.batches: list[Tensor] = []
        self.count = 0
        if spill_dir is not None:
            spill_dir.mkdir(parents=True, exist_ok=True)

    def append(self, x: Tensor) -> None:
        """Add one batch."""
        if self.spill_dir is None:
            self.batches.append(x)
        else:
            save_file({"x": x.contiguous()}, str(self.spill_dir / f"{self.count:06d}.safetensors"))
        self.count += 1

    def __iter__(self) -> Iterator[Tensor]:
        for i in range(self.count):
            yield self.batches[i] if self.spill_dir is None else load_file(
                str(self.spill_dir / f"{i:06d}.safetensors"))["x"]

    def clear(self) -> None:
        """Drop every batch (and its files)."""
        self.batches, self.count = [], 0
        if self.spill_dir is not None:
            shutil.rmtree(self.spill_dir, ignore_errors=True)
            self.spill_dir.mkdir(parents=True, exist_ok=True)


class Pair:
    """The current layer's inputs and outputs; :meth:`swap` makes the outputs the next inputs.

    Args:
        nbytes: the size of one set in float32.
        budget: bytes allowed in memory for one set; past it both sets spill.
        work: the folder for spilled files (a temporary folder when ``None``).
    """

    def __init__(self, nbytes: int, budget: int, work: Path | None = None) -> None:
        self.spilled = nbytes > budget
        self._tmp = None
        dirs: list[Path | None] = [None, None]
        if self.spilled:
            if work is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="secateurs-llm-")
                work = Path(self._tmp.name)
            dirs = [work / "a", work / "b"]
        self.inputs, self.outputs = Store(dirs[0]), Store(dirs[1])

    def swap(self) -> None:
        """Outputs become inputs; the old inputs are dropped."""
        self.inputs.clear()
        self.inputs, self.outputs = self.outputs, self.inputs

    def close(self) -> None:
        """Remove spilled files."""
        self.inputs.clear()
        self.outputs.clear()
        for d in (self.inputs.spill_dir, self.outputs.spill_dir):
            if d is not None:
                shutil.rmtree(d, ignore_errors=True)
        if self._tmp is not None:
            self._tmp.cleanup()


class Geometry:
    """What a decoder layer needs besides its inputs: positions, rotary embeddings, the causal mask.

    Built as the Hugging Face model builds them in its ``forward``, for sequences without
    padding, once per sequence length seen.
    """

    def __init__(self, model: nn.Module, config: Any) -> None:
        self.config = config
        self.rotary = type(model.model.rotary_emb)(config=config)  # the skeleton's is on the meta device
        self._cache: dict[int, tuple[Tensor, Any, Any]] = {}

    def _for(self, seqlen: int) -> tuple[Tensor, Any, Any]:
        from transformers.masking_utils import create_causal_mask

        if seqlen not in self._cache:
            x = torch.zeros(1, seqlen, self.config.hidden_size)
            pos = torch.arange(seqlen).unsqueeze(0)
            mask = create_causal_mask(config=self.config, inputs_embeds=x, attention_mask=None,
                                      past_key_values=None, position_ids=pos)
            self._cache[seqlen] = (pos, self.rotary(x, position_ids=pos), mask)
        return self._cache[seqlen]

    def forward(self, layer: nn.Module, x: Tensor) -> Tensor:
        """``layer(x)`` as the model calls it."""
        pos, rope, mask = self._for(x.shape[1])
        with torch.no_grad():
            out = layer(x, attention_mask=mask, position_ids=pos, position_embeddings=rope)
        return out[0] if isinstance(out, tuple) else out
