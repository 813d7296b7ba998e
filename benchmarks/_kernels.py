"""Layer-level proof for secateurs' sparse CPU kernels (issue 19), used by `benchmarks/inference.py --part kernels`.

Per layer shape (out x in: 4096x4096, 1024x4096, and the whole 4096->4096->4096->10 MLP), pattern
(50/80/90/95/99% unstructured, random mask; 2:4), dtype (fp32, bf16) and batch (1, 64): median ms of dense
(`F.linear`), torch CSR (`CsrLinear`), torch BSR (best of the block sizes; `torch.sparse` BSR matmul) and
ours (the faster of `BitmaskLinear` and `Index16Linear`, or `NMLinear` for 2:4; the table names which),
timed interleaved. `MB read` is what ours reads (values, mask or indices, offsets, input); `limit ms` = MB
read / the bandwidth of a plain copy measured in the same run; `of limit` = limit ms / ours ms (1.0 = at the memory-bandwidth limit);
`others` = the share of the CPU other processes used while that row was timed.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from secateurs.inference.fast import bitmask_linear, index16_linear, nm_linear
from secateurs.inference.kernels import CsrLinear

SHAPES = ((4096, 4096), (1024, 4096))
PATTERNS = (0.5, 0.8, 0.9, 0.95, 0.99, "2:4")
BLOCKS = (4, 16, 32)


def bandwidth(mb: int = 512, runs: int = 9) -> float:
    """Bytes per second of a plain copy (read + write counted) of `mb` MB, median of `runs`."""
    src = torch.ones(mb * 2**20 // 4)
    dst = torch.empty_like(src)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - start)
    return 2 * src.numel() * 4 / statistics.median(times)


def pruned_layer(rows: int, cols: int, pattern: float | str, dtype: torch.dtype, seed: int = 0) -> nn.Linear:
    g = torch.Generator().manual_seed(seed)
    layer = nn.Linear(cols, rows, bias=False)
    with torch.no_grad():
        if pattern == "2:4":
            keep = (torch.rand(rows, cols // 4, 4, generator=g).argsort(dim=2) < 2).reshape(rows, cols)
        else:
            keep = torch.rand(rows, cols, generator=g) >= float(pattern)
        layer.weight.mul_(keep)
    return layer.to(dtype).eval()


class _Bsr(nn.Module):
    """torch BSR; a layer whose shape is not a multiple of the block (the MLP's 10-output head) stays dense."""

    def __init__(self, layer: nn.Linear, block: int) -> None:
        super().__init__()
        w = layer.weight.detach()
        self.dense = any(d % block for d in w.shape)
        self.w = w if self.dense else w.to_sparse_bsr((block, block))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dense:
            return F.linear(x, self.w)
        return (self.w @ x.reshape(-1, x.shape[-1]).t()).t()


OURS = ("bitmask", "index16", "n:m")
"""secateurs' layouts; a row reports the fastest that applies (named in the table)."""


def ours(pattern: float | str) -> dict[str, Callable[[nn.Linear], nn.Module | None]]:
    if pattern == "2:4":
        return {"n:m": lambda layer: nm_linear(layer, 2, 4)}
    return {"bitmask": bitmask_linear, "index16": index16_linear}


def bytes_read(module: nn.Module, batch: int, cols: int) -> int:
    return sum(b.numel() * b.element_size() for b in module.buffers()) + batch * cols * 4


def time_all(runs: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {k: [] for k in runs}
    with torch.inference_mode():
        for i in range(rounds + 2):
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                if i >= 2:
                    samples[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in samples.items()}


def candidates(layers: list[nn.Linear], pattern: float | str, blocks: tuple[int, ...]) -> dict[str, nn.Module]:
    """`{method: model}` with every layer of `layers` (a chain, ReLU between) executed that way."""
    def chain(build: Callable[[nn.Linear], nn.Module | None]) -> nn.Module | None:
        mods = [build(layer) for layer in layers]
        if any(m is None for m in mods):
            return None
        return nn.Sequential(*[x for m in mods for x in (m, nn.ReLU())][:-1])

    out: dict[str, nn.Module | None] = {"dense": chain(lambda layer: layer)}
    out.update({name: chain(build) for name, build in ours(pattern).items()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: sparse CSR/BSR support is in beta
        out["csr"] = chain(CsrLinear)
        for b in blocks:
            out[f"bsr{b}"] = chain(lambda layer, b=b: _Bsr(layer, b))
    return {k: v for k, v in out.items() if v is not None}


def table(quick: bool, rounds: int, which: str, reading: Callable[[], object], share: Callable[[object, object], float]) -> list[str]:
    bw = bandwidth()
    rows = [f"copy bandwidth (same run): {bw / 1e9:.1f} GB/s\n",
            "| layer | pattern | dtype | batch | dense ms | csr ms | bsr ms (block) | ours ms (layout) | x dense | x csr "
            "| MB read | limit ms | of limit | others |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    busy = 0.0
    patterns = (0.9, "2:4") if quick else PATTERNS
    blocks = (16,) if quick else BLOCKS
    shapes = [("4096x4096", [(4096, 4096)]), ("1024x4096", [(1024, 4096)]),
              ("mlp 4096x3", [(4096, 4096), (4096, 4096), (10, 4096)])]
    shapes = shapes[:1] if quick else shapes[:2] if which == "layers" else shapes[2:] if which == "mlp" else shapes
    for label, dims in shapes:
        for pattern in patterns:
            for dtype in (torch.float32, torch.bfloat16):
                layers = [pruned_layer(r, c, pattern, dtype, seed=i) for i, (r, c) in enumerate(dims)]
                mods = candidates(layers, pattern, blocks)
                for batch in (1, 64):
                    x = torch.randn(batch, dims[0][1]).to(dtype)
                    runs = {}
                    for k, m in mods.items():
                        try:
                            m(x)
                            runs[k] = lambda m=m: m(x)
                        except (RuntimeError, NotImplementedError):  # e.g. no bf16 BSR kernel
                            pass
                    before = reading()
                    t = time_all(runs, rounds)
                    cell = share(before, reading())
                    busy = max(busy, cell)
                    rows.append(_row(label, pattern, dtype, batch, t, mods, bw, dims) + f" {cell:.0%} |")
                    print(rows[-1], flush=True)
    rows.append(f"\nother processes used up to {busy:.0%} of the CPU while timing (0% = a quiet machine)")
    return rows


def _row(label: str, pattern: float | str, dtype: torch.dtype, batch: int, t: dict[str, float],
         mods: dict[str, nn.Module], bw: float, dims: list[tuple[int, int]]) -> str:
    bsr = {k: v for k, v in t.items() if k.startswith("bsr")}
    best = min(bsr, key=bsr.get) if bsr else None
    ms = lambda k: f"{t[k] * 1e3:.2f}" if k in t else "-"  # noqa: E731
    mine = [k for k in OURS if k in t]
    if mine:  # the fastest of our layouts, under the name "ours"
        t = {**t, "ours": min(t[k] for k in mine)}
        layout = min(mine, key=t.get)
    read = bytes_read(mods[layout], batch, dims[0][1]) if mine else 0
    limit = read / bw
    name = "2:4" if pattern == "2:4" else f"{float(pattern):.0%}"
    bsr_cell = f"{bsr[best] * 1e3:.2f} ({best[3:]})" if best else "-"
    x_dense = f"{t['dense'] / t['ours']:.2f}x" if "ours" in t else "-"
    x_csr = f"{t['csr'] / t['ours']:.2f}x" if "ours" in t and "csr" in t else "-"
    of_limit = f"{limit / t['ours']:.2f}" if "ours" in t else "-"
    return (f"| {label} | {name} | {str(dtype).removeprefix('torch.')} | {batch} | {ms('dense')} | {ms('csr')} "
            f"| {bsr_cell} | {ms('ours')} ({layout if mine else '-'}) | {x_dense} | {x_csr} | {read / 1e6:.1f} | {limit * 1e3:.2f} | {of_limit} |")
