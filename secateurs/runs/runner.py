"""Carry out a recipe: train, prune in stages, fine-tune, evaluate, save, report."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import devices, masking, progress, storage, zoo
from ..analysis.latency import latency_spread
from ..analysis.summary import summary
from ..errors import PruningError
from ..files import check_writable, write_text
from ..inference import accelerate
from ..inputs import run_example
from ..reports import plots, write_reports
from ..surgery.compact import compact
from ..training import distributed
from ..training.loop import evaluate, train
from ..training.schedules import snapshot
from .recipes import Recipe
from .recipes import key as recipe_key
from .rewinding import carried
from .settings import Finetune
from .stages import Row, StageContext
from .stages.context import agree, format_accuracy, loss_penalty, row, say


def build_model(recipe: Recipe) -> nn.Module:
    """The recipe's model: a zoo model, or a file saved by secateurs."""
    if recipe.model.endswith(".safetensors") or Path(recipe.model).is_file():
        if recipe.model_args:
            raise PruningError("model_args applies to zoo models, not to a saved file")
        return storage.load(recipe.model)
    if recipe.data is not None and recipe.model in zoo.models():
        ds = zoo.dataset(recipe.data)
        args = {**zoo.for_data(recipe.model, ds.input_shape, ds.num_classes), **recipe.model_args}
        return zoo.model(recipe.model, **args)
    return zoo.model(recipe.model, **recipe.model_args)


def fits(model: nn.Module, inputs: tuple[Any, ...], what: str) -> None:
    """Run ``model`` once on ``inputs``; raise :class:`PruningError` naming ``what`` when they do not fit.

    Raises:
        PruningError: one line: ``what``, the inputs' shape and the first line of the model's complaint.
    """
    try:
        with torch.no_grad():
            run_example(model, inputs)
    except PruningError as exc:
        shapes = [tuple(t.shape) for t in inputs if isinstance(t, Tensor)]
        reason = str(exc).removeprefix("example_inputs: the model fails on them ").splitlines()[0][:200]
        raise PruningError(f"{what} (inputs of shape {', '.join(map(str, shapes))}) do not fit the model: "
                           f"{reason}") from None


Spread = tuple[float, float, float] | None
"""A :func:`~secateurs.analysis.latency.latency_spread`: first quartile, median, third quartile (ms)."""


def _weights(model: nn.Module) -> dict[str, Tensor]:
    return {masking.param_name(n): m.weight.detach().cpu().clone() for n, m in masking.prunable_layers(model)}


def _trained(recipe: Recipe, model: nn.Module, out: Path, quiet: bool) -> nn.Module:
    """``model`` trained; reused from ``out/dense.safetensors`` when the same
    model, data, seed and training settings produced it (an interrupted run resumes)."""
    path, key = out / "dense.safetensors", recipe_key(recipe)
    if recipe.train.epochs == 0:
        return model
    main = distributed.is_main()  # under torchrun rank 0 reads and writes; the others get its weights
    if distributed.broadcast_object(main and path.is_file() and storage.read(path)[1].get("recipe_key") == key):
        say(quiet, f"reusing the trained dense model in {path}")
        model = storage.load(path, model) if main else model
        distributed.broadcast_masks(model)
        return model
    ds = zoo.dataset(str(recipe.data))
    t = recipe.train
    train(model, ds.train, epochs=t.epochs, lr=t.lr, batch_size=t.batch_size, weight_decay=t.weight_decay,
          seed=recipe.seed, desc="train", progress=not quiet, penalty=loss_penalty(recipe))
    if main:
        storage.save(model, path, metadata={"recipe_key": key})
    return model


def run(recipe: Recipe, out_dir: str | Path, quiet: bool = False) -> dict[str, Any]:
    """Run ``recipe`` and write its outputs under ``out_dir``.

    Writes ``model.safetensors`` (the pruned model, masks included),
    ``dense.safetensors`` (the trained dense model, when the recipe trains),
    ``metrics.json``, and with ``report: true`` also ``report.md``, ``report.html`` (self-contained)
    and their plots (``weights.png``, ``sparsity.png``, ``accuracy.png``).

    Under ``torchrun`` every process runs the recipe on its share of the data (see
    :mod:`secateurs.distributed`); rank 0 alone prints and writes the outputs.

    The work runs on ``recipe.device`` (see :mod:`secateurs.devices`); under ``torchrun`` a GPU run gives each
    process its own GPU and joins with NCCL, a CPU run with gloo (``SECATEURS_BACKEND`` overrides).

    Returns:
        The metrics written to ``metrics.json`` (every rank returns them).

    Raises:
        PruningError: a device this machine does not have (before any work).
    """
    device = devices.resolve(recipe.device, "device")
    backend = os.environ.get("SECATEURS_BACKEND") or ("nccl" if device.type == "cuda" else "gloo")
    with distributed.session(backend):
        quiet = quiet or not distributed.is_main()  # under torchrun, rank 0 alone prints
        with progress.reporting("off") if quiet else contextlib.nullcontext():  # every bar, not just training's
            return _run(recipe, out_dir, quiet, device)


