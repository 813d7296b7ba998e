"""What latency-targeted pruning reports: :class:`Measured` points and the :class:`LatencyResult`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..pruning import PruneResult
from .timing import Timing

__all__ = ["LatencyResult", "Measured"]


@dataclass(frozen=True)
class Measured:
    """One point of the path timed whole: its predicted and measured latency, as fractions of dense.

    Attributes:
        step: the point's index on the allocation path.
        predicted: predicted latency / dense.
        ratio: median over rounds of (pruned / dense) latency, the two timed in the same round.
        ratio_spread: half the interquartile range of those per-round ratios.
        ms: the compacted model's timing.
        dense_ms: the dense model's timing in the same rounds.
    """

    step: int
    predicted: float
    ratio: float
    ratio_spread: float
    ms: Timing
    dense_ms: Timing

    def meets(self, target: float) -> bool:
        """Whether the target is reached within the measured spread, the spread counted up to a tenth of the
        target (on a machine so busy that the spread is larger, nothing counts as met).

        Example:
            >>> t = Timing(1.0, 0.0, 3)
            >>> [Measured(0, 0.5, r, s, t, t).meets(0.5) for r, s in ((0.5, 0.0), (0.54, 0.05), (0.7, 0.5))]
            [True, True, False]
        """
        return self.ratio - min(self.ratio_spread, 0.1 * target) <= target


@dataclass
class LatencyResult(PruneResult):
    """:class:`~secateurs.PruneResult` of a latency target, with what was predicted and measured.

    Attributes:
        latency: the target, a fraction of the dense model's measured latency.
        met: whether the compacted model's measured latency reached it within its spread
            (:meth:`Measured.meets`).
        measured: the chosen point's measurement (``measured.ratio`` is the latency reached, a fraction).
        predicted_ms: the latency model's prediction for the chosen widths, and ``predicted_spread_ms``.
        tries: every point measured, in order.
        widths: ``{layer: output channels}`` of the compacted model's timed layers.
        round_to: the channel multiple used (chosen by measurement with ``round_to="auto"``).
        table: the latency table's key, machine, entries and path.
        compacted: the compacted model that was measured (``sc.compact`` of the masked model).
    """

    latency: float = 1.0
    met: bool = False
    measured: Measured | None = None
    predicted_ms: float = 0.0
    predicted_spread_ms: float = 0.0
    tries: list[Measured] = field(default_factory=list)
    widths: dict[str, int] = field(default_factory=dict)
    round_to: int = 1
    table: dict[str, Any] = field(default_factory=dict)
    compacted: nn.Module | None = field(default=None, repr=False)

    def __str__(self) -> str:
        m = self.measured
        head = (f"latency target {self.latency:g} of dense: "
                + ("met" if self.met else "NOT reached") + f" (round_to={self.round_to})")
        if m is not None:
            head += (f"\n  predicted {self.predicted_ms:.3f} ± {self.predicted_spread_ms:.3f} ms; measured "
                     f"{m.ms.ms:.3f} ± {m.ms.spread_ms:.3f} ms vs dense {m.dense_ms.ms:.3f} ± "
                     f"{m.dense_ms.spread_ms:.3f} ms = {m.ratio:.3f} ± {m.ratio_spread:.3f} of dense")
        return head + "\n" + super().__str__()
