"""Hardware-aware pruning: latency lookup tables measured on this machine, and pruning to a measured latency.

``sc.prune(model, latency=0.5, granularity="channel", example_inputs=x, batch_size=32)`` (:func:`prune`)
chooses channel widths per layer so that the compacted model runs in half the dense time, measured here.
:class:`LatencyTable` holds per-layer timings at candidate widths, cached per machine; :mod:`.rounding`
reads the channel multiple the machine rewards from them (``round_to="auto"``).
"""

from __future__ import annotations

from .entry import prune
from .results import LatencyResult, Measured
from .rounding import choose_round_to, sweep
from .table import LatencyTable, LayerSpec, cache_dir
from .target import compare_latency, measured_round_to, prune_to_latency
from .timing import Timing

__all__ = ["LatencyResult", "LatencyTable", "LayerSpec", "Measured", "Timing", "cache_dir", "choose_round_to",
           "compare_latency",
           "measured_round_to", "prune", "prune_to_latency", "sweep"]
