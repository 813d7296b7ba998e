"""Training with masks: the loop, schedules that prune while training, learned masks, penalties, DDP.

``secateurs.training.train`` and ``secateurs.training.evaluate`` are the plain loop
(:mod:`.loop`); the pruners used inside a user's own loop are :mod:`.schedules`
(``sc.Gradual``, ``sc.Iterative``, ``sc.RigL``, ``sc.SET``), :mod:`.learned` (``sc.Movement``,
``sc.L0Gates``) and :mod:`.regularizers` (``sc.penalty``); :mod:`.distributed` keeps
masks identical across processes under ``torchrun``.
"""

from .loop import evaluate, train

__all__ = ["evaluate", "train"]
