"""Learned masks: movement scores and hard-concrete L0 gates, both learned during training.

Two ways to let training decide what to remove:

* :class:`Movement` — movement pruning (Sanh, Wolf & Rush, "Movement Pruning:
  Adaptive Sparsity by Fine-Tuning", NeurIPS 2020). A score per weight
  accumulates ``S ← S − W ⊙ ∂L/∂W`` at every step; weights that training pushes
  towards zero get low scores, whatever their size. Prune by it with
  ``sc.prune(model, 0.9, criterion=movement.criterion())``.
* :class:`L0Gates` — hard-concrete gates on output neurons / channels (Louizos,
  Welling & Kingma, "Learning Sparse Neural Networks through L0
  Regularization", ICLR 2018). A trainable ``log_alpha`` per output row, an
  expected-L0 penalty added to the loss, and :meth:`L0Gates.finalize` that turns
  closed gates into secateurs masks.

Example:
    >>> import secateurs as sc, torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> movement = Movement(net)
    >>> net(torch.randn(3, 4)).sum().backward()
    >>> movement.accumulate()
    >>> round(sc.prune(net, 0.5, criterion=movement.criterion()).sparsity, 2)
    0.5
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from .. import masking
from ..criteria.movement import MovementScore
from ..errors import PruningError
from ..layers import Layers, select


# ---------------------------------------------------------------- movement pruning


class Movement:
    """Movement scores ``S = −Σ_t W_t ⊙ ∂L_t/∂W_t`` accumulated over training steps.

    Sanh, Wolf & Rush (NeurIPS 2020), hard movement pruning: the first-order
    change in loss when a weight moves away from zero. A weight that training
    shrinks (``W`` and ``∂L/∂W`` of the same sign: gradient descent moves it
    toward 0) loses score; one that grows gains score. The paper scales the sum
    by the learning rate; a constant factor changes no ranking and is left out.

    ``W`` is the stored weight (:func:`secateurs.masking.original`) and
    ``∂L/∂W`` its gradient, which for a masked layer is that of the masked use
    (zero for pruned entries, so their scores stop moving).

    Usage::

        movement = Movement(model)
        for x, y in loader:
            loss = F.cross_entropy(model(x), y); loss.backward()
            movement.accumulate()          # after backward, before optimizer.step()
            optimizer.step(); optimizer.zero_grad()
        sc.prune(model, 0.9, criterion=movement.criterion())

    Args:
        model: the network.
        layers: which prunable layers to track (see :func:`secateurs.layers.select`); default all.

    Attributes:
        steps: number of :meth:`accumulate` calls since creation or :meth:`reset`.
    """

    def __init__(self, model: nn.Module, *, layers: Layers = None) -> None:
        self._layers = {masking.param_name(n): m for n, m in select(model, layers)}
        self._scores = {
            name: torch.zeros(masking.original(m).shape, dtype=torch.float32, device=masking.original(m).device)
            for name, m in self._layers.items()
        }
        self.steps = 0

    def accumulate(self) -> None:
        """Add ``−W ⊙ ∂L/∂W`` to every score, reading the gradients left by ``loss.backward()``.

        Layers without a gradient (unused in this forward pass) are skipped.

        Raises:
            PruningError: when no tracked layer has a gradient.
        """
        seen = 0
        with torch.no_grad():
            for name, module in self._layers.items():
                w = masking.original(module)
                if w.grad is None:
                    continue
                self._scores[name].sub_(w.detach().float() * w.grad.float())
                seen += 1
        if not seen:
            raise PruningError(
                "Movement.accumulate() found no gradient on the tracked weights; "
                "call it after loss.backward() and before optimizer.zero_grad()"
            )
        self.steps += 1

    def scores(self) -> dict[str, Tensor]:
        """``{qualified param name: S}`` (copies, float32, the weight's shape)."""
        return {name: s.clone() for name, s in self._scores.items()}

    def reset(self) -> None:
        """Set every score back to zero (e.g. between pruning rounds)."""
        for s in self._scores.values():
            s.zero_()
        self.steps = 0

    def criterion(self) -> MovementScore:
        """A criterion scoring each weight by its current movement score.

        Example:
            >>> import secateurs as sc, torch, torch.nn as nn
            >>> net = nn.Linear(2, 2)
            >>> m = Movement(net)
            >>> net(torch.ones(1, 2)).sum().backward(); m.accumulate()
            >>> _ = sc.prune(net, 0.5, criterion=m.criterion())
        """
        return MovementScore(tracker=self)


# ---------------------------------------------------------------- hard-concrete L0 gates

EPS = 1e-6
"""``u`` is drawn from ``U(EPS, 1 − EPS)`` so that ``log u`` and ``log(1 − u)`` stay finite."""


def hard_concrete(log_alpha: Tensor, u: Tensor, beta: float = 2 / 3, gamma: float = -0.1,
                  zeta: float = 1.1) -> Tensor:
    """A hard-concrete sample (Louizos et al., 2018, eq. 10), differentiable in ``log_alpha``.

    ``s = sigmoid((log u − log(1 − u) + log_alpha) / beta)``, stretched to
    ``(gamma, zeta)`` and clipped: ``z = min(1, max(0, s·(zeta − gamma) + gamma))``.
    The stretch puts probability mass on exactly 0 and exactly 1.

    Example:
        >>> hard_concrete(torch.tensor([0.0]), torch.tensor([0.5]))
        tensor([0.5000])
    """
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / beta)
    return (s * (zeta - gamma) + gamma).clamp(0.0, 1.0)


