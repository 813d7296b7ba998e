"""When and how often to prune: gradual (Zhu & Gupta), iterative (IMP, lottery tickets), RigL and SET.

Each pruner is used inside an ordinary training loop::

    pruner = sc.Gradual(model, final_sparsity=0.95, start=0, end=2000, every=100)
    for step, batch in enumerate(loader):
        loss = ...; loss.backward(); optimizer.step()
        pruner.step()      # prunes / regrows when its schedule says so

The schedules themselves are pure: :class:`Cubic` and :func:`update_fraction` are
functions of the step alone. A pruner keeps one visible counter, ``pruner.t``
(the number of steps seen); ``pruner.step(t)`` may also be given the step.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .. import allocation, masking, storage
from ..errors import PruningError, check_sparsity
from ..files import atomic_write
from ..layers import resolve_layers
from ..progress import track
from ..pruning import PruneResult, prune
from . import distributed


@dataclass(frozen=True)
class Cubic:
    """Zhu & Gupta (2017): ``s_t = s_f + (s_i − s_f)(1 − (t − t0)/(n Δt))³`` at the pruning steps.

    Attributes:
        final: ``s_f``. initial: ``s_i``. start: ``t0``. end: ``t0 + n Δt``. every: ``Δt``.

    Example:
        >>> c = Cubic(final=0.9, start=0, end=100, every=10)
        >>> c.sparsity_at(0), round(c.sparsity_at(50), 4), c.sparsity_at(100)
        (0.0, 0.7875, 0.9)
    """

    final: float
    start: int
    end: int
    every: int = 1
    initial: float = 0.0

    def __post_init__(self) -> None:
        check_sparsity(self.final, "final_sparsity")
        check_sparsity(self.initial, "initial_sparsity")
        if self.every < 1 or self.end <= self.start:
            raise PruningError(f"need every >= 1 and end > start, got every={self.every}, "
                               f"start={self.start}, end={self.end}")

    def sparsity_at(self, step: int) -> float:
        """The target after the last pruning step at or before ``step``."""
        if step < self.start:
            return 0.0
        t = self.end if step >= self.end else self.start + (step - self.start) // self.every * self.every
        frac = (t - self.start) / (self.end - self.start)
        return self.final + (self.initial - self.final) * (1.0 - frac) ** 3

    def prunes_at(self, step: int) -> bool:
        """Whether ``step`` is a pruning step (every ``Δt`` from ``start``, and ``end``)."""
        return self.start <= step <= self.end and ((step - self.start) % self.every == 0 or step == self.end)


class Gradual:
    """Prune gradually during training along the cubic schedule (:class:`Cubic`).

    Args:
        model: the model, trained in the loop that calls :meth:`step`.
        final_sparsity, start, end, every, initial_sparsity: the schedule.
        **options: passed to :func:`secateurs.prune` (criterion, scope, granularity, layers, ...).
    """

    def __init__(self, model: nn.Module, final_sparsity: float, start: int = 0, end: int = 1000,
                 every: int = 100, initial_sparsity: float = 0.0, **options: Any) -> None:
        self.model, self.options, self.t = model, options, 0
        self.schedule = Cubic(final_sparsity, start, end, every, initial_sparsity)

    def step(self, step: int | None = None) -> PruneResult | None:
        """Advance to ``step`` (default: the next one) and prune if the schedule says so."""
        self.t = self.t + 1 if step is None else step
        if self.schedule.prunes_at(self.t):
            return prune(self.model, self.schedule.sparsity_at(self.t), **self.options)
        return None


def _live(model: nn.Module) -> dict[str, Tensor]:
    """Every parameter and buffer under its plain name; masked weights as their stored original."""
    out = {}
    for key, value in model.state_dict(keep_vars=True).items():
        name, leaf = masking.split_key(key)
        if leaf is None or leaf == "original":  # not the mask itself
            out[name] = value
    return out


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    """A copy of every parameter and buffer (masked weights: their stored originals)."""
    return {k: v.detach().clone() for k, v in _live(model).items()}


def rewind(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Put ``state`` (from :func:`snapshot`) back into ``model``; masks are left as they are.

    Raises:
        PruningError: a tensor of ``state`` has another shape than the model's (the model was merged or
            compacted after the snapshot); nothing is changed then.
    """
    live = _live(model)
    for key, value in live.items():
        if key in state and state[key].shape != value.shape:
            raise PruningError(f"cannot rewind {key}: the snapshot is {tuple(state[key].shape)}, the model "
                               f"{tuple(value.shape)} (its architecture changed since); take the snapshot after")
    with torch.no_grad():
        for key, value in live.items():
            if key in state:
                value.copy_(state[key])


