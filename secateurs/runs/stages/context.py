"""What a stage's :meth:`~secateurs.runs.stages.StageBase.run` is given: :class:`StageContext`.

It carries what the runner has (the recipe, the stage's index, the model, the data, the output folder,
the weights before training) and the steps every stage shares: training with the recipe's settings,
calibration batches, and the rows of ``metrics.json``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ...analysis.summary import summary
from ...training import distributed
from ...training.loop import evaluate, train
from ...training.regularizers import penalty
from ..settings import Train

if TYPE_CHECKING:
    from ..recipes import Recipe

__all__ = ["Row", "StageContext", "agree", "format_accuracy", "loss_penalty", "row", "say"]

Row = dict[str, Any]
"""One entry of ``metrics.json``'s ``stages``: at least ``name``, ``accuracy`` and ``sparsity``."""


def say(quiet: bool, text: str) -> None:
    """Print ``text`` unless ``quiet``."""
    if not quiet:
        print(text, flush=True)


def format_accuracy(acc: float | None) -> str:
    """``"94.60%"``, or ``"n/a (no data)"``."""
    return "n/a (no data)" if acc is None else f"{acc:.2%}"


def row(name: str, accuracy: float | None, model: nn.Module, dense_params: int) -> Row:
    """A stage's metrics; sparsity relative to the dense model's prunable weights (merged layers shrink)."""
    nonzero = summary(model).nonzero
    return {"name": name, "accuracy": accuracy, "sparsity": 1.0 - nonzero / dense_params if dense_params else 0.0}


def agree(model: nn.Module, stage: str, quiet: bool) -> None:
    """Under torchrun, stop the run if the ranks' masks, weights or buffers differ after ``stage``."""
    checked = distributed.verify_identical(model)
    if checked:
        say(quiet, f"{stage}: {checked} tensors identical on all {distributed.world()} processes")


def loss_penalty(recipe: Recipe) -> Callable[[nn.Module], Any] | None:
    """The recipe's regulariser as ``f(model) -> loss term``, or ``None``."""
    if recipe.penalty is None:
        return None
    return functools.partial(penalty, kind=recipe.penalty.kind, weight=recipe.penalty.weight)


@dataclass
class StageContext:
    """What a stage may use while it runs.

    Attributes:
        recipe: the whole recipe (training settings, seed, penalty, data).
        index: the stage's number in ``recipe.prune``, from 1 (labels, seeds, folders).
        model: the model as the stages before left it.
        out: the run's output folder.
        train_data: the training split, or ``None`` without data.
        test_data: the split accuracy is measured on, or ``None``.
        example: example inputs (tracing, FLOPs), or ``None``.
        init_state: the weights before training, for rewinding to them (lottery tickets), or ``None``.
        quiet: no progress output.
        dense_params: the dense model's prunable weights, which rows' sparsity is relative to
            (default: those of ``model``).
    """

    recipe: Recipe
    index: int
    model: nn.Module
    out: Path
    train_data: Dataset[Any] | None = None
    test_data: Dataset[Any] | None = None
    example: tuple[Any, ...] | None = None
    init_state: dict[str, Tensor] | None = None
    quiet: bool = False
    dense_params: int | None = None

    def __post_init__(self) -> None:
        if self.dense_params is None:
            self.dense_params = summary(self.model).params

    def accuracy(self, model: nn.Module) -> float | None:
        """Top-1 accuracy of ``model`` on :attr:`test_data` (``None`` without it)."""
        return None if self.test_data is None else evaluate(model, self.test_data)

    def calibration(self, batches: int) -> list[Any] | None:
        """The first ``batches`` shuffled training batches, for criteria that need data (``None`` without data)."""
        if self.train_data is None:
            return None
        seed = self.recipe.seed + 1000 * self.index
        loader = DataLoader(self.train_data, batch_size=self.recipe.train.batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(seed))
        return [b for _, b in zip(range(batches), loader)]

    def train(self, model: nn.Module, settings: Train, seed: int, desc: str, **hooks: Any) -> None:
        """Train ``model`` on :attr:`train_data` with ``settings``, adding the recipe's penalty.

        ``hooks`` go to :func:`secateurs.training.train` (``on_step``, ``extra_params``, ``extra_lr``,
        ``on_optimizer``); ``extra`` is a loss term ``f(model)`` added to the recipe's penalty.
        """
        base, extra = loss_penalty(self.recipe), hooks.pop("extra", None)
        both = extra if base is None else (lambda m: base(m) + extra(m)) if extra is not None else base
        train(model, self.train_data, epochs=settings.epochs, lr=settings.lr, batch_size=settings.batch_size,
              weight_decay=settings.weight_decay, seed=seed, desc=desc, progress=not self.quiet, penalty=both,
              **hooks)

    def fit(self, epochs: int, desc: str, seed_offset: int = 0, **hooks: Any) -> None:
        """Train :attr:`model` ``epochs`` epochs with the recipe's ``train`` settings (see :meth:`train`)."""
        settings = self.recipe.train.model_copy(update={"epochs": epochs})
        self.train(self.model, settings, self.recipe.seed + 100 * self.index + seed_offset, desc, **hooks)

    def end_step(self, epochs: int) -> int:
        """The step a schedule training ``epochs`` epochs reaches its target: three quarters of the way, so the
        last quarter trains at the final sparsity."""
        steps = epochs * math.ceil(len(self.train_data) / self.recipe.train.batch_size)  # type: ignore[arg-type]
        return max(1, int(0.75 * steps))

    def row(self, model: nn.Module, name: str) -> Row:
        """The row ``name`` for ``model``: its accuracy and sparsity now."""
        return row(name, self.accuracy(model), model, self.dense_params or 0)

    def report(self, entry: Row) -> None:
        """Print a row's accuracy and sparsity."""
        say(self.quiet, f"{entry['name']}: accuracy {format_accuracy(entry['accuracy'])}, "
                        f"sparsity {entry['sparsity']:.2%}")

    def done(self, model: nn.Module, label: str) -> Row:
        """The row of a stage that pruned ``model`` once: rank 0's masks for every rank, checked, measured, printed."""
        distributed.broadcast_masks(model)  # rank 0's decision, whatever the criterion saw
        agree(model, label, self.quiet)
        entry = self.row(model, label)
        self.report(entry)
        return entry

    def close(self, rows: list[Row], label: str) -> list[Row]:
        """The rows of a stage that trained while pruning :attr:`model`: its own ``rows`` (the last one with the
        sparsity reached), then ``label`` with the accuracy after it."""
        if rows:
            rows = [*rows[:-1], {**rows[-1], "sparsity": 1.0 - summary(self.model).nonzero / (self.dense_params or 1)}]
        agree(self.model, label, self.quiet)
        entry = self.row(self.model, label)
        self.report(entry)
        return [*rows, entry]
