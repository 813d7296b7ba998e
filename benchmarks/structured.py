"""Structured pruning and compaction: secateurs vs Torch-Pruning on the zoo CNNs (issue 4).

For each zoo CNN (`vgg`, `resnet-20`, `mobilenet-v2` with default arguments and
3x32x32 inputs, and `lenet-5` with its default 1x28x28 inputs), freshly
initialised (seed 0), 50% of the channels are removed, magnitude criterion,
local scope, the final Linear (the logits) kept whole:

- secateurs: `sc.prune(model, 0.5, granularity="channel", scope="local",
  example_inputs=(x,))` then `small = sc.compact(model, (x,))`. Time to prune is
  the two calls together. We print the max abs difference between the masked
  model's and the compacted model's outputs on the batch of 32.
- Torch-Pruning (`torch_pruning`, if installed): `tp.pruner.BasePruner` (what
  `MetaPruner` / `MagnitudePruner` alias in 1.6) with
  `tp.importance.MagnitudeImportance(p=1)`, `pruning_ratio=0.5`,
  `global_pruning=False`, `ignored_layers=[final Linear]`, on a copy of the same
  dense model. Time to prune is the constructor (which traces the model and
  builds its dependency graph) plus `pruner.step()`. An exception is recorded as
  "fails: <type: first line>" instead of stopping the run.

For the dense baseline and each pruned model we report parameters (sum of
numel), FLOPs of one sample (`sc.summary(m, example_inputs=(x,)).flops_dense`,
counted with torch.utils.flop_counter) and CPU latency at batch 32:
`torch.set_num_threads(threads)`, eval mode, `torch.inference_mode()`,
`--warmup` untimed runs, then the median of `--runs` timed runs. The timed runs
of the dense and pruned models are interleaved (one run of each per round), so
a change in machine load hits all of them alike, and we print the share of the
machine's CPU that other processes used while timing (from /proc/stat): with
2 threads on 2 cores, any other busy process stalls every parallel region and
the latencies stop tracking FLOPs (we saw dense and pruned VGG both at 312 ms
while a test suite ran beside it). We also print the minor page faults per
forward pass: with glibc's default malloc the large activations are often
handed back to the kernel and faulted in again on every pass, which can triple
the latency and varies from process to process; run with
MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=100000000000 for
fault-free figures (see BENCHMARKS.md). Ratios are against the dense
model measured in the same run: FLOPs reduction = dense / pruned FLOPs, speedup
= dense / pruned latency. Issue 4's target: speedup >= 0.8 x FLOPs reduction,
printed PASS/FAIL per model for secateurs (and, for reference, Torch-Pruning).

Before anything is timed, both libraries prune a throwaway LeNet-5 once, so
one-time costs (lazy imports, first torch.fx trace) do not land on the first
model. We also print, per model, how many of the output channels removed by
secateurs Torch-Pruning removed too, and whether every layer ends with the
same shape.

With --breakdown, the dense and secateurs models are also profiled
(torch.profiler, --runs forward passes each) and the time per forward pass is
split by operator class (conv, pooling, batch norm, activation, add, linear),
to show which part falls short of the FLOPs reduction.

Run:  .venv/bin/python benchmarks/structured.py [--runs 20] [--warmup 5] [--threads 2] [--breakdown]
      (Torch-Pruning: pip install -c constraints.txt torch-pruning, or the `bench` extra)
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import os
import resource
import statistics
import time
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

import secateurs as sc
from _load import busy_seconds  # benchmarks/ is the script's directory
from secateurs import zoo

try:
    import torch_pruning as tp

    TP_VERSION = importlib.metadata.version("torch-pruning")  # tp.__version__ lags the wheel (1.6.0 in 1.6.1)
except ImportError:  # the table then shows Torch-Pruning as not installed
    tp, TP_VERSION = None, "not installed"

MODELS = ("vgg", "resnet-20", "mobilenet-v2", "lenet-5", "vgg-wide")
# Extra rows built from a zoo model with other arguments: how the ratio grows with layer width.
VARIANTS = {"vgg-wide": ("vgg", {"widths": [64, 128, 256]})}
SPARSITY = 0.5
TARGET = 0.8  # speedup must be at least TARGET x the FLOPs reduction
LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass
class Row:
    method: str
    model: nn.Module | None = None
    params: int = 0
    flops: int = 0
    seconds: float | None = None  # time to prune
    error: str | None = None
    times: list[float] = field(default_factory=list)
    faults: int = 0  # minor page faults during the timed runs
    removed: dict[str, set[int]] = field(default_factory=dict)  # layer -> removed output channels

    @property
    def latency(self) -> float:
        return statistics.median(self.times)


def last_linear(model: nn.Module) -> nn.Linear:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def measure(row: Row, x: torch.Tensor) -> None:
    row.params = sum(p.numel() for p in row.model.parameters())
    row.flops = sc.summary(row.model, example_inputs=(x,)).flops_dense


def prune_secateurs(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, float]:
    """Prune ``model`` in place (masks) and return the compacted copy and the seconds both calls took."""
    t = time.perf_counter()
    sc.prune(model, SPARSITY, granularity="channel", scope="local", example_inputs=(x,))
    small = sc.compact(model, (x,))
    return small, time.perf_counter() - t


def prune_torch_pruning(model: nn.Module, x: torch.Tensor) -> tuple[float, dict[str, set[int]]]:
    """Prune ``model`` in place with Torch-Pruning; the seconds taken and the output channels removed per layer."""
    names = {m: n for n, m in model.named_modules()}
    removed: dict[str, set[int]] = {}
    t = time.perf_counter()
    pruner = tp.pruner.BasePruner(
        model, x, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=SPARSITY,
        global_pruning=False, ignored_layers=[last_linear(model)],
    )
    for group in pruner.step(interactive=True):  # same as step(), but lets us read what each group removes
        for dep, idxs in group:
            module = dep.target.module
            if isinstance(module, LAYERS) and pruner.DG.is_out_channel_pruning_fn(dep.handler):
                removed.setdefault(names[module], set()).update(int(getattr(i, "idx", i)) for i in idxs)
        group.prune()
    return time.perf_counter() - t, removed


def removed_by_masks(model: nn.Module) -> dict[str, set[int]]:
    """Output channels whose whole weight row is masked, per layer of a model pruned by secateurs."""
    out = {}
    for name, mask in sc.masks(model).items():
        layer, _, tensor = name.rpartition(".")
        if tensor == "weight":
            gone = ~mask.reshape(mask.shape[0], -1).any(dim=1)
            if bool(gone.any()):
                out[layer] = set(torch.nonzero(gone).flatten().tolist())
    return out


def shapes(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(n, tuple(m.weight.shape)) for n, m in model.named_modules() if isinstance(m, LAYERS)]


def time_interleaved(rows: list[Row], batch: torch.Tensor, warmup: int, runs: int) -> float | None:
    """Fill each row's ``times``; return the share of the machine's CPU other processes used meanwhile."""
    live = [r for r in rows if r.model is not None]
    for r in live:
        r.model.eval()
    with torch.inference_mode():
        for r in live:
            for _ in range(warmup):
                r.model(batch)
        before, start = busy_seconds(), time.perf_counter()
        for _ in range(runs):
            for r in live:
                faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                t = time.perf_counter()
                r.model(batch)
                r.times.append(time.perf_counter() - t)
                r.faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        after, wall = busy_seconds(), time.perf_counter() - start
    if before is None or after is None:
        return None
    others = (after[0] - before[0]) - (after[1] - before[1])
    return max(0.0, others / (wall * (os.cpu_count() or 1)))


OP_CLASSES = (("conv", ("conv",)), ("pool", ("pool",)), ("batchnorm", ("batch_norm",)),
              ("activation", ("clamp", "hardtanh", "threshold", "relu")), ("linear", ("addmm", "aten::mm")),
              ("add", ("aten::add",)))  # first match wins: "aten::addmm" is linear


def breakdown(model: nn.Module, batch: torch.Tensor, runs: int) -> dict[str, float]:
    """Milliseconds per forward pass spent in each class of operator (torch.profiler, self CPU time)."""
    from torch.profiler import profile

    with torch.inference_mode():
        model(batch)
        with profile() as prof:
            for _ in range(runs):
                model(batch)
    out = {name: 0.0 for name, _ in OP_CLASSES} | {"other": 0.0}
    for event in prof.key_averages():
        if not event.key.startswith("aten::"):
            continue
        name = next((n for n, keys in OP_CLASSES if any(k in event.key for k in keys)), "other")
        out[name] += event.self_cpu_time_total / runs / 1e3
    return out


def fails(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"fails: {type(exc).__name__}: {first[:120]}".replace("|", "/")


def warm_up_libraries() -> None:
    net = zoo.model("lenet-5")
    x = zoo.example_inputs(net)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prune_secateurs(copy.deepcopy(net), x)
        if tp is not None:
            try:
                prune_torch_pruning(copy.deepcopy(net), x)
            except Exception:  # noqa: BLE001 - a failure here shows up again, reported, on the real models
                pass


def run_model(name: str, args: argparse.Namespace) -> tuple[list[Row], float, str, float | None, str]:
    torch.manual_seed(args.seed)
    arch, kwargs = VARIANTS.get(name, (name, {}))
    dense_model = zoo.model(arch, **kwargs).eval()
    x = zoo.example_inputs(dense_model)[0]
    batch = torch.randn(args.batch, *x.shape[1:], generator=torch.Generator().manual_seed(args.seed + 1))
    dense = Row("dense (baseline)", dense_model)
    ours = Row("secateurs prune + compact")
    theirs = Row(f"Torch-Pruning {TP_VERSION}" if tp is not None else "Torch-Pruning")

    masked = copy.deepcopy(dense_model)
    try:
        ours.model, ours.seconds = prune_secateurs(masked, x)
        ours.removed = removed_by_masks(masked)
    except Exception as exc:  # noqa: BLE001 - reported in the table
        ours.error = fails(exc)
    diff = float("nan")
    if ours.model is not None:
        masked.eval()
        ours.model.eval()
        with torch.inference_mode():
            diff = float((masked(batch) - ours.model(batch)).abs().max())

    if tp is None:
        theirs.error = "not installed (pip install torch-pruning)"
    else:
        copy_for_tp = copy.deepcopy(dense_model)
        try:
            theirs.seconds, theirs.removed = prune_torch_pruning(copy_for_tp, x)
            theirs.model = copy_for_tp
        except Exception as exc:  # noqa: BLE001 - "which architectures each handles" is part of the result
            theirs.error = fails(exc)

    rows = [dense, ours, theirs]
    for r in rows:
        if r.model is not None:
            measure(r, x)
    others = time_interleaved(rows, batch, args.warmup, args.runs)

    agreement = ""
    if ours.model is not None and theirs.model is not None:
        both = sum(len(s & theirs.removed.get(layer, set())) for layer, s in ours.removed.items())
        total = sum(len(s) for s in ours.removed.values())
        same = "same" if shapes(ours.model) == shapes(theirs.model) else "different"
        agreement = (f"Torch-Pruning removed {both}/{total} of the output channels secateurs removed "
                     f"({both / max(total, 1):.0%}); layer shapes: {same}")
    split = ""
    if args.breakdown and ours.model is not None:
        dense_ms, ours_ms = breakdown(dense.model, batch, args.runs), breakdown(ours.model, batch, args.runs)
        split = ", ".join(f"{k} {dense_ms[k]:.2f} -> {ours_ms[k]:.2f} ({dense_ms[k] / ours_ms[k]:.1f}x)"
                          for k in dense_ms if dense_ms[k] >= 0.01 and ours_ms[k] > 0)
    return rows, diff, agreement, others, split


def table_rows(name: str, rows: list[Row]) -> list[str]:
    dense = rows[0]
    out = []
    for r in rows:
        if r.error is not None:
            out.append(f"| {name} | {r.method} | {r.error} | – | – | – | – | – | – |")
            continue
        reduction = dense.flops / r.flops
        speedup = dense.latency / r.latency
        seconds = "–" if r.seconds is None else f"{r.seconds:.2f}"
        out.append(f"| {name} | {r.method} | {r.params:,} | {r.flops / 1e6:.2f}M | {r.latency * 1e3:.2f} | "
                   f"{reduction:.2f}x | {speedup:.2f}x | {speedup / reduction:.2f} | {seconds} |")
    return out


def verdict(rows: list[Row], r: Row) -> str:
    if r.error is not None:
        return "–"
    reduction = rows[0].flops / r.flops
    speedup = rows[0].latency / r.latency
    need = TARGET * reduction
    result = "PASS" if speedup >= need else "FAIL"
    return f"{result} (speedup {speedup:.2f}x vs {TARGET} x {reduction:.2f}x = {need:.2f}x)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--runs", type=int, default=20, help="timed runs per model (the median is reported)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs per model before timing")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--breakdown", action="store_true",
                        help="also profile the dense and secateurs models: time per operator class")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, torch-pruning {TP_VERSION}, "
          f"{args.threads} threads, batch {args.batch}, median of {args.runs} runs after {args.warmup} warm-up")
    tuning = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}
    print("glibc malloc: " + (", ".join(f"{k}={v}" for k, v in sorted(tuning.items())) or "default settings"))
    print(f"{SPARSITY:.0%} of channels removed, magnitude (L1), local scope, final Linear kept whole; "
          f"models freshly initialised (seed {args.seed})\n")
    warm_up_libraries()
    lines, diffs, verdicts, notes, load, faults, splits = [], [], [], [], [], [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in args.models:
            rows, diff, agreement, others, split = run_model(name, args)
            if split:
                splits.append(f"{name}: {split}")
            per_pass = ("–" if r.model is None else f"{r.faults // args.runs:,}" for r in rows)
            faults.append(f"{name} " + " / ".join(per_pass))
            if others is not None:
                load.append(f"{name} {others:.0%}")
            lines += table_rows(name, rows)
            diffs.append(f"{name}: max |masked - compacted| = {diff:.3g}")
            verdicts.append(f"{name}: secateurs {verdict(rows, rows[1])}; Torch-Pruning {verdict(rows, rows[2])}")
            if agreement:
                notes.append(f"{name}: {agreement}")

    print(f"| model | method | params | FLOPs | latency ms (batch {args.batch}) | FLOPs reduction | speedup | "
          "speedup/FLOPs-reduction | time to prune (s) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(lines))
    print(f"\nsecateurs outputs, masked vs compacted (batch of {args.batch}):")
    print("\n".join(diffs))
    print(f"\ntarget: speedup >= {TARGET} x FLOPs reduction")
    print("\n".join(verdicts))
    if notes:
        print("\nwhat each removed:")
        print("\n".join(notes))
    if splits:
        print("\nms per forward pass by operator, dense -> secateurs (torch.profiler self CPU time):")
        print("\n".join(splits))
    print("\nminor page faults per forward pass (dense / secateurs / Torch-Pruning): " + ", ".join(faults))
    if load:
        print(f"\nCPU used by other processes while timing (share of all {os.cpu_count()} cores; "
              f"more than a few % makes latencies unreliable): {', '.join(load)}")


if __name__ == "__main__":
    main()
