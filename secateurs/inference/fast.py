"""Sparse CPU layers on secateurs' own kernels: a bitmask layout for unstructured sparsity, an N:M one.

Both compute ``x Wᵀ + b`` for a pruned ``nn.Linear`` on inputs of any leading shape, with
float32 or bfloat16 weights (accumulating in float32), multi-threaded (``torch.set_num_threads``),
AVX2+FMA where the CPU has it (checked at run time) and portable C++ elsewhere:

- :class:`BitmaskLinear`: the kept values in row-major order, a bitmask (1 bit per weight,
  most significant bit first, the layout ``secateurs.storage.sparse`` saves) and one int64
  offset per row. A batch-1 product reads ``4·k + n/8`` bytes (float32; ``2·k + n/8`` in
  bfloat16) for ``k`` kept of ``n`` weights, against ``4·n`` dense: at 90% sparsity the
  memory-bound limit is 7.6× dense, against 5× for CSR with int32 indices.
- :class:`NMLinear`: exactly ``n`` values per group of ``m`` consecutive inputs (2:4: half the
  weights) and each one's place in its group, 2 bits (``m`` ≤ 4) or 4 bits (``m`` ≤ 16).

Their tensors are buffers: ``copy.deepcopy`` and ``state_dict`` work. Build them with
:func:`bitmask_linear` / :func:`nm_linear`, which give ``None`` where the kernels cannot run
(not compiled here, a CUDA weight, another dtype); :func:`load_bitmask_linear` builds one
straight from a file written by ``sc.save``, without the dense weight.
"""

from __future__ import annotations

import json
import math
import os

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import Tensor, nn

from ..errors import PruningError
from ..storage import sparse as sparse_format
from .build import extension

DTYPES = (torch.float32, torch.bfloat16)
PAD = 16  # the kernels read 8 (AVX2) or 16 (AVX-512) values at a time: the value buffer ends with 16 zeros
MAX_INDEX16_COLUMNS = 65536
_POPCOUNT = torch.tensor([bin(i).count("1") for i in range(256)], dtype=torch.int32)


def _applies(layer: nn.Linear) -> bool:
    w = layer.weight
    return extension() is not None and w.device.type == "cpu" and w.dtype in DTYPES and w.dim() == 2


def _rows(x: Tensor, k: int, padded: int) -> Tensor:
    """``x`` as a contiguous float32 [rows, padded] matrix (zeros after column ``k``).

    Each torch call here costs microseconds right after a kernel (its threads are still winding down), so a
    batch of float32 rows that is already in shape passes through untouched.
    """
    x2 = x if x.dim() == 2 else x.reshape(-1, k)
    if x2.dtype != torch.float32:
        x2 = x2.to(torch.float32)
    if padded != k:
        x2 = F.pad(x2, (0, padded - k))
    return x2 if x2.is_contiguous() else x2.contiguous()


class _SparseLinear(nn.Module):
    """What both layouts share: shapes, the bias, the forward around one kernel call."""

    def __init__(self, in_features: int, out_features: int, bias: Tensor | None, dtype: torch.dtype) -> None:
        super().__init__()
        self.in_features, self.out_features, self.dtype = in_features, out_features, dtype
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def _product(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        if x.shape[-1] != self.in_features:
            raise RuntimeError(f"expected inputs with {self.in_features} features, got shape {tuple(x.shape)}")
        if x.numel() == 0 or self.out_features == 0:
            y = x.new_zeros(*lead, self.out_features, dtype=torch.float32)
        else:
            y = self._product(x)
            if x.dim() != 2:
                y = y.reshape(*lead, self.out_features)
        if self.bias is not None:
            y = y + self.bias.to(torch.float32)
        out = torch.promote_types(x.dtype, self.dtype)
        return y if y.dtype == out else y.to(out)


class BitmaskLinear(_SparseLinear):
    """A Linear stored as kept values + a row-aligned bitmask + row offsets; see the module docstring.

    Example:
        >>> layer = nn.Linear(16, 2)
        >>> with torch.no_grad():
        ...     _ = layer.weight.mul_((torch.arange(32).reshape(2, 16) % 3 == 0).float())
        >>> fast = bitmask_linear(layer)
        >>> fast is None or torch.allclose(fast(torch.ones(3, 16)), layer(torch.ones(3, 16)), atol=1e-6)
        True
    """

    def __init__(self, mask: Tensor, values: Tensor, in_features: int, bias: Tensor | None) -> None:
        rows = mask.shape[0]
        super().__init__(in_features, rows, bias, values.dtype)
        counts = _POPCOUNT[mask.reshape(-1).int()].reshape(rows, mask.shape[1]).sum(dim=1)
        offsets = torch.zeros(rows + 1, dtype=torch.int64)
        torch.cumsum(counts, 0, out=offsets[1:])
        if int(offsets[-1]) != values.numel():
            raise PruningError(f"values: the bitmask keeps {int(offsets[-1])} weights, got {values.numel()} values")
        self.register_buffer("mask", mask.contiguous())
        self.register_buffer("values", torch.cat([values.reshape(-1), values.new_zeros(PAD)]))
        self.register_buffer("offsets", offsets)

    def _product(self, x: Tensor) -> Tensor:
        return extension().bitmask_mm(self.mask, self.values, self.offsets,
                                      _rows(x, self.in_features, self.mask.shape[1] * 8))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"nnz={self.values.numel() - PAD}, dtype={self.dtype}")


