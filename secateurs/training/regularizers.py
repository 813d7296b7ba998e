"""Sparsity-inducing penalties to add to the training loss: L1, L2, L∞ and group lasso.

Each penalty is a differentiable scalar over the prunable weights (Linear and
Conv1d/2d/3d, never biases or norms). It is computed on the weight *as the
layer computes it*, ``module.weight``, which is ``original ⊙ mask`` once a mask
is attached: pruned weights add nothing and receive a zero gradient, so the
penalty only shapes the weights that are still alive. Minimising
``loss + penalty(model, "group_lasso")`` and then pruning with a matching
granularity (``"neuron"`` or ``"channel"``) is the train-sparse-then-prune
recipe of Wen et al. 2016 (structured sparsity learning).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from ..errors import PruningError, check_choice
from ..layers import include, resolve_layers

PENALTIES: tuple[str, ...] = ("l1", "l2", "linf", "group_lasso")
"""Names accepted by :func:`penalty`'s ``kind`` (recipes validate against this)."""

GROUPS: tuple[str, ...] = ("neuron", "channel", "filter", "input")
"""Group-lasso groupings: output rows/filters (the first three are synonyms) or input columns."""

_OUTPUT_GROUPS = frozenset({"neuron", "channel", "filter"})

Term = Callable[[Tensor, str, int], Tensor]
"""One layer's unweighted penalty: ``(weight, groups, conv_groups) -> scalar``."""


def penalty(
    model: nn.Module,
    kind: str,
    weight: float = 1e-4,
    *,
    layers: Mapping[str, object | None] | None = None,
    groups: str = "neuron",
) -> Tensor:
    r"""A sparsity-inducing penalty over the prunable weights, to add to the loss.

    With ``W_l`` the (masked) weight of prunable layer ``l`` and ``λ = weight``:

    - ``"l1"``: ``λ · Σ_l Σ_i |w_i|`` (lasso; pushes single weights to exactly 0).
    - ``"l2"``: ``λ · Σ_l Σ_i w_i²``, the *squared* L2 norm, i.e. weight decay.
      Unlike torch's optimizer ``weight_decay``, which decays the stored originals
      (pruned entries included, see :func:`secateurs.restore`), this decays the
      weights the layers use, so pruned entries are left alone.
    - ``"linf"``: ``λ · Σ_l max_i |w_i|``, the largest magnitude *per layer*,
      summed over layers (ties share the subgradient equally).
    - ``"group_lasso"``: ``λ · Σ_l Σ_g √|g| · ‖w_g‖₂``, with groups ``g`` the output
      rows (neurons, conv filters) or the input columns (input channels) and
      ``|g|`` the number of weights in a group. The √|g| factor is Yuan & Lin
      (2006)'s, used for pruning by Wen et al. (2016): it keeps large groups from
      being favoured. Drives whole groups to zero together.

    Args:
        model: the network; its masks, if any, are respected.
        kind: one of :data:`PENALTIES`.
        weight: the coefficient ``λ >= 0``.
        layers: which layers to penalise, as in :func:`secateurs.prune`: names or
            glob patterns mapped to any value to include them or ``None`` to
            exclude them. Default: every prunable layer.
        groups: for ``"group_lasso"``: ``"neuron"`` (also ``"channel"``,
            ``"filter"``) for output rows, ``"input"`` for input columns. For a
            grouped convolution an input channel's group holds the filters that read it.

    Returns:
        A 0-d tensor, differentiable with respect to the weights (float32 at
        least, so half-precision weights do not overflow the sum).

    Raises:
        PruningError: an unknown ``kind`` or ``groups``, a negative or non-finite
            ``weight``, a bad ``layers``, or a model without prunable layers.

    Example:
        >>> fc = nn.Linear(2, 2, bias=False)
        >>> with torch.no_grad():
        ...     _ = fc.weight.copy_(torch.tensor([[3.0, -4.0], [0.0, 1.0]]))
        >>> [penalty(fc, k, 1.0).item() for k in ("l1", "l2", "linf")]
        [8.0, 26.0, 4.0]
        >>> round(penalty(fc, "group_lasso", 1.0).item(), 4)  # √2 · (5 + 1)
        8.4853
    """
    check_choice(kind, "kind", PENALTIES)
    check_choice(groups, "groups", GROUPS)
    coefficient = _check_weight(weight)
    term = _TERMS[kind]
    total: Tensor | None = None
    for target in resolve_layers(model, include(layers) if isinstance(layers, Mapping) else layers, 0.0):
        w = target.module.weight  # masked when a mask is attached
        w = w.to(torch.promote_types(w.dtype, torch.float32))
        value = term(w, groups, getattr(target.module, "groups", 1))
        total = value if total is None else total + value.to(total.device)
    assert total is not None  # resolve_layers returns at least one layer or raises
    return coefficient * total


def _check_weight(weight: object) -> float:
    """``weight`` as a float, or :class:`PruningError` unless it is a finite number >= 0."""
    if (
        isinstance(weight, bool)
        or not isinstance(weight, (int, float))
        or not math.isfinite(weight)
        or weight < 0
    ):
        raise PruningError(
            f"weight must be a finite number >= 0 (the penalty's coefficient), got {weight!r}"
        )
    return float(weight)


def _group_rows(w: Tensor, groups: str, conv_groups: int = 1) -> Tensor:
    """The weight as a matrix with one group per row.

    Args:
        w: a Linear ``(out, in)`` or Conv ``(out, in / conv_groups, *kernel)`` weight.
        groups: ``"neuron"``/``"channel"``/``"filter"`` (output rows) or ``"input"``.
        conv_groups: the convolution's ``groups``; input channel ``c`` of a grouped
            convolution is read only by the filters of its own group.

    Returns:
        ``(out, in·k)`` for output groups, ``(in, out/conv_groups · k)`` for input groups.
    """
    if groups in _OUTPUT_GROUPS:
        return w.flatten(1)
    per_group = w.unflatten(0, (conv_groups, w.shape[0] // conv_groups))  # (G, out/G, in/G, *k)
    return per_group.transpose(1, 2).flatten(2).flatten(0, 1)  # (G·in/G, out/G·k)


def _group_lasso(w: Tensor, groups: str, conv_groups: int) -> Tensor:
    rows = _group_rows(w, groups, conv_groups)
    # The gradient of ‖·‖₂ at a zero group (all pruned) is taken as 0 by torch, not NaN.
    return math.sqrt(rows.shape[1]) * torch.linalg.vector_norm(rows, dim=1).sum()


_TERMS: dict[str, Term] = {
    "l1": lambda w, *_: w.abs().sum(),
    "l2": lambda w, *_: w.square().sum(),
    "linf": lambda w, *_: w.abs().amax(),
    "group_lasso": _group_lasso,
}
