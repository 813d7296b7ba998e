"""A sharded Hugging Face causal-LM checkpoint read one decoder layer at a time.

The model is built from ``config.json`` on the ``meta`` device (no memory), and each
decoder layer is filled from the ``.safetensors`` shards only when it is needed:
``safetensors.safe_open`` reads single tensors without loading a whole file. Nothing
else of the model is ever in memory at once.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor, nn

from ..compat import prepare_torchvision
from ..errors import PruningError

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
SUPPORTED = ("llama", "mistral", "qwen2")
"""``model_type`` values whose decoder layout (``model.layers.N``, RMSNorm, rotary) is supported."""
LAYER_PREFIX = "model.layers."


def _transformers() -> Any:
    prepare_torchvision()  # transformers' model classes import torchvision when it is installed
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - the extra is missing
        raise PruningError("llm needs transformers; install with pip install 'secateurs[hf]'") from e
    return transformers


class Checkpoint:
    """A checkpoint folder: its config, its weight map and a ``meta`` skeleton of the model.

    Args:
        path: a folder with ``config.json`` and ``model.safetensors.index.json`` (or one
            ``model.safetensors``).

    Raises:
        PruningError: no such folder, no config or index, an architecture other than
            :data:`SUPPORTED`, or a weight the config does not expect.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not (self.path / "config.json").is_file():
            raise PruningError(f"checkpoint_dir {str(path)!r} has no config.json; pass a Hugging Face model folder")
        self.weight_map = _weight_map(self.path)
        tf = _transformers()
        self.config = tf.AutoConfig.from_pretrained(self.path)
        if self.config.model_type not in SUPPORTED:
            raise PruningError(
                f"checkpoint_dir {str(path)!r}: model_type {self.config.model_type!r} is not supported; "
                f"allowed: {', '.join(SUPPORTED)}"
            )
        with torch.device("meta"):
            self.skeleton = tf.AutoModelForCausalLM.from_config(self.config, dtype=torch.float32)
        self.n_layers = len(self.skeleton.model.layers)
        self._check_shapes()

    @property
    def identity(self) -> str:
        """A hash of the config and the index (names, shards, shard sizes): what resuming is keyed on."""
        h = hashlib.sha256((self.path / "config.json").read_bytes())
        for name in sorted(self.weight_map):
            shard = self.weight_map[name]
            h.update(f"{name}={shard}:{(self.path / shard).stat().st_size};".encode())
        return h.hexdigest()[:16]

    def names(self, prefix: str) -> list[str]:
        """The tensor names under ``prefix``, in sorted order."""
        return sorted(n for n in self.weight_map if n.startswith(prefix))

    def read(self, names: list[str]) -> dict[str, Tensor]:
        """The tensors ``names`` in their stored dtype, each read alone from its shard."""
        out: dict[str, Tensor] = {}
        with ExitStack() as stack:
            files: dict[str, Any] = {}
            for name in names:
                shard = self.weight_map[name]
                if shard not in files:
                    files[shard] = stack.enter_context(safe_open(self.path / shard, framework="pt"))
                out[name] = files[shard].get_tensor(name)
        return out

    def layer_tensors(self, i: int) -> dict[str, Tensor]:
        """Decoder layer ``i``'s tensors, named as in the checkpoint."""
        return self.read(self.names(f"{LAYER_PREFIX}{i}."))

    def other_names(self) -> list[str]:
        """Every tensor outside the decoder layers (embeddings, final norm, head)."""
        return sorted(n for n in self.weight_map if not n.startswith(LAYER_PREFIX))

    def layer(self, i: int, tensors: dict[str, Tensor] | None = None) -> nn.Module:
        """Decoder layer ``i`` as a float32 module on the CPU, filled from the shards."""
        tensors = self.layer_tensors(i) if tensors is None else tensors
        prefix = f"{LAYER_PREFIX}{i}."
        state = {n[len(prefix):]: t.float() for n, t in tensors.items()}
        module = self.skeleton.model.layers[i]
        module.to_empty(device="cpu")
        module.load_state_dict(state, strict=True, assign=True)
        return module

    def release(self, i: int) -> None:
        """Send layer ``i`` back to the ``meta`` device (its memory is freed)."""
        self.skeleton.model.layers[i].to("meta")

    def _check_shapes(self) -> None:
        expected = {n: tuple(p.shape) for n, p in self.skeleton.state_dict().items()}
        if getattr(self.config, "tie_word_embeddings", False):
            expected.pop("lm_head.weight", None)
        missing = sorted(set(expected) - set(self.weight_map))
        if missing:
            raise PruningError(f"checkpoint_dir {str(self.path)!r}: the shards lack {len(missing)} weights "
                               f"the config expects, e.g. {missing[0]!r}")
        for shard, names in _by_shard(self.weight_map).items():
            with safe_open(self.path / shard, framework="pt") as f:
                for name in names:
                    shape = tuple(f.get_slice(name).get_shape())
                    if name in expected and shape != expected[name]:
                        raise PruningError(f"checkpoint_dir {str(self.path)!r}: {name} in {shard} has shape "
                                           f"{shape} but config.json says {expected[name]}")


def _weight_map(path: Path) -> dict[str, str]:
    index = path / INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError) as e:
            raise PruningError(f"{index} is not a safetensors index (no 'weight_map'): {e}") from None
    elif (path / SINGLE).is_file():
        with safe_open(path / SINGLE, framework="pt") as f:
            weight_map = {k: SINGLE for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    else:
        raise PruningError(f"checkpoint_dir {str(path)!r} has neither {INDEX} nor {SINGLE}")
    for shard in set(weight_map.values()):
        if not (path / shard).is_file():
            raise PruningError(f"{index} names shard {shard!r}, which is not in {str(path)!r}")
    return dict(weight_map)


def _by_shard(weight_map: dict[str, str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, shard in sorted(weight_map.items()):
        out.setdefault(shard, []).append(name)
    return out

