"""The output folder: one shard per pruned layer, the rest, the index, the config; and the resume record.

Each decoder layer is written as its own shard (``model-layer-00003.safetensors``) the moment it
is pruned, atomically. The record ``secateurs-llm.json`` beside them says which layers are
finished and for which inputs (the key: checkpoint identity, method, sparsity, calibration,
allocation), so an interrupted run resumes after the last finished layer. The index is
written last: a folder that ``from_pretrained`` can load is a finished one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import Tensor

from ..files import atomic_write, write_text
from .checkpoint import INDEX, Checkpoint

RECORD = "secateurs-llm.json"
REST = "model-rest.safetensors"


def layer_file(i: int) -> str:
    """The shard name of decoder layer ``i``."""
    return f"model-layer-{i:05d}.safetensors"


def key(inputs: dict[str, Any]) -> str:
    """A short hash of the run's inputs (JSON with sorted keys)."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def write_shard(path: Path, tensors: dict[str, Tensor]) -> int:
    """Write ``tensors`` to ``path`` atomically; returns their size in bytes."""
    tensors = {n: t.contiguous() for n, t in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    return sum(t.numel() * t.element_size() for t in tensors.values())


class Record:
    """The resume record of one output folder.

    Args:
        out: the output folder.
        inputs: what the run depends on; its :func:`key` must match to resume.
    """

    def __init__(self, out: Path, inputs: dict[str, Any]) -> None:
        self.out, self.path = out, out / RECORD
        self.data: dict[str, Any] = {"key": key(inputs), "inputs": inputs, "layers": [], "sparsities": None,
                                     "complete": False}
        if self.path.is_file():
            old = json.loads(self.path.read_text())
            if old.get("key") == self.data["key"]:
                self.data = old
            else:
                warnings.warn(f"{self.path} records a run with other inputs; starting over", stacklevel=3)
        if not self.data["layers"]:
            (out / INDEX).unlink(missing_ok=True)  # a fresh start: the folder is not loadable until it ends

    @property
    def done(self) -> int:
        """How many layers are finished (they are finished in order)."""
        return len(self.data["layers"])

    def save(self) -> None:
        """Write the record atomically."""
        write_text(self.path, json.dumps(self.data, indent=1) + "\n")

    def add(self, entry: dict[str, Any]) -> None:
        """Record one more finished layer."""
        self.data["layers"].append(entry)
        self.save()


def finish(ckpt: Checkpoint, out: Path, record: Record) -> None:
    """Write the non-layer tensors, the config, the tokenizer files and, last, the index."""
    rest = ckpt.read(ckpt.other_names())
    total = write_shard(out / REST, rest)
    weight_map = dict.fromkeys(rest, REST)
    for i in range(ckpt.n_layers):
        for name in ckpt.names(f"model.layers.{i}."):
            weight_map[name] = layer_file(i)
        total += (out / layer_file(i)).stat().st_size
    for f in sorted(ckpt.path.iterdir()):
        if f.is_file() and not f.name.endswith(".safetensors") and f.name not in (INDEX, RECORD):
            atomic_write(out / f.name, lambda tmp, src=f: shutil.copyfile(src, tmp))
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    write_text(out / INDEX, json.dumps(index, indent=2) + "\n")
    record.data["complete"] = True
    record.save()