def _run(recipe: Recipe, out_dir: str | Path, quiet: bool, device: torch.device) -> dict[str, Any]:
    start = time.perf_counter()
    out = Path(out_dir)
    torch.manual_seed(recipe.seed)
    model = build_model(recipe).to(device)
    auto = " (auto: no GPU seen)" if device.type == "cpu" else " (auto)"
    say(quiet, f"device: {devices.describe(device)}" + (auto if recipe.device == "auto" else ""))
    _check_stages(recipe, model)
    if recipe.data is not None:  # a file's model and a data set of another shape: bad input, before any work
        fits(model, (zoo.dataset(recipe.data).test.tensors[0][:1].to(device),), f"data {recipe.data!r}")
    if distributed.is_main():
        check_writable(out)  # an unusable output folder is bad input, found before any training
    if not quiet and recipe.prune and not recipe.train.epochs and not Path(recipe.model).is_file():
        print(f"secateurs: note: {recipe.model} is not trained (no train: epochs); its random weights are pruned",
              file=sys.stderr)
    distributed.broadcast_masks(model)  # seeded alike on every rank; rank 0's, to be certain
    init_state = snapshot(model)  # the weights before training, for lottery-ticket rewinding
    init_w = _weights(model) if recipe.report and recipe.train.epochs else None  # for the report's plots
    model = _trained(recipe, model, out, quiet)
    agree(model, "dense", quiet)
    ds = zoo.dataset(recipe.data) if recipe.data else None
    test = ds.test if ds is not None else None
    example = devices.move((test.tensors[0][:1],) if test is not None else zoo.example_inputs(model), device)
    dense_acc = evaluate(model, test) if test is not None else None
    dense_sum, before, dense_ms = summary(model, example), _weights(model), latency_spread(model, example)
    ctx = StageContext(recipe, 0, model, out, train_data=ds.train if ds is not None else None, test_data=test,
                       example=example, init_state=init_state, quiet=quiet, dense_params=dense_sum.params)
    stages = [row("dense", dense_acc, model, dense_sum.params)]
    say(quiet, f"dense: accuracy {format_accuracy(dense_acc)}, {dense_sum.total_params:,} parameters")
    for i, stage in enumerate(recipe.prune, start=1):
        previous = model
        model, rows = stage.run(dataclasses.replace(ctx, index=i, model=model))
        ctx = dataclasses.replace(ctx, init_state=carried(ctx.init_state, previous, model))  # merged: rewindable
        stages.extend(rows)
        stages.extend(_finetune(dataclasses.replace(ctx, index=i, model=model), stage.finetune))
    if recipe.export.compact:
        pruned_flops = summary(model, example).flops
        model = compact(model, example if example is not None else ())
        say(quiet, f"compacted: {sum(p.numel() for p in model.parameters()):,} parameters "
                    f"(FLOPs counted on the masked model: {pruned_flops:,})")
    final = summary(model, example)
    metrics = _metrics(recipe, dense_acc, dense_sum, stages, final, time.perf_counter() - start)
    metrics["device"] = devices.describe(device)
    if distributed.is_main():
        snaps = {"init": init_w, "trained" if init_w else "dense": before}
        _write(recipe, model, metrics, snaps, (example, dense_ms), out, start)
    distributed.barrier()  # every rank returns once the outputs exist
    return metrics


def _write(recipe: Recipe, model: nn.Module, metrics: dict[str, Any], snaps: dict[str, Any],
           timing: tuple[Any, Spread], out: Path, start: float) -> None:
    """Write the model, plots, report and metrics.json (rank 0 only, under torchrun).

    ``snaps`` holds the weights before training (``None`` when the run did not train) and
    after it; ``timing`` the example inputs and the dense model's latency."""
    example, dense_ms = timing
    storage.save(model, out / "model.safetensors")
    _measure_files(metrics, out, dense_ms, _final_latency(model, example, metrics))
    if recipe.report:
        # "final" when training followed the pruning (fine-tuning, or a stage that trains while it prunes)
        snaps = {**snaps, "final" if any(s.trains() for s in recipe.prune) else "pruned": _weights(model)}
        metrics["plots"] = plots.run_plots(out, metrics, {k: v for k, v in snaps.items() if v is not None})
    metrics["seconds"] = time.perf_counter() - start
    text = json.dumps(metrics, indent=2)
    write_text(out / "metrics.json", text)
    if recipe.report:  # rendered from the metrics just written, so the numbers agree with metrics.json
        write_reports(out, metrics)


