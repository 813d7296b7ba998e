"""One decoder layer pruned on its calibration inputs: statistics, masks, the SparseGPT update.

The scores are the library's own (:func:`secateurs.criteria.wanda.wanda_scores`,
:func:`secateurs.criteria.obs.obs_scores`, ``|W|`` for magnitude), the masks come from
:mod:`secateurs.allocation` (each output row loses exactly its share, Wanda's comparison
group) or :class:`secateurs.granularity.NM` (``"2:4"`` along the input dimension), and
``sparsegpt`` then corrects the kept weights with :func:`secateurs.criteria.obs.surgeon`.
Everything here is a function of tensors and one module: the streaming driver and the
in-memory reference call the same code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..allocation import Slot, row_masks, to_keys
from ..criteria.obs import damped, obs_scores, surgeon
from ..criteria.wanda import wanda_scores
from ..errors import PruningError
from ..granularity import NM, parse

METHODS = ("sparsegpt", "wanda", "magnitude")
Forward = Callable[[nn.Module, Tensor], Tensor]


@dataclass(frozen=True)
class Target:
    """What each pruned layer must reach: a sparsity per row, or an ``N:M`` pattern."""

    sparsity: float
    nm: NM | None = None


def target(sparsity: float | str) -> Target:
    """Parse ``sparsity``: a float in (0, 1) or ``"N:M"``.

    Raises:
        PruningError: anything else, naming what is allowed.
    """
    if isinstance(sparsity, str):
        try:
            nm = parse(sparsity)
        except PruningError as e:
            raise PruningError(f"sparsity {sparsity!r}: {e}") from None
        if not isinstance(nm, NM):
            raise PruningError(f"sparsity {sparsity!r} is not allowed; pass a float in (0, 1) or 'N:M' like '2:4'")
        return Target(nm.sparsity, nm)
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 < sparsity < 1:
        raise PruningError(f"sparsity {sparsity!r} is out of range; pass a float in (0, 1) or 'N:M' like '2:4'")
    return Target(float(sparsity))


def check_method(method: str) -> str:
    """``method`` if it is one of :data:`METHODS`, else :class:`PruningError`."""
    if method not in METHODS:
        raise PruningError(f"method {method!r} is not allowed; allowed: {', '.join(METHODS)}")
    return method


def linears(layer: nn.Module) -> dict[str, nn.Linear]:
    """The layer's Linear modules by qualified name (the prunable weights)."""
    return {n: m for n, m in layer.named_modules() if isinstance(m, nn.Linear)}


def statistics(layer: nn.Module, batches: Iterable[Tensor], forward: Forward, method: str) -> dict[str, Tensor]:
    """Per Linear, the mean over tokens of ``x²`` per input (wanda) or of ``2 x xᵀ`` (sparsegpt)."""
    sums: dict[str, Tensor] = {}
    rows: dict[str, int] = {}

    def hook(name: str) -> Callable[..., None]:
        def add(_: nn.Module, args: tuple[Tensor, ...], __: Tensor) -> None:
            x = args[0].reshape(-1, args[0].shape[-1]).float()
            s = x.pow(2).sum(dim=0) if method == "wanda" else 2 * x.T @ x
            sums[name] = s if name not in sums else sums[name] + s
            rows[name] = rows.get(name, 0) + x.shape[0]
        return add

    handles = [m.register_forward_hook(hook(n)) for n, m in linears(layer).items()]
    try:
        for x in batches:
            forward(layer, x)
    finally:
        for h in handles:
            h.remove()
    return {n: sums[n] / rows[n] for n in sums}


def keep_mask(scores: Tensor, goal: Target, sparsity: float) -> Tensor:
    """Bool keep-mask: each row loses exactly ``round(sparsity · columns)`` lowest scores, or N:M."""
    keys = to_keys(scores, nonnegative=True)
    if goal.nm is not None:
        return goal.nm.select(keys, tuple(scores.shape))
    slot = Slot(scores.numel(), sparsity)
    return row_masks([slot], lambda _: iter([keys]), sparsity, [tuple(scores.shape)])[0].reshape(scores.shape)


def prune_weight(w: Tensor, method: str, stat: Tensor | None, goal: Target, sparsity: float,
                 name: str = "weight") -> tuple[Tensor, Tensor]:
    """``(new weight, keep mask)`` of a float32 weight matrix (out × in) by ``method``."""
    if method == "magnitude":
        keep = keep_mask(w.abs(), goal, sparsity)
        return w * keep, keep
    if stat is None:
        raise PruningError(f"{name} never ran on the calibration data; {method} needs its inputs")
    if method == "wanda":
        keep = keep_mask(wanda_scores(w, stat.sqrt()), goal, sparsity)
        return w * keep, keep
    inverse = torch.cholesky_inverse(torch.linalg.cholesky(damped(stat, name)))
    keep = keep_mask(obs_scores(w, inverse), goal, sparsity)
    return surgeon(w, keep, torch.linalg.cholesky(inverse, upper=True)), keep


def prune_layer(layer: nn.Module, batches: Iterable[Tensor], forward: Forward, method: str, goal: Target,
                sparsity: float) -> dict[str, Tensor]:
    """Prune every Linear of ``layer`` in place from its inputs ``batches``; returns the keep masks."""
    stats = {} if method == "magnitude" else statistics(layer, batches, forward, method)
    masks = {}
    with torch.no_grad():
        for name, lin in linears(layer).items():
            new, keep = prune_weight(lin.weight.float(), method, stats.get(name), goal, sparsity, name)
            lin.weight.copy_(new.to(lin.weight.dtype))
            masks[name] = keep
    return masks


def round_to(layer: nn.Module, dtypes: dict[str, torch.dtype]) -> None:
    """Round each parameter through its stored dtype, so later layers see what the saved model computes."""
    with torch.no_grad():
        for name, p in layer.named_parameters():
            dtype = dtypes.get(name, p.dtype)
            if dtype != p.dtype:
                p.copy_(p.to(dtype).to(p.dtype))


def fingerprint(batches: Iterable[Tensor]) -> str:
    """A short hash of the calibration token ids (``"none"`` when there are none)."""
    h = hashlib.sha256()
    n = 0
    for b in batches:
        h.update(str(tuple(b.shape)).encode())
        h.update(b.contiguous().numpy().tobytes())
        n += 1
    return h.hexdigest()[:16] if n else "none"
