"""Recipe stages that prune while training: iterative (IMP), gradual (by magnitude or movement), RigL, SET, L0."""

from __future__ import annotations

import functools
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import DataLoader

from .. import zoo
from ..files import write_text
from ..surgery.gates import average_flops, wrap_convs
from ..surgery.records import record
from ..training import distributed
from ..training.learned import L0Gates, Movement
from ..training.loop import train
from ..training.regularizers import penalty
from ..training.schedules import Gradual, Iterative, RigL
from .recipes import Recipe, Stage, key as recipe_key

Evaluate = Callable[[], "float | None"]


def rounds_dir(recipe: Recipe, i: int, out: Path) -> Path:
    """Where stage ``i``'s iterative rounds are saved, emptied first when they came from another recipe.

    An interrupted run resumes from the saved rounds; but rounds left by a recipe whose model, data,
    training or stages up to this one differ would be the wrong starting point, so they are removed
    (the key of what produced them is kept beside them, as ``dense.safetensors`` keeps its own).
    """
    folder, key = out / f"stage-{i}-rounds", recipe_key(recipe, stages=i)
    if distributed.is_main():  # under torchrun, rank 0 owns the files
        stamp = folder / "recipe_key"
        if folder.is_dir() and (not stamp.is_file() or stamp.read_text() != key):
            shutil.rmtree(folder)
        if not stamp.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            write_text(stamp, key)
    distributed.barrier()
    return folder


def loss_penalty(recipe: Recipe) -> Callable[[nn.Module], Any] | None:
    """The recipe's regulariser as ``f(model) -> loss term``, or ``None``."""
    if recipe.penalty is None:
        return None
    return functools.partial(penalty, kind=recipe.penalty.kind, weight=recipe.penalty.weight)


def run_schedule(recipe: Recipe, st: Stage, i: int, model: nn.Module, accuracy: Evaluate,
                 out: Path, init_state: dict[str, Any] | None, quiet: bool) -> list[dict[str, Any]]:
    """Carry out one scheduled stage on ``model`` in place; the stages it adds to metrics.json."""
    data = zoo.dataset(str(recipe.data)).train
    t = recipe.train
    options = dict(criterion=st.criterion, scope=st.scope, granularity=st.granularity,
                   layers=st.layers or None, min_density=st.min_density, seed=st.seed)

    def fit(epochs: int, on_step: Callable[[int], Any] | None, seed: int, desc: str,
            extra: Callable[[nn.Module], Any] | None = None, params: Any = (), extra_lr: float | None = None,
            on_optimizer: Callable[[Any], None] | None = None) -> None:
        base = loss_penalty(recipe)
        both = extra if base is None else (lambda m: base(m) + extra(m)) if extra is not None else base
        train(model, data, epochs=epochs, lr=t.lr, batch_size=t.batch_size, weight_decay=t.weight_decay,
              seed=seed, desc=desc, progress=not quiet, on_step=on_step, penalty=both, extra_params=params,
              extra_lr=extra_lr, on_optimizer=on_optimizer)

    if st.schedule == "runtime":  # per-input channel gating: wrap the convs, train, measure what they spend
        patterns = [k for k, v in st.layers.items() if v is not None] or None
        names = wrap_convs(model, st.keep, layers=patterns)
        fit(st.epochs, None, recipe.seed + 100 * i, "runtime")
        hidden = model.get_submodule(names[0]).saliency[2].out_features
        step = {n: {"runtime": {"keep": st.keep, "hidden": hidden}} for n in names}
        record(model, step)
        test = zoo.dataset(str(recipe.data)).test
        flops = average_flops(model, DataLoader(test, batch_size=256))
        return [{"name": f"runtime {i}: {len(names)} gated convs, keep {st.keep:g}", "accuracy": accuracy(),
                 "sparsity": 0.0, "flops_per_input": flops.spent, "flops_per_input_dense": flops.dense}]
    if st.schedule == "l0":  # hard-concrete gates on neurons/filters, trained with an L0 penalty
        gates = L0Gates(model, layers=st.layers or None)
        fit(st.epochs, None, recipe.seed + 100 * i, "l0", lambda _m: st.l0_weight * gates.penalty(),
            list(gates.parameters()), st.l0_lr)
        gates.finalize()
        return []

    if st.schedule == "iterative":
        pruner = Iterative(model, rounds=st.rounds, rate=st.rate, rewind=st.rewind,
                           out_dir=rounds_dir(recipe, i, out), **options)
        if st.rewind == "init" and init_state is not None:
            pruner.state = init_state  # the weights before the dense training: a lottery ticket
        pruner.run(lambda m, k: (fit(st.epochs, None, recipe.seed + 100 * i + k, f"round {k}"),
                                 {"accuracy": accuracy()})[1])
        return [{"name": f"iterative {i}: round {h['round']}", "accuracy": h.get("accuracy"),
                 "sparsity": h["sparsity"]} for h in pruner.history]
    steps = st.epochs * math.ceil(len(data) / t.batch_size)
    end = max(1, int(0.75 * steps))  # prune during the first three quarters, then train at the final sparsity
    if st.schedule == "movement":  # movement pruning: scores accumulate every step, cubic schedule
        tracker = Movement(model, layers=st.layers or None)
        options["criterion"] = tracker.criterion()
        gradual = Gradual(model, st.sparsity, start=0, end=end, every=min(st.every, end), **options)
        pruner: Any = _Both(tracker.accumulate, gradual.step)
    elif st.schedule == "gradual":
        pruner = Gradual(model, st.sparsity, start=0, end=end, every=min(st.every, end), **options)
    else:
        pruner = RigL(model, st.sparsity, every=st.every, end=end, alpha=st.alpha,
                      distribution=st.distribution, regrow="gradient" if st.schedule == "rigl" else "random",
                      layers=st.layers or None, seed=st.seed)
    # RigL/SET zero the optimizer state of regrown weights once they know the optimizer
    hand_over = (lambda opt: setattr(pruner, "optimizer", opt)) if isinstance(pruner, RigL) else None
    fit(st.epochs, pruner.step, recipe.seed + 100 * i, st.schedule, on_optimizer=hand_over)
    return []


class _Both:
    """``step()``: gather movement scores (the step's gradients are still there), then prune."""

    def __init__(self, gather: Callable[[], Any], prune_step: Callable[[], Any]) -> None:
        self.gather, self.prune_step = gather, prune_step

    def step(self, *_: Any) -> None:
        self.gather()
        self.prune_step()