def _final_latency(model: nn.Module, example: Any, metrics: dict[str, Any]) -> Spread:
    """Batch-1 latency of the final model as :func:`accelerate` runs it for inference (the masked model
    itself still runs dense kernels and applies its masks: timing it would measure the masks' cost).
    Records the paths chosen in ``metrics["final"]["inference"]`` (``None`` when the model was timed masked)."""
    metrics["final"]["inference"] = None
    if example is None:
        return None
    if devices.of(model).type != "cpu":  # accelerate's kernels are CPU kernels: time the model on its device
        return latency_spread(model, example)
    try:
        fast = accelerate(model, example)
    except (PruningError, RuntimeError):  # a model accelerate cannot run: time it as it is
        return latency_spread(model, example)
    metrics["final"]["inference"] = {"structure": fast.structure, "layers": {c.name: c.path for c in fast.layers}}
    return latency_spread(fast.model, example)


def _measure_files(metrics: dict[str, Any], out: Path, dense_ms: Spread, final_ms: Spread) -> None:
    """Add the saved files' sizes and the measured latencies to ``metrics`` (``None`` where not measured)."""
    dense_file = out / "dense.safetensors"
    metrics["dense"]["file_bytes"] = dense_file.stat().st_size if dense_file.is_file() else None
    metrics["final"]["file_bytes"] = (out / "model.safetensors").stat().st_size
    for entry, spread in ((metrics["dense"], dense_ms), (metrics["final"], final_ms)):
        entry["latency_ms"] = None if spread is None else spread[1]  # the median
        entry["latency_ms_quartiles"] = None if spread is None else [spread[0], spread[2]]


def _finetune(ctx: StageContext, settings: Finetune | None) -> list[Row]:
    """Fine-tune ``ctx.model`` after stage ``ctx.index`` when that stage asks for it; the row it adds.

    Any stage kind may carry ``finetune``; the row is ``"finetune <i>: <epochs> epochs"``."""
    if settings is None or not settings.epochs or ctx.test_data is None:
        return []
    i = ctx.index
    ctx.train(ctx.model, settings, ctx.recipe.seed + i, f"finetune {i}")
    agree(ctx.model, f"finetune {i}", ctx.quiet)
    entry = ctx.row(ctx.model, f"finetune {i}: {settings.epochs} epochs")
    say(ctx.quiet, f"{entry['name']}: accuracy {format_accuracy(entry['accuracy'])}")
    return [entry]


def check(recipe: Recipe) -> nn.Module:
    """Raise :class:`PruningError` for what a recipe's schema cannot see (its model, its data's fit, layer
    patterns, each stage against the model, batch sizes), without training or pruning anything:
    ``secateurs run --check`` and ``secateurs compare`` (before the first method runs).

    Returns:
        The model as built (untrained).
    """
    model = build_model(recipe)
    _check_stages(recipe, model)
    if recipe.data is not None:
        fits(model, (zoo.dataset(recipe.data).test.tensors[0][:1],), f"data {recipe.data!r}")
    return model


def _check_stages(recipe: Recipe, model: nn.Module) -> None:
    """Catch what the schema cannot see (layer patterns, no prunable layers, batch sizes) before any work."""
    for batch_size in [recipe.train.batch_size] + [s.finetune.batch_size for s in recipe.prune if s.finetune]:
        distributed.local_batch(batch_size)  # under torchrun: a multiple of the number of processes
    for i, stage in enumerate(recipe.prune, start=1):
        try:
            stage.check(model)
        except PruningError as exc:  # before any work, naming the stage as the recipe has it
            raise PruningError(f"prune stage {i} ({stage.selector()}): {exc}") from None


def versions() -> dict[str, str]:
    """The versions a run's numbers depend on, for its report: secateurs, torch, Python."""
    try:
        mine = importlib.metadata.version("secateurs")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that is not installed
        mine = "not installed"
    return {"secateurs": mine, "torch": torch.__version__, "python": platform.python_version()}


def _metrics(recipe: Recipe, dense_acc: float | None, dense_sum: Any, stages: list[dict[str, Any]],
             final: Any, seconds: float) -> dict[str, Any]:
    # Relative to the dense model's prunable weights, so that a compacted model (whose
    # pruned weights are gone rather than zero) reports the same sparsity as a masked one.
    density = final.nonzero / dense_sum.params if dense_sum.params else 1.0
    return {
        "model": recipe.model, "data": recipe.data,
        "dense": {"accuracy": dense_acc, "params": dense_sum.total_params, "flops": dense_sum.flops_dense},
        "final": {
            "accuracy": stages[-1]["accuracy"], "sparsity": 1.0 - density, "density": density,
            "params": final.total_params, "nonzero": final.total_params - (final.params - final.nonzero),
            "prunable": final.params, "prunable_nonzero": final.nonzero,
            "compression": 1.0 / density if density else float("inf"),
            "flops": final.flops, "flops_dense": dense_sum.flops_dense,
        },
        "stages": stages,
        "compacted": recipe.export.compact,
        "layers": final.to_dict()["layers"],
        "recipe": recipe.model_dump(),
        "versions": versions(),
        "seconds": seconds,
    }
