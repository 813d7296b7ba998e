"""Prune a causal language model layer by layer, streaming from its shards (``sc.llm.prune``).

The procedure (SparseGPT's sequential one, on the CPU, with only one layer in memory):

1. embed the calibration windows (the embedding matrix is read alone, then dropped);
2. for each decoder layer: read it from the shards, collect its Linear inputs on the
   current activations, prune it, run the activations through the *pruned* layer (they
   become the next layer's inputs), write it as its own output shard, free it;
3. write the embeddings, final norm and head unchanged, the config, the tokenizer files
   and, last, the index.

Resuming replays the finished layers from the output shards to rebuild the activations.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor

from .. import progress
from ..errors import PruningError
from . import layerwise, owl
from .activations import DEFAULT_BUDGET, Geometry, Pair
from .checkpoint import Checkpoint
from .output import Record, finish, layer_file, write_shard
from .text import CALIBRATION, token_ids, windows

ALLOCATIONS = ("uniform", "owl")


@dataclass
class LLMPruneResult:
    """What :func:`prune` did.

    Attributes:
        out_dir: the output folder (loads with ``from_pretrained``).
        method, sparsity, allocation: as asked.
        layer_sparsity: each decoder layer's sparsity target (equal under ``uniform``).
        layers: per layer: seconds reading, computing and writing, resident memory after it.
        resumed_from: the first layer pruned by this call (0 unless resumed).
        peak_rss_bytes: the process's peak resident memory.
    """

    out_dir: Path
    method: str
    sparsity: float | str
    allocation: str
    layer_sparsity: list[float]
    layers: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int = 0
    peak_rss_bytes: int = 0


def rss_bytes() -> int:
    """Resident memory of this process now (Linux), else its peak."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except OSError:  # pragma: no cover - not Linux
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """Peak resident memory of this process (bytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def embed(ckpt: Checkpoint, batches: Iterable[Tensor], pair: Pair) -> None:
    """Put the embeddings of every batch of token ids into ``pair.inputs``."""
    weight = ckpt.read(["model.embed_tokens.weight"])["model.embed_tokens.weight"]  # stored dtype: no float copy
    for ids in batches:
        pair.inputs.append(F.embedding(ids, weight).float())


def propagate(layer: torch.nn.Module, geometry: Geometry, pair: Pair) -> None:
    """Run the inputs through ``layer`` into the outputs, then make them the next inputs."""
    for x in pair.inputs:
        pair.outputs.append(geometry.forward(layer, x))
    pair.swap()


def calibration_batches(ckpt: Checkpoint, calibration: str | Path | Tensor | None, samples: int, seqlen: int,
                        batch_size: int) -> list[Tensor]:
    """The calibration windows ``(samples, seqlen)`` in batches of ``batch_size``."""
    if isinstance(calibration, Tensor) and calibration.dim() == 2:
        ids = calibration.long()
    else:
        ids = windows(token_ids(ckpt.path, calibration, CALIBRATION), samples, seqlen)
    if int(ids.max()) >= ckpt.config.vocab_size or int(ids.min()) < 0:
        raise PruningError(f"calibration has token ids outside [0, {ckpt.config.vocab_size})")
    return list(ids.split(batch_size))


def _check(sparsity: float | str, method: str, allocation: str, batch_size: int) -> layerwise.Target:
    goal = layerwise.target(sparsity)
    layerwise.check_method(method)
    if allocation not in ALLOCATIONS:
        raise PruningError(f"allocation {allocation!r} is not allowed; allowed: {', '.join(ALLOCATIONS)}")
    if allocation == "owl" and (goal.nm is not None or method == "magnitude"):
        raise PruningError(f"allocation 'owl' needs an unstructured sparsity and a method using activations; "
                           f"got sparsity={sparsity!r}, method={method!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise PruningError(f"batch_size must be a positive int, got {batch_size!r}")
    return goal


def prune(checkpoint_dir: str | Path, out_dir: str | Path, sparsity: float | str = 0.5, method: str = "sparsegpt",
          calibration: str | Path | Tensor | None = None, allocation: str = "uniform", *, samples: int = 64,
          seqlen: int = 512, batch_size: int = 8, memory_budget: int = DEFAULT_BUDGET,
          show_progress: bool = True) -> LLMPruneResult:
    """Prune a sharded causal LM layer by layer, reading and writing one decoder layer at a time.

    Args:
        checkpoint_dir: a Hugging Face folder (``config.json``, ``*.safetensors`` and their index)
            of a Llama-layout model (``llama``, ``mistral``, ``qwen2``).
        out_dir: where the pruned model is written (a folder ``from_pretrained`` loads).
        sparsity: a fraction in (0, 1) every output row loses, or ``"N:M"`` along the input dimension.
        method: ``"sparsegpt"`` (OBS scores and SparseGPT's update of the kept weights),
            ``"wanda"`` (``|W|·‖X‖``) or ``"magnitude"`` (``|W|``, no calibration).
        calibration: token ids ``(samples, seqlen)``, a text file, a string, or ``None`` for the
            bundled standard-library text; tokenized with the checkpoint's tokenizer.
        allocation: ``"uniform"`` (each layer ``sparsity``) or ``"owl"`` (outlier-weighted).
        samples, seqlen: calibration windows taken from text.
        batch_size: windows per forward pass.
        memory_budget: bytes one set of activations may use before it is spilled to disk.
        show_progress: progress per layer (time and memory beside the bar).

    Returns:
        A :class:`LLMPruneResult`; the same record is kept in ``out_dir/secateurs-llm.json``.

    Raises:
        PruningError: a bad argument or checkpoint (one line naming it).
    """
    goal = _check(sparsity, method, allocation, batch_size)
    ckpt = Checkpoint(checkpoint_dir)
    out = Path(out_dir)
    if out.resolve() == ckpt.path.resolve():
        raise PruningError(f"out_dir {str(out_dir)!r} is the checkpoint itself; pass another folder")
    batches = [] if method == "magnitude" else calibration_batches(ckpt, calibration, samples, seqlen, batch_size)
    calib_id = layerwise.fingerprint(batches)
    inputs = {"checkpoint": ckpt.identity, "method": method, "sparsity": str(sparsity),
              "calibration": calib_id, "allocation": allocation}
    out.mkdir(parents=True, exist_ok=True)
    record = Record(out, inputs)
    if record.data["sparsities"] is None:
        record.data["sparsities"] = _allocate(ckpt, goal, allocation, batches, memory_budget)
        record.save()
    result = LLMPruneResult(out, method, sparsity, allocation, list(record.data["sparsities"]),
                            resumed_from=record.done)
    if not record.data["complete"]:
        _run(ckpt, out, record, goal, method, batches, memory_budget, show_progress)
    result.layers = list(record.data["layers"])
    result.peak_rss_bytes = peak_rss_bytes()
    return result


def _allocate(ckpt: Checkpoint, goal: layerwise.Target, allocation: str, batches: list[Tensor],
              budget: int) -> list[float]:
    if allocation == "uniform":
        return [goal.sparsity] * ckpt.n_layers
    geometry = Geometry(ckpt.skeleton, ckpt.config)
    ratios = []
    with _pair(ckpt, batches, budget) as pair:
        for i in range(ckpt.n_layers):
            layer = ckpt.layer(i)
            ratios.append(owl.outlier_ratio(layer, pair.inputs, geometry.forward))
            propagate(layer, geometry, pair)
            ckpt.release(i)
    return owl.allocate(ratios, goal.sparsity)


class _pair:
    """A :class:`Pair` holding the embedded batches, closed on exit."""

    def __init__(self, ckpt: Checkpoint, batches: list[Tensor], budget: int) -> None:
        hidden = ckpt.config.hidden_size
        self.pair = Pair(sum(b.numel() for b in batches) * hidden * 4, budget)
        embed(ckpt, batches, self.pair)

    def __enter__(self) -> Pair:
        return self.pair

    def __exit__(self, *_: object) -> None:
        self.pair.close()


def _run(ckpt: Checkpoint, out: Path, record: Record, goal: layerwise.Target, method: str,
         batches: list[Tensor], budget: int, show: bool) -> None:
    geometry = Geometry(ckpt.skeleton, ckpt.config)
    sparsities = record.data["sparsities"]
    with _pair(ckpt, batches, budget) as pair, progress.Progress(ckpt.n_layers, "llm prune", "layer", show) as bar:
        for i in range(record.done):  # replay the finished layers to rebuild the activations
            if batches:
                propagate(ckpt.layer(i, _read_output(ckpt, out, i)), geometry, pair)
                ckpt.release(i)
            bar.update()
        for i in range(record.done, ckpt.n_layers):
            entry = _prune_one(ckpt, out, i, geometry, pair, method, goal, sparsities[i])
            record.add(entry)
            bar.set_postfix_str(f"layer {i}: {entry['compute_s']:.1f}s, rss {entry['rss_bytes'] / 2**30:.2f} GiB")
            bar.update()
    finish(ckpt, out, record)


def _read_output(ckpt: Checkpoint, out: Path, i: int) -> dict[str, Tensor]:
    return load_file(str(out / layer_file(i)))


def _prune_one(ckpt: Checkpoint, out: Path, i: int, geometry: Geometry, pair: Pair, method: str,
               goal: layerwise.Target, sparsity: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    tensors = ckpt.layer_tensors(i)
    prefix = f"model.layers.{i}."
    dtypes = {n[len(prefix):]: t.dtype for n, t in tensors.items()}
    layer = ckpt.layer(i, tensors)
    del tensors
    t1 = time.perf_counter()
    layerwise.prune_layer(layer, pair.inputs, geometry.forward, method, goal, sparsity)
    layerwise.round_to(layer, dtypes)
    if pair.inputs.count:
        propagate(layer, geometry, pair)
    t2 = time.perf_counter()
    state = {prefix + n: t.detach().to(dtypes.get(n, t.dtype)) for n, t in layer.state_dict().items()}
    write_shard(out / layer_file(i), state)
    del state
    ckpt.release(i)
    t3 = time.perf_counter()
    return {"layer": i, "sparsity": sparsity, "read_s": t1 - t0, "compute_s": t2 - t1, "write_s": t3 - t2,
            "rss_bytes": rss_bytes()}
