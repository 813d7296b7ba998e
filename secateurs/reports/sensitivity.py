"""Sensitivity scans: prune one layer at a time and watch the metric.

Layers differ in how much pruning they tolerate; Han et al. (2015, "Learning
both Weights and Connections for Efficient Neural Networks") scan AlexNet this
way and find the first convolution the most sensitive. A scan prunes each layer
alone to each sparsity, measures the model, and puts the layer back exactly as
it was; the result suggests a per-layer allocation for :func:`secateurs.prune`.
"""

from __future__ import annotations

import glob
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .. import criteria, granularity as gran, masking
from ..errors import PruningError, check_sparsity
from ..files import atomic_write
from ..layers import Target, resolve_layers
from ..progress import Progress
from ..pruning import prune

Evaluate = Callable[[nn.Module], float]


@dataclass
class SensitivityResult:
    """What :func:`sensitivity` measured.

    Attributes:
        baseline: the metric of the model as it was given.
        sparsities: the sparsities scanned, ascending.
        table: ``{qualified_param_name: [metric at each sparsity]}``, in model order.
    """

    baseline: float
    sparsities: tuple[float, ...]
    table: dict[str, list[float]]

    def __str__(self) -> str:
        head = ["layer", *(f"{p:g}" for p in self.sparsities)]
        body = [[name, *(f"{v:.4f}" for v in row)] for name, row in self.table.items()]
        widths = [max(len(line[i]) for line in (head, *body)) for i in range(len(head))]
        fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
        lines = [fmt.format(*line) for line in (head, *body)]
        return "\n".join([*lines, f"baseline {self.baseline:.4f}"])

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {
            "baseline": self.baseline,
            "sparsities": list(self.sparsities),
            "table": {name: list(row) for name, row in self.table.items()},
        }

    def layers_for(self, max_loss: float) -> dict[str, float | None]:
        """Per-layer sparsities that cost at most ``max_loss`` each, for ``sc.prune(layers=...)``.

        For each layer, the highest scanned sparsity whose metric is at least
        ``baseline - max_loss`` with every lower sparsity passing too (the scan
        stops at a layer's first failure, so a lucky bump later is not trusted).
        The losses were measured one layer at a time; pruning several layers
        together usually costs more than any one of them.

        Args:
            max_loss: the metric each layer may lose, ``>= 0`` (0.01 = one point of accuracy).

        Returns:
            ``{qualified_param_name: sparsity}``, ``None`` (exclude the layer) where even
            the lowest sparsity loses too much. Layers the scan left out are not keys,
            so ``sc.prune`` gives them its ``sparsity``.

        Raises:
            PruningError: when ``max_loss`` is not a number ``>= 0``.

        Example:
            >>> r = SensitivityResult(0.9, (0.5, 0.9), {"fc1.weight": [0.9, 0.7], "fc2.weight": [0.5, 0.5]})
            >>> r.layers_for(0.05)
            {'fc1.weight': 0.5, 'fc2.weight': None}
        """
        if isinstance(max_loss, bool) or not isinstance(max_loss, (int, float)) or not max_loss >= 0:
            raise PruningError(f"max_loss must be a number >= 0 (the metric a layer may lose), got {max_loss!r}")
        order = sorted(range(len(self.sparsities)), key=lambda i: self.sparsities[i])
        out: dict[str, float | None] = {}
        for name, row in self.table.items():
            best = None
            for i in order:
                if not _within(self.baseline - row[i], float(max_loss)):
                    break
                best = self.sparsities[i]
            out[name] = best
        return out

    def plot(self, path: str | os.PathLike[str]) -> None:
        """Write a PNG: the metric against sparsity, one line per layer, the baseline dashed.

        Args:
            path: the PNG to write (atomically; missing folders are created).
        """
        fig = Figure(figsize=(6.4, 4.2))
        FigureCanvasAgg(fig)  # no pyplot: no global backend switch, nothing to close
        ax = fig.add_subplot()
        for name, row in self.table.items():
            ax.plot(self.sparsities, row, marker="o", markersize=3, label=name)
        ax.axhline(self.baseline, color="black", linestyle="--", linewidth=1, label="baseline")
        ax.set_xlabel("sparsity of the layer alone")
        ax.set_ylabel("metric")
        ax.set_title("Sensitivity: each layer pruned alone", fontsize=11)
        ax.legend(fontsize=7, frameon=False)
        fig.tight_layout()
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


def _within(loss: float, max_loss: float) -> bool:
    # Metrics are often fractions k/n; 0.8 - 0.7 > 0.1 in floats, and should pass.
    return loss <= max_loss or math.isclose(loss, max_loss, rel_tol=1e-9, abs_tol=1e-12)


