"""Per-layer tables and totals: sparsity, density, compression, FLOPs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .. import masking
from .flops import count_flops


@dataclass(frozen=True)
class LayerStats:
    """One prunable weight: its shape, size, surviving entries and sparsity."""

    name: str
    kind: str
    shape: tuple[int, ...]
    params: int
    nonzero: int

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzero / self.params if self.params else 0.0


def layer_stats(name: str, module: nn.Module, tensor_name: str = "weight") -> LayerStats:
    """Statistics of ``module.<tensor_name>`` as the layer computes it (mask applied)."""
    with torch.no_grad():
        w = getattr(module, tensor_name)
        nonzero = int(torch.count_nonzero(w))
    return LayerStats(name, masking.kind(module), tuple(w.shape), w.numel(), nonzero)


def _all_stats(model: nn.Module) -> list[LayerStats]:
    return [layer_stats(masking.param_name(n, t), m, t) for n, m, t in masking.prunable_tensors(model)]


def sparsity(model: nn.Module) -> float:
    """Fraction of the prunable weights that are zero (pruned), over the whole model.

    Example:
        >>> import torch.nn as nn
        >>> sparsity(nn.Linear(3, 3))
        0.0
    """
    rows = _all_stats(model)
    total = sum(r.params for r in rows)
    return 1.0 - sum(r.nonzero for r in rows) / total if total else 0.0


@dataclass
class Summary:
    """Per-layer table and totals of a model's prunable weights.

    Attributes:
        layers: one row per prunable weight.
        total_params: every parameter of the model (prunable or not).
        flops_dense: FLOPs of one forward pass with no weight pruned, if measured.
        flops: FLOPs with each prunable layer's FLOPs scaled by its density, if measured.
    """

    layers: list[LayerStats]
    total_params: int
    flops_dense: int | None = None
    flops: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def params(self) -> int:
        return sum(r.params for r in self.layers)

    @property
    def nonzero(self) -> int:
        return sum(r.nonzero for r in self.layers)

    @property
    def density(self) -> float:
        return self.nonzero / self.params if self.params else 1.0

    @property
    def sparsity(self) -> float:
        return 1.0 - self.density

    @property
    def compression(self) -> float:
        """``1 / density``: how many times fewer non-zero prunable weights."""
        return 1.0 / self.density if self.density else float("inf")

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        rows = [dict(asdict(r), sparsity=r.sparsity) for r in self.layers]
        return {
            "layers": rows, "params": self.params, "nonzero": self.nonzero,
            "total_params": self.total_params, "density": self.density,
            "sparsity": self.sparsity, "compression": self.compression,
            "flops_dense": self.flops_dense, "flops": self.flops,
        }

    def __str__(self) -> str:
        lines = [format_table(self.layers), ""]
        lines.append(
            f"prunable params {self.params:,}  non-zero {self.nonzero:,}  "
            f"density {self.density:.4f}  sparsity {self.sparsity:.4f}  "
            f"compression {self.compression:.2f}x  (all params {self.total_params:,})"
        )
        if self.flops_dense is not None and self.flops is not None:
            lines.append(f"FLOPs dense {self.flops_dense:,}  after pruning {self.flops:,} "
                         f"({self.flops_dense / max(self.flops, 1):.2f}x fewer)")
        lines.extend(self.notes)
        return "\n".join(lines)

    def markdown(self) -> str:
        """The per-layer table as GitHub-flavoured Markdown."""
        out = ["| layer | type | shape | params | non-zero | sparsity |", "|---|---|---|---:|---:|---:|"]
        for r in self.layers:
            shape = "×".join(map(str, r.shape))
            out.append(f"| {r.name} | {r.kind} | {shape} | {r.params:,} | {r.nonzero:,} | {r.sparsity:.2%} |")
        out.append(f"| **total** | | | {self.params:,} | {self.nonzero:,} | {self.sparsity:.2%} |")
        return "\n".join(out)


def format_table(rows: list[LayerStats]) -> str:
    """Fixed-width text table of layer statistics."""
    head = ("layer", "type", "shape", "params", "non-zero", "sparsity")
    body = [(r.name, r.kind, "x".join(map(str, r.shape)), f"{r.params:,}", f"{r.nonzero:,}",
             f"{r.sparsity:.2%}") for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    fmt = "  ".join(f"{{:<{w}}}" if i < 3 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join(fmt.format(*line) for line in (head, *body))


def summary(model: nn.Module, example_inputs: Any = None) -> Summary:
    """Per-layer table (shape, params, non-zero, sparsity) and totals.

    Args:
        model: any module; its Linear and Conv1d/2d/3d weights are reported.
        example_inputs: a tuple of inputs (or one tensor); when given, FLOPs of one
            forward pass are counted with ``torch.utils.flop_counter``.

    Returns:
        A :class:`Summary`. FLOPs of a masked layer are its dense-equivalent FLOPs
        times its density (what a sparse kernel would do); the dense count is kept
        beside it. Other layers count as they are.

    Example:
        >>> import torch, torch.nn as nn
        >>> s = summary(nn.Linear(4, 2), example_inputs=(torch.ones(1, 4),))
        >>> s.params, s.flops_dense
        (8, 16)
    """
    masking.adopt_torch_pruning(model)  # torch.nn.utils.prune's masks count as ours
    rows = _all_stats(model)
    total = sum(p.numel() for p in model.parameters())
    out = Summary(rows, total)
    if example_inputs is not None:
        per_layer, dense = count_flops(model, example_inputs)
        density = {r.name: (r.nonzero / r.params if r.params else 1.0) for r in rows}
        saved = sum(f * (1.0 - density[n]) for n, f in per_layer.items() if n in density)
        out.flops_dense, out.flops = dense, int(round(dense - saved))
        out.notes.append("FLOPs of masked layers = dense-equivalent FLOPs x density.")
    return out
