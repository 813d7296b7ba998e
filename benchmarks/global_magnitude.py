"""Global magnitude pruning: secateurs vs torch.nn.utils.prune.global_unstructured.

Each method runs in a fresh subprocess on the same 50M-parameter stack of
nn.Linear(2048, 2048) (12 layers, no bias, seed 0) and prunes it to 90%
sparsity. We report wall time of the pruning call and the extra peak memory
(peak RSS during the call minus RSS before it), and print the ratios
torch / secateurs. Targets (issue 2): >= 20x faster, extra peak <= 0.5x the
model's size.

With ``--busy`` one competing CPU-bound process runs beside each measurement (a machine that also
runs data loaders or other jobs); the share of the CPU other processes used is printed either way.

Run:  .venv/bin/python benchmarks/global_magnitude.py [--layers 12] [--width 2048] [--busy]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from _load import busy_seconds, competing  # benchmarks/ is the script's directory

CHILD = r"""
import gc, json, resource, sys, time
import torch
from torch import nn
torch.manual_seed(0)
method, layers, width, sparsity = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
model = nn.Sequential(*[nn.Linear(width, width, bias=False) for _ in range(layers)])
size = sum(p.numel() * p.element_size() for p in model.parameters())
if method == "secateurs":
    import secateurs as sc
    run = lambda: sc.prune(model, sparsity=sparsity, scope="global")
    measure = lambda: sc.sparsity(model)
else:
    import torch.nn.utils.prune as prune
    run = lambda: prune.global_unstructured([(m, "weight") for m in model], prune.L1Unstructured, amount=sparsity)
    measure = lambda: float(sum((m.weight == 0).sum() for m in model) / sum(m.weight.numel() for m in model))
gc.collect()
def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
before = rss_mb()
# the peak is reset so that it covers the pruning call only
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
t = time.perf_counter()
run()
seconds = time.perf_counter() - t
with open("/proc/self/status") as f:
    peak = next(int(l.split()[1]) / 1024 for l in f if l.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "extra_mb": peak - before, "model_mb": size / 2**20,
                  "sparsity": measure()}))
"""


def run_child(method: str, args: argparse.Namespace) -> dict:
    """One measurement in a fresh process (beside a competing one with ``--busy``), with ``cores_busy``:
    the machine's busy CPU cores meanwhile (all processes: the child, the competitor, anyone else)."""
    with competing(args.busy):
        before, t0 = busy_seconds(), time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", CHILD, method, str(args.layers), str(args.width), str(args.sparsity)],
            check=True, capture_output=True, text=True,
        )
        after, wall = busy_seconds(), time.perf_counter() - t0
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["cores_busy"] = (after[0] - before[0]) / wall if before and after else None
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--repeats", type=int, default=3, help="secateurs runs (best time and worst memory are kept)")
    parser.add_argument("--busy", action="store_true", help="run one competing CPU-bound process beside each measurement")
    args = parser.parse_args()
    params = args.layers * args.width * args.width
    print(f"model: {args.layers} x Linear({args.width}, {args.width}) = {params / 1e6:.1f}M params, "
          f"global magnitude to {args.sparsity:.0%}")
    runs = [run_child("secateurs", args) for _ in range(args.repeats)]
    # best time, worst memory: the memory figure is the conservative one
    ours = dict(min(runs, key=lambda r: r["seconds"]), extra_mb=max(r["extra_mb"] for r in runs))
    base = run_child("torch", args)
    print(f"{'method':<34}{'time (s)':>10}{'extra peak (MB)':>17}{'x model':>9}{'sparsity':>10}{'cores busy':>12}")
    for name, r in (("secateurs.prune", ours), ("torch global_unstructured", base)):
        busy = "n/a" if r["cores_busy"] is None else f"{r['cores_busy']:.1f}/{os.cpu_count()}"
        print(f"{name:<34}{r['seconds']:>10.3f}{r['extra_mb']:>17.1f}"
              f"{r['extra_mb'] / r['model_mb']:>9.2f}{r['sparsity']:>10.4f}{busy:>12}")
    if args.busy:
        print("--busy: one competing CPU-bound process ran beside each measurement")
    speed = base["seconds"] / ours["seconds"]
    print(f"speed-up (torch time / secateurs time): {speed:.1f}x   (target >= 20x)")
    print(f"secateurs extra peak / model size: {ours['extra_mb'] / ours['model_mb']:.2f}   (target <= 0.5)")
    print(f"torch extra peak / model size: {base['extra_mb'] / base['model_mb']:.2f}")


if __name__ == "__main__":
    main()
