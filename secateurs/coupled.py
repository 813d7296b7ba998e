"""Coupled channel pruning: channels tied by the graph are scored and removed together.

Used by :func:`secateurs.prune` when the granularity removes whole units (``neuron`` /
``channel`` / ``filter``) and ``example_inputs`` are given. A *unit* is one coupled channel (a
union–find root of :mod:`.graph`): the rows of every layer that produce it
(e.g. both convs feeding a residual add, a depthwise filter) and the BatchNorm
entries on it. A unit's score is the mean, over its rows, of the row's score
(mean element score) divided by the mean absolute row score of its layer.
Units are grouped into *spaces* (units produced by the same set of layers):
local scope removes ``round(p · units)`` of each space, global scope compares
all units. With ``round_to=r`` the units a space keeps are then rounded *up* to a
multiple of ``r`` (as Torch-Pruning's ``round_to``: fewer are removed, never more),
by keeping the best-scored of the units chosen for removal; every space so changed
gets a note. A removed unit's rows, biases and BatchNorm weight/bias are masked,
and so are the input columns that read it, so the model computes exactly what
:func:`secateurs.compact` will compute with the channel gone.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import allocation, granularity as gran, masking
from .criteria import Criterion
from .graph import ChannelGraph, analyse
from .modules import norms
from .modules.attention import ATTENTION, row_tensors


def row_scores(targets: dict[str, nn.Module], crit: Criterion, group: gran.Granularity) -> dict[str, Tensor]:
    """Normalised score of each output row; an attention head's q/k/v rows score as its out_proj columns."""
    out = {}
    with torch.no_grad():
        for name, module in targets.items():
            if isinstance(module, ATTENTION):
                proj = module.out_proj
                cols = crit.score(masking.param_name(f"{name}.out_proj"), proj.weight.detach()).float().mean(dim=0)
                out[name] = gran.normalise(cols.repeat(3))
            else:
                param = masking.param_name(name)
                scores = masking.as_rows(module, crit.score(param, module.weight.detach()))
                out[name] = gran.normalise(group.groups(scores).float())
    return out


def _row_pruned(module: nn.Module) -> Tensor:
    weight_name, _ = row_tensors(module)
    mask = masking.get_mask(module, weight_name)
    if mask is None:
        rows = masking.as_rows(module, getattr(module, weight_name), weight_name).shape[0]
        return torch.zeros(rows, dtype=torch.bool, device="cpu")
    mask = masking.as_rows(module, mask, weight_name)
    return (~mask.reshape(mask.shape[0], -1).any(dim=1)).cpu()


def units_and_spaces(
    g: ChannelGraph, targets: dict[str, nn.Module]
) -> tuple[dict[int, list[tuple[str, int]]], dict[frozenset[str], list[int]]]:
    """Units whose every row belongs to a target layer, and their spaces."""
    units = {r: m for r, m in g.units().items() if all(name in targets for name, _ in m)}
    spaces: dict[frozenset[str], list[int]] = {}
    for root, members in units.items():
        spaces.setdefault(frozenset(n for n, _ in members), []).append(root)
    return units, spaces


