"""``sc.prune``: to a sparsity (:func:`secateurs.pruning.prune`) or to a measured latency (:mod:`.target`).

It lives here, above :mod:`secateurs.surgery`, because a latency target needs the compacted model timed; a
sparsity is handed to :func:`secateurs.pruning.prune` unchanged (with ``round_to="auto"`` measured first).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .. import granularity as gran
from ..errors import PruningError
from ..pruning import PruneResult
from ..pruning import prune as prune_sparsity
from .target import measured_round_to, prune_to_latency

__all__ = ["prune"]


def prune(
    model: nn.Module,
    sparsity: float | None = None,
    *,
    latency: float | None = None,
    batch_size: int | None = None,
    round_to: int | str | None = None,
    **options: Any,
) -> PruneResult:
    """Prune ``model`` in place to a ``sparsity`` or to a measured ``latency`` (exactly one of the two).

    ``sc.prune(model, 0.9, ...)``: as :func:`secateurs.pruning.prune` (every keyword it takes is passed on).
    ``sc.prune(model, latency=0.5, granularity="channel", example_inputs=x, batch_size=32)``: channel widths
    chosen, layer by layer, so that the compacted model runs in half the dense model's measured time at batch
    32, removing the least importance (:func:`secateurs.hardware.prune_to_latency`; a
    :class:`~secateurs.hardware.LatencyResult` says what was predicted and measured).

    Args:
        model: the network.
        sparsity: the fraction of weights to remove.
        latency: the target latency, a fraction of the dense model's measured latency in (0, 1].
        batch_size: the batch the latency is measured at (default 1; only with ``latency``).
        round_to: channel counts rounded to multiples of this (see :func:`secateurs.pruning.prune`);
            ``"auto"`` measures the multiple on this machine. With ``latency`` the default is ``"auto"``.
        **options: the other keywords of :func:`secateurs.pruning.prune` (``criterion``, ``granularity``,
            ``example_inputs``, ``layers``, ...); with ``latency`` also ``table``, ``tries`` and ``timer``.

    Raises:
        PruningError: both or neither of ``sparsity`` and ``latency``, or a bad argument.

    Example:
        >>> import secateurs as sc, torch.nn as nn
        >>> round(sc.prune(nn.Sequential(nn.Linear(4, 8)), 0.5).sparsity, 2)
        0.5
    """
    if (sparsity is None) == (latency is None):
        raise PruningError("give sc.prune either sparsity= (a fraction of weights) or latency= (a fraction of the "
                           f"dense latency), not {'both' if latency is not None else 'neither'}")
    if latency is not None:
        if options.pop("hidden", False):
            raise PruningError("hidden=True prunes to a sparsity; with latency= the residual stream is kept "
                               "(leave hidden out)")
        return prune_to_latency(model, latency, batch_size=1 if batch_size is None else batch_size,
                                round_to="auto" if round_to is None else round_to, **options)
    if batch_size is not None:
        raise PruningError(f"batch_size={batch_size!r} is the batch a latency is measured at: it needs latency=")
    if round_to == "auto":
        round_to = _measured_round_to(model, options)
    return prune_sparsity(model, sparsity, round_to=round_to, **options)


def _measured_round_to(model: nn.Module, options: dict[str, Any]) -> int:
    """``round_to="auto"`` for a sparsity: measured on the slowest prunable layer at batch size 1."""
    group = gran.parse(options.get("granularity", "unstructured"))
    inputs = options.get("example_inputs")
    if not group.units or inputs is None:
        raise PruningError("round_to='auto' rounds channel counts: it needs granularity channel, neuron or filter "
                           "and example_inputs=")
    return measured_round_to(model, inputs, layers=options.get("layers"))