def eval_gate(log_alpha: Tensor, gamma: float = -0.1, zeta: float = 1.1) -> Tensor:
    """The deterministic test-time gate ``min(1, max(0, sigmoid(log_alpha)·(zeta − gamma) + gamma))``.

    Example:
        >>> eval_gate(torch.tensor([0.0, -5.0, 10.0]))
        tensor([0.5000, 0.0000, 1.0000])
    """
    return (torch.sigmoid(log_alpha) * (zeta - gamma) + gamma).clamp(0.0, 1.0)


def _check_gate_args(init_keep: float, beta: float, gamma: float, zeta: float) -> None:
    for name, value, ok, allowed in (("init_keep", init_keep, lambda v: 0 < v < 1, "in (0, 1)"),
                                     ("beta", beta, lambda v: v > 0, "> 0"),
                                     ("gamma", gamma, lambda v: v < 0, "< 0"),
                                     ("zeta", zeta, lambda v: v > 1, "> 1")):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
            raise PruningError(f"{name} must be a number {allowed}, got {value!r}")


def _channel_dim(module: nn.Module, output: Tensor) -> int:
    """Dimension of the output rows: last for Linear, before the spatial dims for ConvNd."""
    if isinstance(module, nn.Linear):
        return output.dim() - 1
    return output.dim() - (masking.original(module).dim() - 1)