def coupled_masks(
    model: nn.Module,
    targets: dict[str, tuple[nn.Module, float | None, bool]],
    crit: Criterion,
    group: gran.Granularity,
    scope: str,
    sparsity: float,
    min_density: float,
    example_inputs: tuple[object, ...],
    leaf_modules: tuple[str, ...] = (),
    round_to: int = 1,
    hidden: bool = False,
) -> tuple[list[tuple[nn.Module, str, Tensor]], int, list[str], list[str], list[str]]:
    """Masks ``(module, tensor name, keep)`` for coupled channel pruning, the shortfall, notes, rounding notes,
    and the norms over channels that lose some (only with ``hidden``: the residual stream is pruned too).

    The notes name every target layer with channels that cannot be removed, and why (see :func:`kept_notes`);
    the rounding notes every space whose kept units ``round_to`` changed (see :func:`round_up`).
    """
    g = analyse(model, example_inputs, leaf_modules, hidden)
    mods = {n: m for n, (m, _, _) in targets.items()}
    for name in g.attention:  # heads are pruned when the output projection is
        if f"{name}.out_proj" in targets:
            mods[name] = model.get_submodule(name)
            targets = {**targets, name: targets[f"{name}.out_proj"]}
    units, spaces = units_and_spaces(g, mods)
    notes = ([f"hidden=True: the residual stream was not pruned ({g.stream})"] if g.stream else []) + kept_notes(
        g, mods, units)
    rows = {n: r.cpu() for n, r in row_scores(mods, crit, group).items()}  # the choice is made on the CPU
    pruned_rows = {n: _row_pruned(m) for n, m in mods.items()}
    order, slots, scores = [], [], []
    for members_set, roots in spaces.items():
        unit_scores = torch.stack([torch.stack([rows[n][i] for n, i in units[r]]).mean() for r in roots])
        current = torch.tensor([not all(bool(pruned_rows[n][i]) for n, i in units[r]) for r in roots], device="cpu")
        own = [targets[n][1] for n in sorted(members_set) if targets[n][2] or scope == "local"]
        slots.append(allocation.Slot(len(roots), own[0] if own else None,
                                     allocation.min_keep(min_density, len(roots)), current))
        scores.append(unit_scores)
        order.append(roots)

    def keys_of(i: int):
        keys = allocation.to_keys(scores[i].clone(), owned=True)
        keys.masked_fill_(~slots[i].current, allocation.FORCED)
        yield keys

    keep, shortfall = allocation.split_masks(slots, keys_of, sparsity)
    keep, rounded = round_up(keep, scores, slots, round_to, [sorted(m) for m in spaces])
    removed = {r for roots, k in zip(order, keep) for r, kept in zip(roots, k.tolist()) if not kept}
    sliced = sorted(n for n in g.stats if any(g.atoms.find(a) in removed for a in g.norms[n]))
    return _masks(model, g, mods, removed), shortfall, notes, rounded, sliced


