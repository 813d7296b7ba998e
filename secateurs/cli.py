"""The ``secateurs`` command line.

Exit codes: 0 success, 2 bad input (one line on stderr saying what to fix),
1 internal error.
"""

from __future__ import annotations

import argparse
import os
import sys
import types
import typing
from collections.abc import Sequence
from typing import Any

import torch

from . import criteria, devices, progress, zoo
from .analysis.summary import summary
from .errors import PruningError
from .helptext import epilog
from .llm import commands as llm_commands
from .runs import compare, recipes, runner, stages
from .storage import export_onnx
from .surgery.compact import compact
from .training import distributed

DEFAULT_OUT = "secateurs-out"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="secateurs", description="Prune PyTorch networks and show what happened.")
    p.add_argument("--debug", action="store_true", help="show the traceback of internal errors")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = sub.add_parser("demo", help="train, prune and report LeNet-300-100 on bundled MNIST")
    demo.add_argument("-o", "--out", default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    _device_flag(demo)

    run = sub.add_parser("run", help="run a recipe (YAML)")
    run.add_argument("recipe", help="recipe file")
    run.add_argument("-o", "--out", default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    _device_flag(run)
    run.add_argument("--check", action="store_true",
                     help="validate the recipe (model, data, every stage against the model) and stop: "
                          "nothing is trained or written; exit 0 when it would run, 2 when not")

    pr = sub.add_parser("prune", help="prune a saved model (or a zoo model) once")
    pr.add_argument("model", help="a .safetensors file saved by secateurs, or a zoo model name")
    _stage_flags(pr)
    pr.add_argument("--layer", action="append", default=[], metavar="PATTERN=SPARSITY",
                    help="per-layer sparsity, or PATTERN=none to exclude; repeatable")
    pr.add_argument("--data", help="zoo dataset to measure accuracy and fine-tune on")
    epochs = recipes.Finetune.model_fields["epochs"]
    pr.add_argument("--finetune-epochs", type=int, default=epochs.default,
                    help=f"fine-tuning after pruning: {epochs.description} (default {epochs.default})")
    pr.add_argument("--compact", action="store_true",
                    help="physically remove the pruned channels (with --granularity neuron/channel/filter)")
    pr.add_argument("-o", "--out", required=True, help="output directory")
    pr.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    _device_flag(pr)

    cmp = sub.add_parser("compare", help="run several recipes (methods) on the same model and data, "
                                         "plot their accuracy-sparsity frontiers")
    cmp.add_argument("recipes", nargs="+", metavar="RECIPE", help="recipe files; each file's name names its method")
    cmp.add_argument("-o", "--out", default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    cmp.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    _device_flag(cmp)

    sm = sub.add_parser("summary", help="per-layer table of a saved model")
    sm.add_argument("model", help="a .safetensors file saved by secateurs, or a zoo model name")

    ex = sub.add_parser("export", help="export a saved model (masks baked in) to ONNX")
    ex.add_argument("model", help="a .safetensors file saved by secateurs, or a zoo model name")
    ex.add_argument("--onnx", required=True, metavar="OUT", help="the .onnx file to write")
    ex.add_argument("--input-shape", metavar="N,C,H,W",
                    help="shape of the example input (default: the zoo model's own, batch 1)")
    ex.add_argument("--compact", action="store_true", help="remove pruned channels first (sc.compact)")

    sub.add_parser("criteria", help="list the available criteria")
    sub.add_parser("zoo", help="list the bundled models (with their arguments) and data sets")
    llm_commands.add_parsers(sub)
    for name, command in sub.choices.items():  # examples under every command's --help
        command.epilog, command.formatter_class = epilog(name), argparse.RawDescriptionHelpFormatter
    return p


def _device_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", help=f"where the work runs: {devices.ALLOWED}; auto is a GPU when there is one "
                                    "(default: the recipe's device, else cpu)")


def _on_device(recipe: recipes.Recipe, device: str | None) -> recipes.Recipe:
    """``recipe`` with ``--device`` (checked against this machine, naming the flag), when given."""
    if device is None:
        return recipe
    devices.resolve(device, "--device")
    return recipe.model_copy(update={"device": devices.check(device, "--device")})


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if not shape or any(v < 1 for v in shape):
        raise PruningError(f"--input-shape expects positive integers such as 1,3,32,32, got {text!r}")
    return shape


def _export(a: argparse.Namespace) -> int:
    """``secateurs export MODEL --onnx OUT``: ONNX of the (masked, finalized or compacted) model."""
    if os.path.isdir(a.onnx):
        raise PruningError(f"--onnx {a.onnx!r} is a directory; give the file to write")
    model = runner.build_model(recipes.Recipe(model=a.model))
    inputs = (torch.randn(*_shape(a.input_shape)),) if a.input_shape else zoo.example_inputs(model)
    if inputs is None:
        raise PruningError(f"{a.model!r} does not record its input shape; pass --input-shape")
    runner.fits(model, inputs, f"--input-shape {a.input_shape}" if a.input_shape else "the recorded input shape")
    if a.compact:
        before = sum(p.numel() for p in model.parameters())
        model = compact(model, inputs)
        if sum(p.numel() for p in model.parameters()) == before:
            print(f"secateurs: note: --compact removed nothing: {a.model} has no whole channel or neuron pruned "
                  f"(prune with --granularity channel/neuron first)", file=sys.stderr)
    try:
        diff = export_onnx(model, inputs, a.onnx)
    except PruningError as exc:
        if a.input_shape and str(exc).startswith("example_inputs"):
            raise PruningError(f"--input-shape {a.input_shape}{str(exc).removeprefix('example_inputs')}") from None
        raise
    checked = "not checked (onnxruntime not installed)" if diff is None else f"onnxruntime max abs diff {diff:.2g}"
    print(f"wrote {a.onnx} ({os.path.getsize(a.onnx) / 1024:.0f} KiB); {checked}")
    return 0


def _layers(items: list[str]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for item in items:
        pattern, sep, value = item.partition("=")
        if not sep or not pattern:
            raise PruningError(f"--layer expects PATTERN=SPARSITY or PATTERN=none, got {item!r}")
        if value.lower() in ("none", "null"):
            out[pattern] = None
            continue
        try:
            out[pattern] = float(value)
        except ValueError:
            raise PruningError(f"--layer {item!r}: {value!r} is not a number or 'none'") from None
    return out


_UNIONS = (typing.Union, types.UnionType)


def _flag_type(annotation: Any) -> type | None:
    """``int``, ``float``, ``bool`` or ``str`` for a scalar field's annotation (``X | None`` counts as ``X``;
    a Literal of strings or a union of several types is ``str``, left to the model to convert); ``None`` for
    a field no single flag can hold (a mapping, a settings block)."""
    args = [a for a in (typing.get_args(annotation) if typing.get_origin(annotation) in _UNIONS else (annotation,))
            if a is not type(None)]
    if len(args) == 1 and args[0] in (bool, int, float, str):
        return args[0]
    scalar = all(a in (int, float, str) or typing.get_origin(a) is typing.Literal for a in args)
    return str if scalar else None


def _stage_fields() -> dict[str, tuple[type[stages.StageBase], Any]]:
    """``{field: (the first kind that has it, its FieldInfo)}`` over the kinds ``prune`` runs (a stage with
    no schedule: one-shot, then the kinds a criterion selects), scalar fields only. ``schedule`` is left out:
    the command prunes once, a recipe picks other schedules."""
    found: dict[str, tuple[type[stages.StageBase], Any]] = {}
    for kind in stages.once():
        for name, field in kind.model_fields.items():
            if name != "schedule" and name not in found and _flag_type(field.annotation) is not None:
                found[name] = (kind, field)
    return found


def _stage_flags(p: argparse.ArgumentParser) -> None:
    """One flag per scalar field of the stages ``prune`` runs: ``--min-density`` from ``min_density``, its help
    from the field's description, its type and default from the field's."""
    first = stages.once()[0]
    by_criterion = [k for k in stages.once() if k.by_criterion]
    for name, (kind, field) in _stage_fields().items():
        kind_type = _flag_type(field.annotation)
        shown = field.default is not None and kind_type is not bool
        words = field.description + (f" (default {field.default})" if shown else "")
        if kind is not first:
            words = f"with --{kind.selector()}: {words}"
        if name == "criterion":  # the field kind_of reads: it also selects the kinds a criterion names
            words += "".join(f"; {k.name}: {(k.__doc__ or '').strip().splitlines()[0]}" for k in by_criterion)
        flag = "--" + name.replace("_", "-")
        if kind_type is bool:
            p.add_argument(flag, action="store_true", default=field.default, help=words)
        else:
            p.add_argument(flag, type=kind_type, default=field.default, help=words)


def _prune_recipe(a: argparse.Namespace) -> recipes.Recipe:
    fields = _stage_fields()
    given = {name: getattr(a, name) for name in fields}
    kind = stages.get(stages.kind_of(given))
    # the chosen kind's fields, and any other flag given a value of its own (the kind then rejects it, naming it)
    stage = {k: v for k, v in given.items() if k in kind.model_fields or v != fields[k][1].default}
    stage["layers"] = _layers(a.layer)
    if a.finetune_epochs:
        stage["finetune"] = {"epochs": a.finetune_epochs}
    raw = {"model": a.model, "data": a.data, "prune": [stage], "export": {"compact": a.compact}}
    try:
        return recipes.Recipe.model_validate(raw)
    except recipes.ValidationError as exc:
        key, msg, _ = recipes.describe(exc, skip=2)  # drop ("prune", 0)
        raise PruningError(f"--{key.replace('_', '-')}: {msg}" if key else msg) from None


def _list_criteria() -> None:
    """The criteria a recipe or ``--criterion`` can name, then the ways to prune that stages provide
    (each stage's own docstring says how to use it)."""
    for name in criteria.names():
        c = criteria.get(name)
        if c.standalone:
            needs = "data + loss" if c.needs_loss else "data" if c.needs_data else "no data"
            print(f"{name:<12} {needs:<12} {_first_line(type(c))}")
    print("\nstages of their own (recipes select them; see each line):")
    for kind in stages.listed():
        needs = "data + loss" if kind.trains_while_pruning else "no data"
        print(f"{kind.listed_as:<12} {needs:<12} {_first_line(kind)}")


def _list_zoo() -> None:
    """The zoo's models with their arguments and defaults, then its data sets with their shapes."""
    print("models (secateurs prune NAME, or model: NAME in a recipe; model_args: set the arguments):")
    for name in zoo.models():
        args = ", ".join(f"{k}={list(v) if isinstance(v, tuple) else v}" for k, v in zoo.arguments(name).items())
        print(f"  {name:<15} {args}")
    print("data sets (--data NAME, or data: NAME; every model above is fitted to each one's input and classes):")
    for name in zoo.datasets():
        try:
            ds = zoo.dataset(name)
        except PruningError as exc:  # the data extra is not installed
            print(f"  {name:<15} not available: {exc}")
            continue
        print(f"  {name:<15} inputs {'x'.join(map(str, ds.input_shape))}, {ds.num_classes} classes, "
              f"{len(ds.train):,} train / {len(ds.test):,} test examples")


def _first_line(cls: type) -> str:
    return (cls.__doc__ or "").strip().splitlines()[0]


def _dispatch(a: argparse.Namespace) -> int:
    if a.command == "criteria":
        _list_criteria()
        return 0
    if a.command == "zoo":
        _list_zoo()
        return 0
    if a.command == "summary":
        model = runner.build_model(recipes.Recipe(model=a.model))
        print(summary(model, zoo.example_inputs(model)))
        return 0
    if a.command == "compare":
        return _compare(a)
    if a.command == "export":
        return _export(a)
    if a.command == "llm":
        return llm_commands.run(a)
    if a.command == "run" and a.check:
        return _check(recipes.load(a.recipe))
    recipe = {"demo": lambda: recipes.parse(recipes.DEMO, "demo recipe"),
              "run": lambda: recipes.load(a.recipe), "prune": lambda: _prune_recipe(a)}[a.command]()
    metrics = runner.run(_on_device(recipe, a.device), a.out, quiet=a.quiet)
    if not a.quiet and distributed.is_main():  # under torchrun, one summary line, from rank 0
        fin, dense = metrics["final"], metrics["dense"]
        acc = "" if fin["accuracy"] is None else (
            f"accuracy {dense['accuracy']:.2%} dense -> {fin['accuracy']:.2%} pruned, ")
        print(f"done: {acc}sparsity {fin['sparsity']:.2%}, compression {fin['compression']:.2f}x; "
              f"outputs in {a.out}/")
    return 0


def _check(recipe: recipes.Recipe) -> int:
    """``secateurs run RECIPE --check``: everything the run checks before its first step, and nothing else."""
    model = runner.check(recipe)
    kinds = ", ".join(stage.selector() for stage in recipe.prune) or "none"
    data = f", data {recipe.data}" if recipe.data else ""
    print(f"recipe ok: model {recipe.model} ({sum(p.numel() for p in model.parameters()):,} parameters){data}, "
          f"{len(recipe.prune)} pruning stage(s): {kinds}; nothing was trained or written")
    return 0


def _compare(a: argparse.Namespace) -> int:
    names = compare.method_names(a.recipes)
    found = {name: _on_device(recipes.load(path), a.device) for name, path in zip(names, a.recipes)}
    compare.check_shared(found)  # before any work: a mismatch is bad input, not a half-finished run
    result = compare.compare(found, a.out, quiet=a.quiet)
    if not a.quiet:
        for m in result["methods"]:
            f = m["final"]
            acc = "n/a" if f["accuracy"] is None else f"{f['accuracy']:.2%}"
            print(f"{m['name']}: accuracy {acc}, sparsity {f['sparsity']:.2%}")
        print(f"done: compare.html, compare.md, compare.png and compare.json in {a.out}/")
    return 0


# Errors of a path given on the command line (an -o under a file, a read-only folder): exit 2, not 1.
_PATH_ERRORS = (FileExistsError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``secateurs`` and ``python -m secateurs``."""
    args = _parser().parse_args(argv)
    try:
        # Plain progress lines when stderr is not a terminal; nothing at all with --quiet.
        with progress.reporting("off" if getattr(args, "quiet", False) else "lines"):
            return _dispatch(args)
    except PruningError as exc:
        print(f"secateurs: error: {exc}", file=sys.stderr)
        return 2
    except _PATH_ERRORS as exc:  # an output or input path the user gave cannot be used: bad input
        where = f" {exc.filename!r}" if exc.filename else ""
        print(f"secateurs: error: cannot use{where}: {exc.strerror or exc}; choose another path", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("secateurs: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an internal error: one line unless --debug
        if args.debug:
            raise
        if isinstance(exc, OSError) and exc.filename:  # a path that cannot be written (read-only file system,
            print(f"secateurs: error: cannot write {exc.filename!r}: {exc.strerror or exc}; "  # full disk)
                  f"choose another path", file=sys.stderr)
            return 2
        print(f"secateurs: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
