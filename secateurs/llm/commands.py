"""``secateurs llm prune`` and ``secateurs llm eval``: the command line of :mod:`secateurs.llm`."""

from __future__ import annotations

import argparse
from typing import Any

from ..helptext import epilog
from .activations import DEFAULT_BUDGET
from .evaluate import perplexity
from .layerwise import METHODS
from .stream import ALLOCATIONS, prune


def _sparsity(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text  # "2:4"; checked by prune, which names what is allowed


def add_parsers(sub: Any) -> None:
    """Add the ``llm`` command and its ``prune`` and ``eval`` subcommands to ``sub``."""
    llm = sub.add_parser("llm", help="prune or evaluate a causal language model layer by layer from its shards")
    cmds = llm.add_subparsers(dest="llm_command", required=True, parser_class=type(llm))
    pr = cmds.add_parser("prune", help="prune a Hugging Face checkpoint folder, streaming one layer at a time")
    pr.add_argument("checkpoint", help="folder with config.json and *.safetensors (Llama, Mistral, Qwen2)")
    pr.add_argument("-o", "--out", required=True, help="output folder (loads with from_pretrained)")
    pr.add_argument("--sparsity", type=_sparsity, default=0.5, help="fraction per row, or N:M like 2:4 (default 0.5)")
    pr.add_argument("--method", choices=METHODS, default="sparsegpt", help="default sparsegpt")
    pr.add_argument("--allocation", choices=ALLOCATIONS, default="uniform", help="default uniform; owl: outlier-weighted")
    pr.add_argument("--calibration", help="text file (default: the bundled standard-library docstrings)")
    pr.add_argument("--samples", type=int, default=64, help="calibration windows (default 64)")
    pr.add_argument("--seqlen", type=int, default=512, help="tokens per window (default 512)")
    pr.add_argument("--memory-budget", type=float, default=DEFAULT_BUDGET / 2**30,
                    help=f"GiB of activations kept in memory before spilling to disk (default {DEFAULT_BUDGET / 2**30:g})")
    pr.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    ev = cmds.add_parser("eval", help="perplexity on held-out text, streaming one layer at a time")
    ev.add_argument("checkpoint", help="folder with config.json and *.safetensors")
    ev.add_argument("--text", help="text file (default: the bundled held-out docstrings)")
    ev.add_argument("--seqlen", type=int, default=512, help="tokens per window (default 512)")
    ev.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    for name, command in (("prune", pr), ("eval", ev)):
        command.epilog, command.formatter_class = epilog(f"llm {name}"), argparse.RawDescriptionHelpFormatter


def run(a: argparse.Namespace) -> int:
    """Run ``secateurs llm prune`` or ``secateurs llm eval``; prints one summary line."""
    if a.llm_command == "eval":
        ppl = perplexity(a.checkpoint, a.text, seqlen=a.seqlen)
        print(f"perplexity {ppl:.4f}")
        return 0
    r = prune(a.checkpoint, a.out, a.sparsity, a.method, a.calibration, a.allocation, samples=a.samples,
              seqlen=a.seqlen, memory_budget=int(a.memory_budget * 2**30))
    seconds = sum(e["read_s"] + e["compute_s"] + e["write_s"] for e in r.layers)
    print(f"done: {len(r.layers)} layers {r.method} at {r.sparsity} ({r.allocation}) in {seconds:.1f}s, "
          f"peak memory {r.peak_rss_bytes / 2**30:.2f} GiB; outputs in {a.out}/")
    return 0