class L0Gates(nn.Module):
    """Hard-concrete L0 gates on the output rows (neurons / channels) of chosen layers.

    Louizos, Welling & Kingma (ICLR 2018). Each output row ``j`` of each chosen
    Linear / ConvNd gets a trainable ``log_alpha_j``; a forward hook multiplies
    the layer's output (bias included) by a gate ``z_j``:

    * layer in training mode: a fresh sample per example,
      ``z = min(1, max(0, sigmoid((log u − log(1−u) + log_alpha)/beta)·(zeta−gamma) + gamma))``,
      ``u ~ U(0, 1)`` (see :func:`hard_concrete`);
    * layer in eval mode: ``z = min(1, max(0, sigmoid(log_alpha)·(zeta−gamma) + gamma))``.

    The layer's own ``training`` flag decides (``model.eval()``), not this object's.
    Add ``λ · gates.penalty()`` to the loss and give ``gates.parameters()`` to the
    optimizer; then :meth:`finalize` turns closed gates into secateurs masks.

    Args:
        model: the network; it is not modified until :meth:`finalize` (only hooks are added).
        layers: which prunable layers to gate (see :func:`secateurs.layers.select`); default all.
        init_keep: initial keep probability: ``log_alpha = log(init_keep / (1 − init_keep))``.
        beta: temperature of the concrete distribution (2/3 in the paper).
        gamma: lower end of the stretch interval (< 0).
        zeta: upper end of the stretch interval (> 1).

    Raises:
        PruningError: a bad argument, no prunable layer or a pattern matching none.
    """

    def __init__(self, model: nn.Module, layers: Layers = None, init_keep: float = 0.9,
                 beta: float = 2 / 3, gamma: float = -0.1, zeta: float = 1.1) -> None:
        super().__init__()
        _check_gate_args(init_keep, beta, gamma, zeta)
        self.beta, self.gamma, self.zeta = float(beta), float(gamma), float(zeta)
        chosen = select(model, layers)
        self.names = [masking.param_name(n) for n, _ in chosen]
        self._targets = [m for _, m in chosen]  # a plain list: not submodules of the gates
        init = math.log(init_keep) - math.log1p(-init_keep)
        self.log_alpha = nn.ParameterList(
            nn.Parameter(torch.full((masking.original(m).shape[0],), init, device=masking.original(m).device))
            for m in self._targets
        )
        self._handles = [m.register_forward_hook(partial(self._gate, i)) for i, m in enumerate(self._targets)]

    def _gate(self, index: int, module: nn.Module, _inputs: Any, output: Tensor) -> Tensor:
        la = self.log_alpha[index]
        dim = _channel_dim(module, output)
        view = [1] * output.dim()
        view[dim] = la.numel()
        if not module.training:
            return output * eval_gate(la, self.gamma, self.zeta).view(view).to(output.dtype)
        shape = list(view)
        if dim > 0:  # one sample per example (dim 0 is the batch)
            shape[0] = output.shape[0]
        u = torch.rand(shape, device=la.device, dtype=la.dtype) * (1 - 2 * EPS) + EPS
        z = hard_concrete(la.view(view), u, self.beta, self.gamma, self.zeta)
        return output * z.to(output.dtype)

    def penalty(self) -> Tensor:
        """Expected number of open gates, ``Σ_j sigmoid(log_alpha_j − beta·log(−gamma/zeta))``.

        This is ``Σ_j P(z_j ≠ 0)``, the expected L0 norm of the gates (Louizos et al., eq. 12).
        """
        shift = self.beta * math.log(-self.gamma / self.zeta)
        parts = [torch.sigmoid(la - shift).sum() for la in self.log_alpha]
        device = parts[0].device
        return torch.stack([p.to(device) for p in parts]).sum()

    def eval_gates(self) -> dict[str, Tensor]:
        """``{qualified weight name: deterministic gate per output row}`` (detached)."""
        with torch.no_grad():
            return {n: eval_gate(la, self.gamma, self.zeta) for n, la in zip(self.names, self.log_alpha)}

    def remove(self) -> None:
        """Remove the hooks without changing the model (the gates stop acting)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def finalize(self) -> dict[str, Tensor]:
        """Bake the eval gates into the model and remove the hooks.

        Rows whose eval gate is 0 get a secateurs mask (weight rows and bias
        entries, combined with any mask already there); surviving rows of the
        stored weight and bias are multiplied by their gate, so the model in
        eval mode computes exactly what the gated model computed.

        Returns:
            ``{qualified weight name: bool per output row, True = kept}``.

        Raises:
            PruningError: when called twice (the hooks are already gone).
        """
        if not self._handles:
            raise PruningError("L0Gates.finalize(): the gates were already finalized or removed")
        kept: dict[str, Tensor] = {}
        with torch.no_grad():
            for name, module, z in zip(self.names, self._targets, self.eval_gates().values()):
                keep = z > 0
                for tensor_name in ("weight", "bias"):
                    if tensor_name == "weight" or getattr(module, "bias", None) is not None:
                        _bake_rows(module, tensor_name, z, keep)
                kept[name] = keep
        self.remove()
        return kept


def _bake_rows(module: nn.Module, tensor_name: str, z: Tensor, keep: Tensor) -> None:
    """Scale kept rows of ``module.<tensor_name>`` by ``z``; mask the others (if any)."""
    stored = masking.original(module, tensor_name)
    rows = (-1,) + (1,) * (stored.dim() - 1)
    stored.mul_(torch.where(keep, z, torch.ones_like(z)).view(rows).to(stored.dtype))
    if bool(keep.all()):
        return
    mask = keep.view(rows).expand(stored.shape).to(stored.device)
    current = masking.get_mask(module, tensor_name)
    masking.set_mask(module, mask if current is None else mask & current, tensor_name)
