"""The weights a later stage rewinds to, carried through the surgery of the stages before it.

A recipe keeps the weights before training (``rewind: init``, a lottery ticket). A stage that changes
the architecture (merging, folding, compaction with a surgery record) leaves those weights in the old
shapes; :func:`carried` applies the same surgery to them, so that an ``iterative`` stage after it rewinds
each surviving unit to its own initial values.
"""

from __future__ import annotations

import copy

from torch import Tensor, nn

from .. import masking
from ..errors import PruningError
from ..surgery.records import SURGERY_ATTR, replay
from ..training.schedules import rewind, snapshot

__all__ = ["carried"]


def carried(state: dict[str, Tensor] | None, before: nn.Module, after: nn.Module) -> dict[str, Tensor] | None:
    """``state`` (a :func:`~secateurs.training.schedules.snapshot` of ``before``'s architecture) in
    ``after``'s architecture: the surgery steps ``after`` records beyond ``before``'s, replayed on it.

    Returns:
        The state as it is when nothing changed the architecture; ``None`` when ``state`` is ``None``.

    Raises:
        PruningError: ``after`` has other shapes than ``before`` and no surgery record that explains them.
    """
    if state is None:
        return None
    old, new = getattr(before, SURGERY_ATTR, []), getattr(after, SURGERY_ATTR, [])
    if after is not before and len(new) > len(old) and new[: len(old)] == old:
        skeleton = masking.restore(copy.deepcopy(before))  # its shapes are those of ``state``
        rewind(skeleton, state)
        state = snapshot(replay(skeleton, new[len(old):]))
    shapes = {masking.split_key(k)[0]: tuple(v.shape) for k, v in after.state_dict(keep_vars=True).items()}
    wrong = [k for k, v in state.items() if k in shapes and tuple(v.shape) != shapes[k]]
    if wrong:
        raise PruningError(f"the weights to rewind to do not fit the model after its surgery ({wrong[0]}: "
                           f"{tuple(state[wrong[0]].shape)} vs {shapes[wrong[0]]}); rewind to a step "
                           "(rewind: N) or use rewind: null")
    return state
