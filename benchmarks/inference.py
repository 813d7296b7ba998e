"""Inference from pruned models: file size and CPU latency, dense vs `sc.accelerate` (issue 7).

Models, freshly initialised (seed 0):

- `mlp`: 4096 -> 4096 -> 4096 -> 10 (the zoo `mlp` with `widths=[4096, 4096]`, 33.6M
  weights), magnitude-pruned to 50/80/90/95/99% unstructured, local scope (every layer
  loses the same fraction);
- `vgg`, `resnet-20`, `mobilenet-v2` (zoo defaults, 3x32x32 inputs): 50% of the channels
  removed, `sc.prune(model, 0.5, granularity="channel", scope="local", example_inputs=(x,))`.

Per model and batch size (1 and 64): `fast = sc.accelerate(model, (x,))` picks each layer's
path on that batch (whole-model compaction, CSR, compacted rows/columns or dense), then
the finalized dense model (masks baked in: what you would run without secateurs) and
`fast.model` are timed interleaved, one run of each per round (so a change in machine
load hits both alike): `torch.set_num_threads(2)`, eval mode, `torch.inference_mode()`,
`--warmup` untimed rounds, then the median of `--runs` rounds. Speedup = dense / accelerated.
Files: the unpruned model saved with `sc.save` (dense float32) against the pruned model saved
with `sc.save` (format 2: kept values plus bitmask or CSR indices; for CNNs the compacted model).

The busy share of the machine's CPU by other processes while timing is printed; with 2
threads on 2 cores, any other busy process distorts the figures (see BENCHMARKS.md).

Kernels (issue 19, `--part kernels`): secateurs' own sparse CPU layers against dense, torch CSR and
torch BSR per layer and for the whole MLP, with the bytes they read and the memory-bandwidth limit
(see `benchmarks/_kernels.py`); `--part minilm`: sentences per second of the pretrained MiniLM
encoder, every encoder Linear pruned to 50% unstructured or 2:4, dense against `sc.accelerate`.

Run:  .venv/bin/python benchmarks/inference.py [--quick] [--runs 20] [--warmup 3] [--part all]
      (--quick: 90% and 99% MLP rows, resnet-20 only, 4096x4096 at 90% and 2:4, fewer runs)
"""

from __future__ import annotations

import argparse
import collections
import copy
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import secateurs as sc
import _kernels  # benchmarks/ is the script's directory
from _load import busy_seconds
from secateurs import zoo

SPARSITIES = (0.5, 0.8, 0.9, 0.95, 0.99)
CNNS = ("vgg", "resnet-20", "mobilenet-v2")
BATCHES = (1, 64)
WIDTH = 4096


def file_mb(model: nn.Module) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.safetensors"
        sc.save(model, path)
        return path.stat().st_size / 2**20


def time_pair(a: nn.Module, b: nn.Module, x: torch.Tensor, warmup: int, runs: int) -> tuple[float, float]:
    """Median seconds per forward pass of ``a`` and ``b``, runs interleaved."""
    times: tuple[list[float], list[float]] = ([], [])
    with torch.inference_mode():
        for i in range(warmup + runs):
            for model, out in zip((a, b), times):
                start = time.perf_counter()
                model(x)
                if i >= warmup:
                    out.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def paths(result: sc.AccelerateResult) -> str:
    """``compact model; csr x2, dense x1`` - what accelerate chose."""
    counts = collections.Counter(c.path for c in result.layers)
    layers = ", ".join(f"{p} x{n}" for p, n in sorted(counts.items()))
    head = "compacted model" if result.structure == "compact" else ""
    return "; ".join(part for part in (head, layers) if part) or "dense"


def mlp_models(sparsities: tuple[float, ...]):
    for p in sparsities:
        torch.manual_seed(0)
        model = zoo.model("mlp", in_features=WIDTH, widths=[WIDTH, WIDTH], num_classes=10).eval()
        dense_mb = file_mb(model)
        sc.prune(model, p, scope="local")
        yield "mlp 4096x3", f"{p:.0%} unstructured", model, dense_mb, file_mb(model), (WIDTH,)


def cnn_models(names: tuple[str, ...]):
    for name in names:
        torch.manual_seed(0)
        model = zoo.model(name).eval()
        x = zoo.example_inputs(model)[0]
        dense_mb = file_mb(model)
        sc.prune(model, 0.5, granularity="channel", scope="local", example_inputs=(x,))
        yield name, "50% channels", model, dense_mb, file_mb(sc.compact(model, (x,))), tuple(x.shape[1:])