class Iterative:
    """Iterative magnitude pruning with rewinding: lottery tickets (Frankle & Carbin, 2019).

    Each round prunes ``rate`` of the weights that remain (so after ``k`` rounds the
    sparsity is ``1 − (1 − s₀)(1 − rate)^k``, ``s₀`` the model's sparsity when it starts: ``1 − (1 − rate)^k``
    for a dense model), then rewinds the surviving weights to their
    values at initialisation (``rewind="init"``), after ``k`` training steps
    (``rewind=k``, Frankle et al. 2020), or not at all (``rewind=None``: fine-tuning).

    Use it either inside a loop (``step()`` ends a round every ``every`` steps; ``step()`` without
    ``every`` is an error, not a loop that never prunes), by calling :meth:`next_round` yourself, or with
    :meth:`run`, which trains, prunes and rewinds round by round. With ``out_dir``, each
    round's model and metrics are saved there, and a new ``Iterative`` on the same
    directory resumes after the last completed round.

    Args:
        model: the model.
        rounds: number of pruning rounds.
        rate: fraction of the remaining weights pruned per round, in (0, 1).
        rewind: ``"init"``, a step number, or ``None``.
        every: training steps per round, needed by :meth:`step`.
        out_dir: where rounds are saved and resumed from.
        **options: passed to :func:`secateurs.prune`.
    """

    def __init__(self, model: nn.Module, rounds: int = 5, rate: float = 0.2, rewind: str | int | None = "init",
                 every: int | None = None, out_dir: str | Path | None = None, **options: Any) -> None:
        if not isinstance(rounds, int) or rounds < 1:
            raise PruningError(f"rounds must be a positive integer, got {rounds!r}")
        if check_sparsity(rate, "rate") == 0:
            raise PruningError("rate must be in (0, 1), got 0")
        if not (rewind is None or rewind == "init" or (isinstance(rewind, int) and rewind >= 0)):
            raise PruningError(f"rewind must be 'init', a step number or None, got {rewind!r}")
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise PruningError(f"every must be a positive number of training steps or None, got {every!r}")
        self.model, self.rounds, self.rate, self.rewind_to = model, rounds, float(rate), rewind
        self.every, self.options, self.t, self.round = every, options, 0, 0
        self.history: list[dict[str, Any]] = []
        self.start = _sparsity_of(model, options)  # rounds prune ``rate`` of what remains from here
        self.out = None if out_dir is None else Path(out_dir)
        self.state = snapshot(model) if rewind == "init" or rewind == 0 else None
        if self.out is not None:
            self._resume()

    def sparsity_at_round(self, k: int) -> float:
        """Target after round ``k``: ``1 − (1 − s₀)(1 − rate)^k``, ``s₀`` the sparsity at the start."""
        return 1.0 - (1.0 - self.start) * (1.0 - self.rate) ** k

    def step(self, step: int | None = None) -> PruneResult | None:
        """Advance one training step; take the rewind snapshot or end a round when due."""
        if not self.every:
            raise PruningError("Iterative.step() needs every= (training steps per round): without it no round "
                               "would ever end; pass every=, or call next_round() or run() yourself")
        self.t = self.t + 1 if step is None else step
        if isinstance(self.rewind_to, int) and self.t == self.rewind_to and self.state is None:
            self.state = snapshot(self.model)
        if self.every and self.t % self.every == 0 and self.round < self.rounds:
            return self.next_round()
        return None

    def next_round(self, metrics: Mapping[str, Any] | None = None) -> PruneResult:
        """Prune to the next round's sparsity, rewind, and save the round (with ``out_dir``)."""
        self.round += 1
        result = prune(self.model, self.sparsity_at_round(self.round), **self.options)
        if self.rewind_to is not None:
            if self.state is None:
                raise PruningError(f"rewind={self.rewind_to}: that step has not been reached yet")
            rewind(self.model, self.state)
        self.history.append({"round": self.round, "sparsity": result.sparsity, **(metrics or {})})
        self._save()
        return result

    def run(self, train_round: Callable[[nn.Module, int], Mapping[str, Any] | None]) -> nn.Module:
        """``train_round(model, k)`` before each pruning round and once at the end; resumes if saved."""
        for k in track(range(self.round, self.rounds), "iterative", unit="round"):
            self.next_round(train_round(self.model, k))
        final = train_round(self.model, self.rounds)
        if self.history and final:
            self.history[-1]["final"] = dict(final)
            self._save(model=False)  # round-k stays the model a resumed run trains its last round from
        return self.model

    def _save(self, model: bool = True) -> None:
        if self.out is None or not distributed.is_main():  # under torchrun, rank 0 writes
            return
        self.out.mkdir(parents=True, exist_ok=True)
        if self.state is not None and not (self.out / "rewind.safetensors").exists():
            state = {k: v.contiguous().cpu() for k, v in self.state.items()}
            atomic_write(self.out / "rewind.safetensors", lambda tmp: save_file(state, tmp))
        if model:
            storage.save(self.model, self.out / f"round-{self.round}.safetensors")
        saved = {"round": self.round, "t": self.t, "start": self.start, "history": self.history}
        text = json.dumps(saved, indent=2)
        atomic_write(self.out / "rounds.json", lambda tmp: Path(tmp).write_text(text))

    def _resume(self) -> None:
        # Rank 0 reads (under torchrun the others may not even see the directory) and broadcasts.
        assert self.out is not None
        main, index = distributed.is_main(), self.out / "rounds.json"
        saved = distributed.broadcast_object(json.loads(index.read_text()) if main and index.is_file() else None)
        if saved is None:
            return
        self.round, self.t, self.history = saved["round"], saved["t"], saved["history"]
        self.start = float(saved.get("start", 0.0))
        if main:
            storage.load(self.out / f"round-{self.round}.safetensors", self.model)
        distributed.broadcast_masks(self.model)
        if distributed.broadcast_object(main and (self.out / "rewind.safetensors").is_file()):
            self.state = load_file(str(self.out / "rewind.safetensors")) if main else snapshot(self.model)
            distributed.broadcast_tensors(self.state)


