"""Examples shown by ``secateurs <command> --help``: one or two command lines each, that run as shown.

Kept apart from :mod:`secateurs.cli` so that the parser stays about the flags; ``tests/test_cli_help.py``
checks that every command has examples and that each parses with the flags its command has.
"""

from __future__ import annotations

__all__ = ["EXAMPLES", "SUBCOMMAND_EXAMPLES", "epilog"]

EXAMPLES: dict[str, list[tuple[str, str]]] = {
    "demo": [("secateurs demo -o out", "train LeNet-300-100 on bundled MNIST, prune 90%, report")],
    "run": [("secateurs run examples/lenet-300-100.yaml -o out", "run a recipe (examples/ has one per method)"),
            ("secateurs run examples/2-4.yaml --check", "validate it against the model; run nothing")],
    "prune": [("secateurs prune lenet-300-100 --data mnist --sparsity 0.9 --finetune-epochs 1 -o out",
               "global magnitude pruning of a zoo model"),
              ("secateurs prune out/model.safetensors --sparsity 0.5 --granularity channel --compact -o small",
               "remove half the neurons of a saved model, physically"),
              ("secateurs prune out/model.safetensors --criterion data-free --amount 0.3 -o merged",
               "merge similar neurons, no data (Srinivas & Babu)")],
    "compare": [("secateurs compare examples/compare/magnitude.yaml examples/compare/wanda.yaml -o cmp",
                 "two methods on one model and data set")],
    "summary": [("secateurs summary out/model.safetensors", "per-layer table of a saved model"),
                ("secateurs summary resnet-20", "the same for a zoo model")],
    "export": [("secateurs export out/model.safetensors --onnx model.onnx", "ONNX, masks baked in"),
               ("secateurs export small/model.safetensors --onnx small.onnx --compact", "pruned channels removed")],
    "criteria": [("secateurs criteria", "the criteria and the stages of their own, with what each needs")],
    "zoo": [("secateurs zoo", "the bundled models (with their arguments) and data sets"),
            ("secateurs prune vgg --data mnist --sparsity 0.5 -o out", "any zoo model fits any bundled data set")],
    "llm": [("secateurs llm prune ./tinyllama -o ./pruned --sparsity 0.5 --method wanda", "stream a checkpoint"),
            ("secateurs llm eval ./pruned --text held-out.txt", "perplexity, one layer in memory at a time")],
}
"""``{command: [(command line, what it does)]}``."""

SUBCOMMAND_EXAMPLES: dict[str, list[tuple[str, str]]] = {
    "llm prune": [EXAMPLES["llm"][0],
                  ("secateurs llm prune ./tinyllama -o ./pruned-24 --sparsity 2:4 --method sparsegpt --allocation owl",
                   "2:4 with SparseGPT, outlier-weighted layer sparsities")],
    "llm eval": [EXAMPLES["llm"][1]],
}
"""Examples of subcommands (``secateurs llm prune --help``), keyed ``"command subcommand"``."""


def epilog(command: str) -> str:
    """The ``examples:`` block of ``command``'s help."""
    lines = [f"  {line}\n      {what}" for line, what in {**EXAMPLES, **SUBCOMMAND_EXAMPLES}[command]]
    return "examples:\n" + "\n".join(lines)
