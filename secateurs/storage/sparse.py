"""Compact storage of pruned weights: kept values plus a bitmask or CSR indices.

A masked weight of ``n`` entries with ``k`` kept is stored as its ``k`` kept values
(row-major order) and either

- ``bitmask``: the mask packed 8 entries to a byte (``n / 8`` bytes), or
- ``csr``: per row the number of kept entries so far (``crow``, rows + 1) and the
  column of each kept entry (``col``), both int32 —

whichever is smaller for that tensor (CSR wins below about 3% density). Decoding
gives back the exact values and mask: weights are bit-identical after loading.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

_BITS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)


def pack(mask: Tensor) -> Tensor:
    """Bool tensor -> uint8 bytes, 8 entries each, most significant bit first."""
    flat = mask.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, torch.zeros(pad, dtype=torch.uint8)])
    return (flat.reshape(-1, 8) * _BITS).sum(dim=1, dtype=torch.uint8)


def unpack(bits: Tensor, n: int) -> Tensor:
    """Inverse of :func:`pack`: the first ``n`` entries as bool."""
    return ((bits.reshape(-1, 1) & _BITS) != 0).reshape(-1)[:n]


def encode(name: str, weight: Tensor, mask: Tensor) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors to store for ``weight`` under ``mask`` and the header entry that describes them."""
    w, m = weight.detach().cpu().contiguous(), mask.detach().cpu().to(torch.bool)
    values = w[m].contiguous()
    rows = w.shape[0] if w.dim() > 1 else 1
    n, k = w.numel(), values.numel()
    meta = {"shape": list(w.shape), "dtype": str(w.dtype).removeprefix("torch.")}
    if 4 * (rows + 1 + k) < math.ceil(n / 8) and n < 2**31:
        m2 = m.reshape(rows, -1)
        crow = torch.cat([torch.zeros(1, dtype=torch.int64), m2.sum(dim=1).cumsum(0)]).to(torch.int32)
        col = m2.nonzero()[:, 1].to(torch.int32)
        return {f"{name}.values": values, f"{name}.crow": crow, f"{name}.col": col}, {**meta, "layout": "csr"}
    return {f"{name}.values": values, f"{name}.bits": pack(m)}, {**meta, "layout": "bitmask"}


CSR_SPAN = 4096
"""A CSR entry may describe a weight of at most this many entries per stored int32 (plus :data:`CSR_BASE`):
an all-but-empty CSR header cannot ask for terabytes. ``encode`` picks CSR below ~3% density, far above."""

CSR_BASE = 2**22

_DTYPES = {"float32", "float16", "bfloat16", "float64"}


class DamagedError(ValueError):
    """A sparse entry that does not describe the tensors stored beside it (the message says which field)."""


def _shape(name: str, meta: Any) -> tuple[int, ...]:
    if not isinstance(meta, dict) or meta.get("layout") not in ("csr", "bitmask"):
        raise DamagedError(f"{name}: layout must be 'csr' or 'bitmask', got {str(meta)[:60]}")
    shape = meta.get("shape")
    if (not isinstance(shape, list) or not 1 <= len(shape) <= 8
            or not all(type(d) is int and 0 <= d < 2**40 for d in shape)):
        raise DamagedError(f"{name}: shape must be 1 to 8 non-negative integers, got {str(shape)[:60]}")
    if meta.get("dtype") not in _DTYPES:
        raise DamagedError(f"{name}: dtype must be one of {sorted(_DTYPES)}, got {str(meta.get('dtype'))[:30]!r}")
    return tuple(shape)


def check(name: str, stored: dict[str, tuple[int, ...]], meta: Any) -> tuple[int, ...]:
    """The dense shape ``meta`` describes, once its sizes are checked against the ``stored`` tensors' shapes
    (read from the file's header, before any data): decoding it then allocates at most a constant times
    the stored tensors' size.

    Raises:
        DamagedError: a field that disagrees with the stored tensors, naming it.
    """
    shape = _shape(name, meta)
    n = math.prod(shape)
    values = stored.get(f"{name}.values")
    if values is None or len(values) != 1 or values[0] > n:
        raise DamagedError(f"{name}.values: expected at most {n} values for shape {list(shape)}, got {values}")
    if meta["layout"] == "bitmask":
        bits = stored.get(f"{name}.bits")
        if bits is None or bits != (math.ceil(n / 8),):
            raise DamagedError(f"{name}: shape {list(shape)} needs {math.ceil(n / 8)} mask bytes, the file has {bits}")
        return shape
    rows = shape[0] if len(shape) > 1 else 1
    crow, col = stored.get(f"{name}.crow"), stored.get(f"{name}.col")
    if crow != (rows + 1,) or col != values:
        raise DamagedError(f"{name}: shape {list(shape)} needs crow of {rows + 1} and col of {values} entries, "
                           f"the file has {crow} and {col}")
    if n > CSR_BASE + CSR_SPAN * (rows + 1 + values[0]):
        raise DamagedError(f"{name}: shape {list(shape)} is too large for the {rows + 1 + values[0]} CSR entries "
                           f"stored")
    return shape


def decode(name: str, tensors: dict[str, Tensor], meta: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """``(weight with pruned entries 0, bool mask)`` from what :func:`encode` stored.

    Raises:
        DamagedError: sizes, indices or counts that disagree (checked before the dense weight is allocated).
    """
    shape = check(name, {k: tuple(v.shape) for k, v in tensors.items() if k.startswith(name + ".")}, meta)
    n = math.prod(shape)
    values = tensors.pop(f"{name}.values")
    if str(values.dtype).removeprefix("torch.") != meta["dtype"]:
        raise DamagedError(f"{name}.values: dtype {values.dtype} differs from the header's {meta['dtype']}")
    if meta["layout"] == "csr":
        crow, col = tensors.pop(f"{name}.crow").long(), tensors.pop(f"{name}.col").long()
        rows = crow.numel() - 1
        counts = crow[1:] - crow[:-1]
        cols = n // max(rows, 1)
        if crow[0] != 0 or crow[-1] != values.numel() or bool((counts < 0).any()) or bool((counts > cols).any()):
            raise DamagedError(f"{name}.crow: must rise from 0 to {values.numel()} by at most {cols} a row")
        if col.numel() and (int(col.min()) < 0 or int(col.max()) >= cols):
            raise DamagedError(f"{name}.col: column indices must lie in [0, {cols})")
        row = torch.repeat_interleave(torch.arange(rows), counts)
        mask = torch.zeros(rows, cols, dtype=torch.bool)
        mask[row, col] = True
        mask = mask.reshape(-1)
    else:
        mask = unpack(tensors.pop(f"{name}.bits"), n)
    if int(mask.sum()) != values.numel():
        raise DamagedError(f"{name}: the mask keeps {int(mask.sum())} entries, {values.numel()} values are stored")
    weight = torch.zeros(n, dtype=values.dtype)
    weight[mask] = values
    return weight.reshape(shape), mask.reshape(shape)