def bitmask_linear(layer: nn.Linear) -> BitmaskLinear | None:
    """A :class:`BitmaskLinear` for ``layer``, or ``None`` where the kernels do not apply."""
    if not _applies(layer):
        return None
    w = layer.weight.detach()
    rows, cols = w.shape
    keep = w != 0
    padded = F.pad(keep, (0, (-cols) % 8)) if cols % 8 else keep
    mask = sparse_format.pack(padded).reshape(rows, padded.shape[1] // 8)
    return BitmaskLinear(mask, w[keep], cols, None if layer.bias is None else layer.bias.detach())


class Index16Linear(_SparseLinear):
    """A Linear stored as kept values, each one's column as a 16-bit integer, and row offsets.

    Reads ``4·k + 2·k`` bytes for ``k`` kept weights (float32; ``2·k + 2·k`` in bfloat16) and does work in
    proportion to ``k`` only: at high sparsity it beats :class:`BitmaskLinear`, whose kernel visits every
    column. At most 65,536 inputs. Build it with :func:`index16_linear`, or from a :class:`BitmaskLinear`
    (e.g. one loaded from a file) with :meth:`from_bitmask`, without the dense weight.
    """

    def __init__(self, idx: Tensor, values: Tensor, offsets: Tensor, in_features: int, bias: Tensor | None) -> None:
        super().__init__(in_features, offsets.numel() - 1, bias, values.dtype)
        self.register_buffer("idx", idx.contiguous())
        self.register_buffer("values", values.contiguous())
        self.register_buffer("offsets", offsets.contiguous())

    @classmethod
    def from_bitmask(cls, layer: BitmaskLinear) -> Index16Linear:
        """The same weights as ``layer`` in the 16-bit index layout (its values and offsets are shared)."""
        nnz = layer.values.numel() - PAD
        idx = extension().index16_from_bitmask(layer.mask, nnz)
        return cls(idx, layer.values, layer.offsets, layer.in_features, layer.bias)

    def _product(self, x: Tensor) -> Tensor:
        return extension().index16_mm(self.idx, self.values, self.offsets, _rows(x, self.in_features,
                                                                                 self.in_features))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"nnz={self.values.numel() - PAD}, dtype={self.dtype}")


def index16_linear(layer: nn.Linear) -> Index16Linear | None:
    """An :class:`Index16Linear` for ``layer``, or ``None`` where the kernels do not apply (or > 65,536 inputs)."""
    if layer.in_features > MAX_INDEX16_COLUMNS:
        return None
    packed = bitmask_linear(layer)
    return None if packed is None else Index16Linear.from_bitmask(packed)


class NMLinear(_SparseLinear):
    """A Linear with at most ``n`` non-zeros in every ``m`` consecutive inputs, stored as exactly ``n``
    values per group plus each one's place in its group (``bits`` = 2 or 4 per value)."""

    def __init__(self, values: Tensor, idx: Tensor, n: int, m: int, in_features: int, bias: Tensor | None) -> None:
        super().__init__(in_features, values.shape[0], bias, values.dtype)
        self.n, self.m, self.bits = n, m, 2 if m <= 4 else 4
        self.register_buffer("values", values.contiguous())
        self.register_buffer("idx", idx.contiguous())

    def _product(self, x: Tensor) -> Tensor:
        return extension().nm_mm(self.idx, self.values, _rows(x, self.in_features, self.in_features),
                                 self.n, self.m, self.bits)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"{self.n}:{self.m}, dtype={self.dtype}")


def nm_pattern(weight: Tensor, ms: tuple[int, ...] = (4, 8, 16)) -> tuple[int, int] | None:
    """The ``(n, m)`` that stores ``weight`` in the fewest bytes with ``n / m`` ≤ 1/2, or ``None``."""
    rows, cols = weight.shape
    best: tuple[float, tuple[int, int]] | None = None
    for m in ms:
        if cols % m or cols == 0:
            continue
        n = max(1, int((weight.detach() != 0).reshape(rows, -1, m).sum(dim=2).max()))
        if n * 2 > m:
            continue
        cost = n / m * (weight.element_size() + (2 if m <= 4 else 4) / 8)
        if best is None or cost < best[0]:
            best = (cost, (n, m))
    return None if best is None else best[1]


