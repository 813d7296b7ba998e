"""Recipe keys: a short hash of what produced a run's saved state, so a resumed run reuses only its own.

``dense.safetensors`` carries the key of the :data:`DENSE_FIELDS`; an iterative stage's saved rounds carry
the key of those fields and of the stages up to it.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .recipes import Recipe

__all__ = ["DENSE_FIELDS", "STAGE_FIELDS_BEFORE_KINDS", "key"]

DENSE_FIELDS = ("model", "model_args", "data", "seed", "train", "penalty")
"""The fields that together make a recipe's trained dense model."""

STAGE_FIELDS_BEFORE_KINDS: dict[str, Any] = {
    "schedule": "oneshot", "keep": 0.5, "l0_weight": 1e-3, "l0_lr": 0.1, "epochs": 0, "every": 50, "rounds": 5,
    "rate": 0.2, "rewind": "init", "alpha": 0.3, "distribution": "erk", "sparsity": None, "criterion": "magnitude",
    "amount": None, "scaled": False, "scope": "global", "granularity": "unstructured", "layers": {},
    "min_density": 0.0, "seed": 0, "calibration_batches": 8, "finetune": None,
}
"""Every field a stage had while all stage kinds were one model, with its default then (frozen: history).

A stage kind now has only its own fields; :func:`key` hashes each stage as that one model dumped it (its
own fields over these), so rounds saved before stage kinds existed keep their key and are still reused."""

STAGE_FIELDS_ADDED: dict[str, Any] = {"method": "merge", "probes": None, "latency": None, "batch_size": None,
                                      "round_to": None, "hidden": False}
"""Fields added to stage kinds since, with their default: left out of the key while they have it, so older
recipes keep their key."""


def key(recipe: Recipe, stages: int = 0) -> str:
    """A short hash of what produced a run's saved state: the :data:`DENSE_FIELDS` and the first
    ``stages`` pruning stages. Saved files carry it, so a resumed run reuses only its own."""
    spec = recipe.model_dump(include=set(DENSE_FIELDS))
    if stages:
        spec["prune"] = [{**STAGE_FIELDS_BEFORE_KINDS, **_added_left_out(s.model_dump())} for s in recipe.prune[:stages]]
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _added_left_out(dumped: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in dumped.items() if k not in STAGE_FIELDS_ADDED or v != STAGE_FIELDS_ADDED[k]}