def sensitivity(
    model: nn.Module,
    evaluate: Evaluate,
    sparsities: Sequence[float] = (0.5, 0.7, 0.8, 0.9, 0.95),
    *,
    criterion: str | criteria.Criterion = "magnitude",
    granularity: object = "unstructured",
    layers: Mapping[str, float | None] | None = None,
    data: Iterable[Any] | None = None,
    loss_fn: Callable[..., Tensor] | None = None,
    example_inputs: tuple[Any, ...] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> SensitivityResult:
    """Prune each layer alone to each sparsity, measure, and put it back.

    The model comes back bit-identical: each layer's stored weights and its mask
    (or absence of one) are restored after every probe, and every module's
    train/eval mode at the end, even when ``evaluate`` or pruning raises.
    A layer already pruned compounds as with :func:`secateurs.prune`: probing it
    below its current sparsity measures it as it is.

    Args:
        model: the network, pruned or not.
        evaluate: ``evaluate(model) -> float``, higher is better (e.g. accuracy).
        sparsities: the sparsities to try, each in [0, 1); scanned in ascending order.
        criterion: a registered name (see :func:`secateurs.criteria`) or a Criterion.
        granularity: what is removed together, as for :func:`secateurs.prune`.
        layers: which layers to scan, as ``sc.prune``'s ``layers=``: a pattern mapped
            to ``None`` leaves those layers out (other values are ignored here).
        data: batches for criteria that need data; a one-shot iterator is read once
            into a list, since every probe prunes again.
        loss_fn: ``loss_fn(outputs, targets)`` for criteria that need gradients.
        example_inputs: inputs for structured granularities.
        seed: seed for stochastic criteria (the same for every probe).
        progress: show a progress bar over (layer, sparsity) pairs (only on a terminal).

    Returns:
        A :class:`SensitivityResult`; ``result.layers_for(0.01)`` goes straight to
        ``sc.prune(model, sparsity=..., layers=...)``.

    Raises:
        PruningError: empty ``sparsities`` or one outside [0, 1), a non-callable
            ``evaluate`` or one that returns no number, an unknown criterion or
            granularity, a ``layers`` pattern that matches nothing, or a layer whose
            weight carries another parametrization (its pruning could not be undone).

    Example:
        >>> import secateurs as sc, torch, torch.nn as nn
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
        >>> accuracy = lambda m: float((m(x).argmax(dim=1) == y).float().mean())
        >>> r = sc.sensitivity(net, accuracy, (0.0, 0.5), progress=False)
        >>> list(r.table), r.table["0.weight"][0] == r.baseline
        (['0.weight', '2.weight'], True)
    """
    grid = _check_args(evaluate, sparsities, criterion, granularity, seed)
    targets = resolve_layers(model, layers, 0.0)
    _check_undoable(targets)
    if isinstance(data, Iterator):
        data = list(data)
    options = dict(criterion=criterion, granularity=granularity, scope="local", data=data,
                   loss_fn=loss_fn, example_inputs=example_inputs, seed=seed)
    modes = [(m, m.training) for m in model.modules()]
    before = {k: v.clone() for k, v in masking.masks(model).items()}  # every probe is undone to this
    bar = Progress(len(targets) * len(grid), "sensitivity", unit="eval", enabled=progress)
    try:
        baseline = _measure(evaluate, model, "the baseline")
        table: dict[str, list[float]] = {}
        for t in targets:
            bar.set_postfix_str(t.param)
            table[t.param] = []
            for p in grid:
                pattern = glob.escape(t.module_name)  # names are literal, not patterns
                with _restored(model, t.module, before):
                    prune(model, sparsity=p, layers={"*": None, pattern: p}, **options)
                    table[t.param].append(_measure(evaluate, model, f"{t.param} at sparsity {p:g}"))
                bar.update()
    finally:
        bar.close()
        for m, training in modes:  # evaluate may have switched them; not m.train(), which recurses
            m.training = training
    return SensitivityResult(baseline, grid, table)


def _check_args(
    evaluate: object, sparsities: Sequence[float], criterion: object, granularity: object, seed: int
) -> tuple[float, ...]:
    """Validate before the baseline is measured; the sorted, de-duplicated sparsities."""
    if not callable(evaluate):
        raise PruningError(f"evaluate must be a callable evaluate(model) -> float, got {evaluate!r}")
    if isinstance(sparsities, (str, bytes)) or not isinstance(sparsities, Iterable):
        raise PruningError(f"sparsities must be a sequence of numbers in [0, 1), got {sparsities!r}")
    grid = [check_sparsity(p, f"sparsities[{i}]") for i, p in enumerate(sparsities)]
    if not grid:
        raise PruningError(f"sparsities must hold at least one number in [0, 1), got {sparsities!r}")
    criteria.get(criterion, seed=seed)  # an unknown name fails now, not after the baseline
    gran.parse(granularity)
    return tuple(sorted(set(grid)))


def _check_undoable(targets: Sequence[Target]) -> None:
    """A mask added on top of another parametrization could not be removed again."""
    for t in targets:
        if parametrize.is_parametrized(t.module, "weight") and masking.get_mask(t.module) is None:
            raise PruningError(
                f"{t.param} has a parametrization that is not a secateurs mask, so pruning it could "
                f"not be undone; leave it out with layers={{{glob.escape(t.module_name)!r}: None}}"
            )


def _measure(evaluate: Evaluate, model: nn.Module, what: str) -> float:
    value = evaluate(model)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise PruningError(f"evaluate must return a number; for {what} it returned {value!r}") from None


@contextmanager
def _restored(model: nn.Module, module: nn.Module, before: dict[str, torch.Tensor]) -> Iterator[None]:
    """On exit, every mask of ``model`` is as in ``before`` and ``module``'s stored weight as on entry.

    A probe may mask more than the layer's weight (its bias, BatchNorm entries and the
    next layer's columns for channel granularity) and criteria may write to the weights
    they prune, so all masks and the layer's values are put back.
    """
    weight = masking.original(module).detach().clone()
    try:
        yield
    finally:
        for name in masking.masks(model):
            module_name, _, tensor_name = name.rpartition(".")
            owner = model.get_submodule(module_name)
            if name in before:
                masking.set_mask(owner, before[name], tensor_name)
            else:
                masking.unmask(owner, tensor_name)  # which also puts the parameter order back
        with torch.no_grad():
            masking.original(module).copy_(weight)