def nm_linear(layer: nn.Linear, n: int | None = None, m: int | None = None) -> NMLinear | None:
    """An :class:`NMLinear` for ``layer`` (``n:m`` found by :func:`nm_pattern` unless given), or ``None``
    where the kernels do not apply or the weight is not ``n:m`` sparse."""
    if not _applies(layer) or layer.out_features == 0:
        return None
    w = layer.weight.detach()
    found = nm_pattern(w) if n is None or m is None else (n, m)
    if found is None:
        return None
    n, m = found
    rows, cols = w.shape
    if cols % m or m > 16 or not 0 < n <= m:
        return None
    groups = w.reshape(rows, -1, m)
    keep = groups != 0
    if int(keep.sum(dim=2).max()) > n:
        return None
    # the kept positions of each group first, in order (stable sort of "not kept"), then pruned ones as padding
    pos = torch.sort((~keep).to(torch.uint8), dim=2, stable=True).indices[..., :n]
    values = torch.gather(groups, 2, pos).reshape(rows, -1)
    idx = _pack_indices(pos.reshape(rows, -1), 2 if m <= 4 else 4)
    return NMLinear(values, idx, n, m, cols, None if layer.bias is None else layer.bias.detach())


def _pack_indices(pos: Tensor, bits: int) -> Tensor:
    """[rows, L] small integers -> uint8 [rows, ⌈L/8⌉·bits], ``bits`` each, least significant first."""
    per = 8 // bits
    rows, length = pos.shape
    pos = F.pad(pos, (0, (-length) % 8)).to(torch.int32).reshape(rows, -1, per)
    shifts = torch.arange(per, dtype=torch.int32) * bits
    return (pos << shifts).sum(dim=2).to(torch.uint8)


def load_bitmask_linear(path: str | os.PathLike[str], name: str) -> BitmaskLinear:
    """The Linear ``name`` of a file written by ``sc.save``, as a :class:`BitmaskLinear`, without a dense copy.

    The file stores a masked weight as its kept values plus the mask packed 8 to a byte
    (most significant bit first) or, below about 3% density, CSR indices. When ``in_features``
    is a multiple of 8 the stored bitmask *is* the kernel's mask (row-aligned) and is used as
    it is; otherwise, or from CSR, the mask is rebuilt row-aligned from the stored parts. The
    kept values are used as they are. Memory: the stored parts plus one uint8 per mask byte;
    never a dense ``out × in`` tensor.

    Args:
        path: a file written by ``sc.save``.
        name: the Linear's qualified module name (``"fc1"``, ``"encoder.0.dense"``).

    Raises:
        PruningError: the file does not hold a masked 2-D weight ``name + ".weight"``, or the
            kernels are not available here.
    """
    if extension() is None:
        raise PruningError("load_bitmask_linear: the sparse CPU kernels are not available on this machine")
    key = f"{name}.weight"
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get("sparse", "{}")).get(key)
        if meta is None or len(meta["shape"]) != 2:
            raise PruningError(f"name: {str(path)!r} holds no masked 2-D weight {key!r}")
        parts = {k: f.get_tensor(k) for k in f.keys() if k.startswith(key + ".")}
        bias = f.get_tensor(f"{name}.bias") if f"{name}.bias" in f.keys() else None
    rows, cols = meta["shape"]
    return BitmaskLinear(_row_mask(parts, key, meta["layout"], rows, cols), parts[f"{key}.values"], cols, bias)


def _row_mask(parts: dict[str, Tensor], key: str, layout: str, rows: int, cols: int) -> Tensor:
    """The kernel's row-aligned bitmask [rows, ⌈cols/8⌉] from the stored bitmask or CSR parts."""
    width = math.ceil(cols / 8)
    if layout == "bitmask" and cols % 8 == 0:
        return parts[f"{key}.bits"][: rows * width].reshape(rows, width)
    if layout == "bitmask":
        flat = sparse_format.unpack(parts[f"{key}.bits"], rows * cols).reshape(rows, cols)
        return sparse_format.pack(F.pad(flat, (0, width * 8 - cols))).reshape(rows, width)
    crow, col = parts[f"{key}.crow"].long(), parts[f"{key}.col"].long()
    row = torch.repeat_interleave(torch.arange(rows), crow[1:] - crow[:-1])
    mask = torch.zeros(rows * width, dtype=torch.uint8)
    mask.index_put_((row * width + col // 8,), (128 >> (col % 8)).to(torch.uint8), accumulate=True)
    return mask.reshape(rows, width)


__all__ = ["DTYPES", "MAX_INDEX16_COLUMNS", "BitmaskLinear", "Index16Linear", "NMLinear", "bitmask_linear",
           "index16_linear", "load_bitmask_linear", "nm_linear", "nm_pattern"]