def _sparsity_of(model: nn.Module, options: Mapping[str, Any]) -> float:
    """The sparsity now of the tensors :func:`prune` would take with ``options`` (its ``layers``, ``params``)."""
    targets = resolve_layers(model, options.get("layers"), 0.0, params=options.get("params"), tensors=True)
    masks = [masking.get_mask(t.module, t.tensor) for t in targets]
    total = sum(t.original.numel() for t in targets)
    kept = sum(t.original.numel() if m is None else int(torch.count_nonzero(m)) for t, m in zip(targets, masks))
    return 1.0 - kept / total if total else 0.0


def update_fraction(step: int, alpha: float, end: int) -> float:
    """RigL's cosine-decayed fraction of active weights updated at ``step``: ``α/2 (1 + cos(π t / T))``."""
    return 0.0 if step >= end else alpha / 2 * (1 + math.cos(math.pi * step / end))


class RigL:
    """Dynamic sparse training at fixed sparsity: RigL (Evci et al., 2020), or SET with ``regrow="random"``.

    Every ``every`` steps (until ``end``), each layer drops the fraction
    :func:`update_fraction` of its active weights with the smallest magnitude and
    regrows as many inactive ones — those with the largest dense gradient (RigL) or
    chosen at random (SET, Mocanu et al. 2018). Regrown weights start at zero (and, with
    ``optimizer=``, with zero optimizer state). Every layer's sparsity stays exactly
    constant; pruned weights can come back.

    Args:
        model: the model; its layers start from random masks at the chosen distribution.
        sparsity: overall sparsity of the chosen layers.
        every: steps between updates. end: last update step (default: never stop).
        alpha: initial update fraction. distribution: ``"erk"`` or ``"uniform"``.
        regrow: ``"gradient"`` (RigL) or ``"random"`` (SET).
        optimizer: its per-parameter state is zeroed where weights regrow.
        layers: which layers, as for :func:`secateurs.prune`. seed: for masks and SET.
    """

    def __init__(self, model: nn.Module, sparsity: float = 0.9, every: int = 100, end: int | None = None,
                 alpha: float = 0.3, distribution: str = "erk", regrow: str = "gradient",
                 optimizer: torch.optim.Optimizer | None = None, layers: Mapping[str, Any] | None = None,
                 seed: int = 0) -> None:
        check_sparsity(sparsity)
        if distribution not in allocation.DISTRIBUTIONS or regrow not in ("gradient", "random"):
            raise PruningError(f"distribution must be erk or uniform and regrow gradient or random, "
                               f"got {distribution!r} and {regrow!r}")
        self.model, self.every, self.end, self.alpha = model, every, end or 10**12, alpha
        self.regrow, self.optimizer, self.t = regrow, optimizer, 0
        self.gen = torch.Generator().manual_seed(seed)
        targets = resolve_layers(model, layers, sparsity)
        shapes = {t.module_name: tuple(masking.original(t.module).shape) for t in targets}
        dens = allocation.DISTRIBUTIONS[distribution](shapes, 1 - sparsity)
        own = {"*": None, **{n: min(max(1 - d, 0.0), 0.999999) for n, d in dens.items()}}
        prune(model, sparsity, criterion="random", scope="local", layers=own, seed=seed)
        self.modules = {t.param: t.module for t in targets}
        for m in self.modules.values():
            masking.mask_module(m).watch = regrow == "gradient"

    def step(self, step: int | None = None) -> bool:
        """Advance; drop and regrow when due. Returns whether the masks were updated."""
        self.t = self.t + 1 if step is None else step
        due = self.t % self.every == 0 and self.t < self.end
        if due:
            self.update(update_fraction(self.t, self.alpha, self.end))
        for m in self.modules.values():
            masking.mask_module(m).dense_grad = None  # gradients of this step only
        return due

    def update(self, fraction: float) -> None:
        """Drop and regrow ``fraction`` of each layer's active weights.

        Under DDP the dense gradients, captured before DDP averages anything, are
        averaged over the processes first, so every rank regrows the same weights.
        """
        for module in self.modules.values():
            grad = masking.mask_module(module).dense_grad
            if grad is not None:
                distributed.average_(grad)
        for module in self.modules.values():
            holder = masking.mask_module(module)
            mask, w = holder.mask, masking.original(module)
            k = int(fraction * int(mask.sum()))
            if k == 0:
                continue
            with torch.no_grad():
                flat_mask = mask.reshape(-1)
                score = (w * mask).detach().abs().reshape(-1).float().masked_fill(~flat_mask, math.inf)
                drop = allocation.lowest(allocation.to_keys(score.cpu(), nonnegative=True), k)
                new_mask = flat_mask.cpu() & ~drop
                grow = self._grow(holder, ~new_mask, k)
                new_mask |= grow
                w.reshape(-1)[grow.to(w.device)] = 0.0  # regrown weights start at zero
                mask.copy_(new_mask.reshape(mask.shape).to(mask.device))
                self._reset_state(w, grow)

    def _grow(self, holder: masking.Mask, candidates: Tensor, k: int) -> Tensor:
        if self.regrow == "gradient" and holder.dense_grad is not None:
            score = holder.dense_grad.abs().reshape(-1).float().cpu()
        else:
            score = torch.rand(candidates.numel(), generator=self.gen, device="cpu")  # chosen on the CPU
        score = score.masked_fill(~candidates, -math.inf)
        keys = allocation.to_keys(-score)  # the lowest of -score: the largest scores
        return allocation.lowest(keys, k) & candidates

    def _reset_state(self, w: Tensor, grow: Tensor) -> None:
        if self.optimizer is None:
            return
        for value in self.optimizer.state.get(w, {}).values():
            if isinstance(value, Tensor) and value.shape == w.shape:
                value.reshape(-1)[grow.to(value.device)] = 0.0


def SET(model: nn.Module, sparsity: float = 0.9, every: int = 100, **options: Any) -> RigL:  # noqa: N802
    """SET (Mocanu et al., 2018): :class:`RigL` with random regrowth."""
    return RigL(model, sparsity, every, regrow="random", **options)