def round_up(
    keep: list[Tensor], scores: list[Tensor], slots: list[allocation.Slot], round_to: int, names: list[list[str]],
) -> tuple[list[Tensor], list[str]]:
    """Each space's keep-mask with its kept units rounded up to a multiple of ``round_to``, and a note per change.

    The units put back are the best-scored of those chosen for removal; units already pruned before stay
    pruned (the note then says the multiple could not be reached). A space that keeps nothing (or all) is left.

    Example:
        >>> k, notes = round_up([torch.tensor([True, False, False, True, False])], [torch.arange(5.0)],
        ...                     [allocation.Slot(5, None)], 4, [["conv"]])
        >>> k[0].tolist(), notes
        ([True, False, True, True, True], ['conv: 4 of 5 channels kept instead of 2 (round_to=4)'])
    """
    if round_to <= 1:
        return keep, []
    out, notes = [], []
    for k, s, slot, members in zip(keep, scores, slots, names):
        kept = int(k.sum())
        want = min(slot.numel, -(-kept // round_to) * round_to)
        if kept == 0 or want == kept:
            out.append(k)
            continue
        free = ~k if slot.current is None else ~k & slot.current
        back = torch.nonzero(free).flatten()
        back = back[torch.argsort(s[back], descending=True, stable=True)][: want - kept]
        k = k.clone()
        k[back] = True
        got = kept + back.numel()
        where = members[0] + (f" (and {len(members) - 1} coupled layers)" if len(members) > 1 else "")
        short = "" if got == want else f", not {want}: channels pruned before stay pruned"
        notes.append(f"{where}: {got} of {slot.numel} channels kept instead of {kept} (round_to={round_to}){short}")
        out.append(k)
    return out, notes


def kept_notes(g: ChannelGraph, mods: dict[str, nn.Module], units: dict[int, list[tuple[str, int]]]) -> list[str]:
    """``"layer: k of n channels kept (why)"`` for each target layer whose channels cannot all be removed."""
    notes = []
    for name in mods:
        if name not in g.rows:  # a model read by structure: only its recognised blocks have units
            rows = masking.as_rows(mods[name], masking.original(mods[name])).shape[0]
            why = ("not attention heads, MLP neurons or the residual stream: its outputs are its own"
                   if g.hidden and not g.stream else "not attention heads or MLP neurons; a model read by structure keeps its residual stream "
                   "and other layers")
            notes.append(f"{name}: {rows} of {rows} channels kept ({why})")
            continue
        atoms = g.rows[name]
        if name in g.attention:
            atoms = atoms[: len(atoms) // 3]
        stuck = [a for a in atoms if g.atoms.find(a) not in units]
        if not stuck:
            continue
        whys = [g.atoms.reason(a) or "coupled to a layer that is not pruned" for a in stuck]
        why = max(set(whys), key=whys.count)
        notes.append(f"{name}: {len(stuck)} of {len(atoms)} channels kept ({why})")
    return notes


def _masks(
    model: nn.Module, g: ChannelGraph, mods: dict[str, nn.Module], removed: set[int]
) -> list[tuple[nn.Module, str, Tensor]]:
    def gone(atoms: list[int]) -> Tensor:
        return torch.tensor([g.atoms.find(a) in removed for a in atoms], dtype=torch.bool, device="cpu")

    out = []
    for name, module in mods.items():
        weight_name, bias_name = row_tensors(module)
        w = masking.as_rows(module, masking.original(module, weight_name), weight_name)  # rows first (Conv1D)
        keep = torch.ones(w.shape, dtype=torch.bool, device="cpu")  # moved to the weight's device below
        if name in g.rows:
            dead_rows = gone(g.rows[name])
            keep[dead_rows] = False
            if getattr(module, bias_name, None) is not None and bool(dead_rows.any()):
                out.append((module, bias_name, _with_current(module, bias_name, ~dead_rows)))
        if name in g.cols and name not in g.depthwise:
            keep[:, gone(g.cols[name])] = False
        if weight_name == "weight" or not bool(keep.all()):
            keep = masking.as_rows(module, keep, weight_name).contiguous()
            out.append((module, weight_name, _with_current(module, weight_name, keep)))
    for name, atoms in g.norms.items():
        dead = gone(atoms)
        if bool(dead.any()):
            norm = model.get_submodule(name)
            for t in ("weight", "bias"):
                if getattr(norm, t, None) is not None:
                    out.append((norm, t, _with_current(norm, t, ~dead)))
    for name, (axis, atoms, masked) in g.params.items():  # an embedding, a class token: zero where removed
        dead = gone(atoms)
        if masked and bool(dead.any()):
            module_name, _, tensor_name = name.rpartition(".")
            owner = model.get_submodule(module_name)
            shape = [1] * masking.original(owner, tensor_name).dim()
            shape[axis] = len(atoms)
            keep = (~dead).reshape(shape).expand_as(masking.original(owner, tensor_name)).contiguous()
            out.append((owner, tensor_name, _with_current(owner, tensor_name, keep)))
    return out


def over_kept_channels(model: nn.Module, sliced: list[str]) -> str:
    """Make the norms ``sliced`` (over a pruned residual stream) normalise over their kept channels; the warning
    that says so (``""`` when there are none)."""
    for name in sliced:
        norms.keep_statistics(model.get_submodule(name))
    if not sliced:
        return ""
    shown = ", ".join(sliced[:4]) + (f" and {len(sliced) - 4} more" if len(sliced) > 4 else "")
    return (f"hidden=True removed channels of the residual stream: the {len(sliced)} norms over it ({shown}) now "
            "normalise over the kept channels only, so the outputs are no longer those of the model with the "
            "removed weights merely zeroed (sc.compact gives exactly these outputs; PruneResult.sliced_norms lists "
            "the norms)")


def _with_current(module: nn.Module, tensor_name: str, keep: Tensor) -> Tensor:
    current = masking.get_mask(module, tensor_name)
    keep = keep.to(masking.original(module, tensor_name).device)
    return keep if current is None else keep & current