def run(args: argparse.Namespace) -> list[str]:
    sparsities = (0.9, 0.99) if args.quick else SPARSITIES
    cnns = ("resnet-20",) if args.quick else CNNS
    rows = ["| model | pruned | batch | dense file MB | pruned file MB | size ratio | dense ms | accelerated ms "
            "| speedup | accelerate chose |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    busy = 0.0
    for label, how, model, dense_mb, small_mb, shape in [*mlp_models(sparsities), *cnn_models(cnns)]:
        dense = sc.finalize(copy.deepcopy(model)).eval()
        for batch in BATCHES:
            x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(1))
            result = sc.accelerate(model, (x,), repeats=args.repeats)
            before = _reading()
            t_dense, t_fast = time_pair(dense, result.model, x, args.warmup, args.runs)
            busy = max(busy, _others_share(before, _reading()))
            rows.append(f"| {label} | {how} | {batch} | {dense_mb:.1f} | {small_mb:.2f} | {dense_mb / small_mb:.1f}x "
                        f"| {t_dense * 1e3:.2f} | {t_fast * 1e3:.2f} | {t_dense / t_fast:.2f}x | {paths(result)} |")
            print(rows[-1], flush=True)
    rows.append(f"\nother processes used up to {busy:.0%} of the CPU while timing (0% = a quiet machine)")
    return rows


def minilm(args: argparse.Namespace) -> list[str]:
    """Sentences per second of the MiniLM encoder, pruned, dense against sc.accelerate (all paths)."""
    from secateurs.zoo import text

    sentences = text.real_sentences(16 if args.quick else 64)
    rows = ["| MiniLM encoder | batch | dense sent/s | accelerated sent/s | speedup | accelerate chose |",
            "|---|---:|---:|---:|---:|---|"]
    for how in ("50% unstructured", "2:4"):
        st = copy.deepcopy(text.load_minilm())
        granularity = "2:4" if how == "2:4" else "unstructured"
        sc.prune(st[0].auto_model, 0.5, granularity=granularity, scope="local", layers={"*": None, "encoder.*": 0.5})
        sc.finalize(st[0].auto_model)
        for batch in (1, 16):
            tok = st.tokenize(sentences[:batch])
            result = sc.accelerate(st[0].auto_model, (tok["input_ids"], tok["attention_mask"]), repeats=args.repeats)
            fast = copy.deepcopy(st)
            fast[0].auto_model = result.model
            t_dense, t_fast = _encode_times(st, fast, sentences, batch, args)
            rows.append(f"| {how} | {batch} | {len(sentences) / t_dense:.1f} | {len(sentences) / t_fast:.1f} "
                        f"| {t_dense / t_fast:.2f}x | {paths(result)} |")
            print(rows[-1], flush=True)
    return rows


def _encode_times(a, b, sentences: list[str], batch: int, args: argparse.Namespace) -> tuple[float, float]:
    """Median seconds to encode all `sentences` with `a` and `b`, interleaved."""
    times: tuple[list[float], list[float]] = ([], [])
    with torch.inference_mode():
        for i in range(1 + max(3, args.runs // 4)):
            for model, out in zip((a, b), times):
                start = time.perf_counter()
                model.encode(sentences, batch_size=batch, show_progress_bar=False)
                if i >= 1:
                    out.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def _reading() -> tuple[float, tuple[float, float] | None]:
    return time.perf_counter(), busy_seconds()


def _others_share(before: tuple[float, tuple[float, float] | None],
                  after: tuple[float, tuple[float, float] | None]) -> float:
    """Share of the machine's CPU time that other processes used between two readings."""
    (t0, b0), (t1, b1) = before, after
    if b0 is None or b1 is None or t1 <= t0:
        return 0.0
    others = (b1[0] - b0[0]) - (b1[1] - b0[1])
    return max(0.0, others / ((t1 - t0) * (os.cpu_count() or 1)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer models and runs (about a minute)")
    p.add_argument("--runs", type=int, default=None, help="timed rounds per model (default 20, --quick 5)")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    p.add_argument("--repeats", type=int, default=None, help="sc.accelerate repeats (default 10, --quick 3)")
    p.add_argument("--part", choices=("all", "models", "kernels", "minilm"), default="all",
                   help="models: dense vs sc.accelerate per model; kernels: per-layer kernel table; minilm")
    p.add_argument("--shapes", choices=("all", "layers", "mlp"), default="all",
                   help="--part kernels: the two single layers, the whole MLP, or both")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    args = p.parse_args()
    args.runs = args.runs or (5 if args.quick else 20)
    args.repeats = args.repeats or (3 if args.quick else 10)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, median of {args.runs} runs\n", flush=True)
    rows = []
    if args.part in ("all", "models"):
        rows += run(args)
    if args.part in ("all", "kernels"):
        rows += ["", *_kernels.table(args.quick, args.runs, args.shapes, _reading, _others_share)]
    if args.part in ("all", "minilm"):
        rows += ["", *minilm(args)]
    print("\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
