"""The settings blocks a recipe shares with its stages: training and fine-tuning (pydantic models).

They live below :mod:`.recipes` and :mod:`.stages` so that both can use them (a stage carries its own
``finetune``; a recipe its ``train``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Finetune", "Strict", "Train"]


class Strict(BaseModel):
    """A frozen settings block that rejects unknown keys (a misspelt key is an error, not a silent default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Train(Strict):
    """Training settings (Adam, cross-entropy)."""

    epochs: int = Field(0, ge=0, description="passes over the training split; 0 skips training")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    batch_size: int = Field(64, ge=1, description="examples per step")
    weight_decay: float = Field(0.0, ge=0, description="Adam weight decay")


class Finetune(Train):
    """Fine-tuning after a pruning stage; same fields as ``train``."""

    lr: float = Field(5e-4, gt=0, description="Adam learning rate")
