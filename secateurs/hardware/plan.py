"""The latency model of one network and the greedy allocation over it (in the spirit of NetAdapt and HALP).

A *space* is a set of coupled channels (units of :mod:`secateurs.coupled`) produced by the same layers: its
width (units kept) is what the allocation chooses, among *levels* (multiples of ``round_to``, and the full
width). Every plain Conv/Linear of the model is a timed layer: its input and output channel counts follow the
widths of the spaces it reads and writes, and its time at those counts comes from a
:class:`~.table.LatencyTable`. The predicted latency of a choice of widths is

    sum over timed layers of table[layer at its widths] + residual · (activations kept / activations dense)

where the *residual* is what the whole dense model measures beyond its timed layers (norms, activations,
pooling, additions: memory-bound work that shrinks with the activations).

:func:`descend` starts dense and repeatedly narrows the space whose next step loses the least importance per
millisecond saved (importance: the sum of the removed units' scores, the lowest first), looking further down
when one step saves nothing measurable (a width inside one SIMD step), until the prediction reaches a limit.
It returns the whole path, so the caller can pick a point on it by measuring.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .table import LatencyTable, LayerSpec

__all__ = ["Layer", "Problem", "Space", "Step", "descend", "levels"]


@dataclass
class Space:
    """Coupled channels produced by the same layers.

    Attributes:
        members: the layers that produce them (sorted names).
        roots: their unit ids (union–find roots), in the order of ``scores``.
        scores: one importance per unit (higher = more important).
        levels: the widths it may take, ascending, the full width last.
    """

    members: tuple[str, ...]
    roots: list[int]
    scores: Tensor
    levels: list[int]

    @property
    def width(self) -> int:
        """The full width (units)."""
        return len(self.roots)

    def loss(self, frm: int, to: int) -> float:
        """Importance removed going from ``frm`` units kept to ``to``: the scores ranked ``to .. frm - 1``."""
        ranked = torch.sort(self.scores, descending=True, stable=True).values
        return float(ranked[to:frm].sum())

    def kept(self, width: int) -> list[int]:
        """The roots of the ``width`` best-scored units."""
        order = torch.argsort(self.scores, descending=True, stable=True)[:width]
        return [self.roots[i] for i in order.tolist()]


@dataclass
class Layer:
    """A timed layer: its dense spec, the spaces its rows and columns belong to, and its activations.

    Attributes:
        name: module name.
        spec: the layer as it is (dense).
        rows: ``{space index: rows in it}``; the other rows never change.
        cols: ``{space index: input columns in it}`` (a Linear after a flatten reads several per channel).
        volume: output activation elements per output channel.
    """

    name: str
    spec: LayerSpec
    rows: dict[int, int] = field(default_factory=dict)
    cols: dict[int, int] = field(default_factory=dict)
    volume: float = 0.0

    def channels(self, widths: Sequence[int], spaces: Sequence[Space]) -> tuple[int, int]:
        """``(c_in, c_out)`` at ``widths``."""
        c_out = self.spec.c_out - sum(n - n * widths[s] // spaces[s].width for s, n in self.rows.items())
        c_in = self.spec.c_in - sum(n - n * widths[s] // spaces[s].width for s, n in self.cols.items())
        return c_in, c_out


@dataclass
class Problem:
    """What the allocation works on: spaces, timed layers and the residual of the dense model (ms)."""

    spaces: list[Space]
    layers: list[Layer]
    residual_ms: float = 0.0
    _ms: dict[tuple[int, int, int], float] = field(default_factory=dict, repr=False)

    def dense(self) -> tuple[int, ...]:
        """Every space at full width."""
        return tuple(s.width for s in self.spaces)

    def layer_ms(self, i: int, widths: Sequence[int], table: LatencyTable) -> float:
        """Layer ``i``'s table time at ``widths``."""
        c_in, c_out = self.layers[i].channels(widths, self.spaces)
        key = (i, c_in, c_out)
        if key not in self._ms:
            self._ms[key] = table.get(self.layers[i].spec.at(c_in, c_out)).ms
        return self._ms[key]

    def volume(self, widths: Sequence[int]) -> float:
        """Output activation elements of the timed layers at ``widths``."""
        return sum(layer.channels(widths, self.spaces)[1] * layer.volume for layer in self.layers)

    def predict(self, widths: Sequence[int], table: LatencyTable) -> float:
        """Predicted milliseconds of the whole model at ``widths``."""
        dense = self.volume(self.dense())
        residual = self.residual_ms * (self.volume(widths) / dense if dense else 1.0)
        return sum(self.layer_ms(i, widths, table) for i in range(len(self.layers))) + residual

    def spread(self, widths: Sequence[int], table: LatencyTable) -> float:
        """The prediction's noise: the table spreads of its layers added in quadrature."""
        total = 0.0
        for layer in self.layers:
            total += table.get(layer.spec.at(*layer.channels(widths, self.spaces))).spread_ms ** 2
        return math.sqrt(total)


def levels(width: int, round_to: int, least: int) -> list[int]:
    """The widths a space of ``width`` units may take: multiples of ``round_to`` from ``least`` up, and ``width``.

    Example:
        >>> levels(20, 8, 1), levels(16, 4, 5), levels(3, 8, 1)
        ([8, 16, 20], [8, 12, 16], [3])
    """
    least = max(1, least)
    return sorted({k for k in range(round_to, width, round_to) if k >= least} | {width})


@dataclass(frozen=True)
class Step:
    """One point of the allocation's path: the widths, their predicted ms and the importance removed so far."""

    widths: tuple[int, ...]
    predicted_ms: float
    loss: float


def _best_move(problem: Problem, table: LatencyTable, widths: tuple[int, ...], now: float
               ) -> tuple[tuple[int, ...], float, float] | None:
    """The move with the least importance lost per millisecond saved: (widths, predicted ms, loss)."""
    best, best_ratio = None, math.inf
    for s, space in enumerate(problem.spaces):
        lower = [w for w in space.levels if w < widths[s]]
        for to in reversed(lower):  # one level down; further when a level saves nothing measurable
            moved = widths[:s] + (to,) + widths[s + 1:]
            ms = problem.predict(moved, table)
            if ms < now:
                loss = space.loss(widths[s], to)
                ratio = loss / (now - ms)
                if ratio < best_ratio:
                    best, best_ratio = (moved, ms, loss), ratio
                break
    return best


def descend(problem: Problem, table: LatencyTable, stop_ms: float,
            start: Mapping[int, int] | None = None) -> list[Step]:
    """The greedy path from dense (or ``start``) down until the prediction is at most ``stop_ms`` or no move
    saves time. The first step is the start itself."""
    widths = list(problem.dense())
    for s, w in (start or {}).items():
        widths[s] = w
    now = problem.predict(widths, table)
    path = [Step(tuple(widths), now, 0.0)]
    while now > stop_ms:
        move = _best_move(problem, table, path[-1].widths, now)
        if move is None:
            break
        moved, now, loss = move
        path.append(Step(moved, now, path[-1].loss + loss))
    return path
