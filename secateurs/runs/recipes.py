"""Recipes: one YAML file says what a run does, validated before anything starts.

Example::

    model: lenet-300-100          # zoo name, or a .safetensors file saved by secateurs
    data: mnist                   # zoo dataset name
    train: {epochs: 10, lr: 1e-3}
    prune:
      - {sparsity: 0.9, criterion: magnitude, scope: global, finetune: {epochs: 5}}
    export: {format: safetensors}
    report: true

Every field has a default that does nothing surprising, so old recipes keep
their meaning when fields are added.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = ["DEMO", "Recipe", "RecipeError", "Stage", "ValidationError", "describe", "load", "parse"]

from .. import criteria, granularity
from ..errors import PruningError, check_sparsity
from ..pruning import SCOPES


DATA_FREE = "data-free"
"""The criterion name of data-free neuron merging (:func:`secateurs.merge_neurons`)."""


class RecipeError(PruningError):
    """A recipe that cannot run: the message names the key and the line."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Train(_Strict):
    """Training settings (Adam, cross-entropy)."""

    epochs: int = Field(0, ge=0, description="passes over the training split; 0 skips training")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    batch_size: int = Field(64, ge=1, description="examples per step")
    weight_decay: float = Field(0.0, ge=0, description="Adam weight decay")


class Finetune(Train):
    """Fine-tuning after a pruning stage; same fields as ``train``."""

    lr: float = Field(5e-4, gt=0, description="Adam learning rate")


class Stage(_Strict):
    """One pruning stage: what :func:`secateurs.prune` is called with, then fine-tuning."""

    schedule: Literal["oneshot", "iterative", "gradual", "rigl", "set", "movement", "l0", "runtime"] = Field(
        "oneshot", description="when to prune: once, in rounds (IMP), gradually while training (by magnitude "
                               "or by movement), dynamically (rigl, set), by learned L0 gates on neurons, or per input (runtime)")
    keep: float = Field(0.5, gt=0, le=1, description="runtime: fraction of each conv's channels computed per input")
    l0_weight: float = Field(1e-3, ge=0, description="l0: weight of the expected number of open gates in the loss")
    l0_lr: float = Field(0.1, gt=0, description="l0: learning rate of the gates")
    epochs: int = Field(0, ge=0, description="gradual, movement, rigl, set, l0, runtime: epochs trained; "
                                             "iterative: epochs trained per round")
    every: int = Field(50, ge=1, description="gradual, rigl, set: steps between pruning (or regrowth) steps")
    rounds: int = Field(5, ge=1, description="iterative: pruning rounds")
    rate: float = Field(0.2, gt=0, lt=1, description="iterative: fraction of the remaining weights pruned per round")
    rewind: Literal["init"] | int | None = Field("init", description="iterative: init, a step number, or null")
    alpha: float = Field(0.3, gt=0, le=1, description="rigl, set: initial fraction of weights updated")
    distribution: Literal["erk", "uniform"] = Field("erk", description="rigl, set: layer sparsities")
    sparsity: float | None = Field(None, description="fraction of weights removed at the end of the stage, "
                                                     "in [0, 1); required except for data-free")
    criterion: str = Field("magnitude", description="a registered criterion (secateurs criteria), or data-free")
    amount: float | Literal["auto"] | None = Field(
        None, description="data-free only: fraction of each layer's neurons merged, or auto")
    scaled: bool = Field(False, description="data-free only: also merge positive multiples (ReLU-like layers)")
    scope: Literal[SCOPES] = Field("global", description="global: one threshold; local: each layer")  # type: ignore[valid-type]
    granularity: str = Field("unstructured",
                             description="what is removed together: unstructured, neuron, channel, filter, "
                                         "block:RxC or N:M")
    layers: dict[str, float | None] = Field(default_factory=dict,
                                            description="name or glob -> sparsity, or null to exclude")
    min_density: float = Field(0.0, ge=0, le=1, description="fraction every layer keeps at least")
    seed: int = Field(0, description="seed for stochastic criteria")
    calibration_batches: int = Field(8, ge=1, description="training batches given to criteria that need data")
    finetune: Finetune | None = Field(None, description="fine-tuning after this stage")

    @field_validator("sparsity")
    @classmethod
    def _sparsity(cls, v: float | None) -> float | None:
        return None if v is None else check_sparsity(v)

    @field_validator("criterion")
    @classmethod
    def _criterion(cls, v: str) -> str:
        usable = [n for n in criteria.names() if criteria.get(n).standalone] + [DATA_FREE]
        if v not in usable:
            raise ValueError(f"unknown criterion {v!r} for a recipe; allowed: {', '.join(usable)}")
        return v

    @model_validator(mode="after")
    def _what(self) -> Stage:
        if self.schedule != "oneshot":
            if self.criterion == DATA_FREE:
                raise ValueError("criterion data-free runs once: use schedule oneshot")
            if self.epochs < 1:
                raise ValueError(f"schedule {self.schedule} needs epochs >= 1 (training while pruning)")
            if self.schedule not in ("iterative", "l0", "runtime") and self.sparsity is None:
                raise ValueError(f"schedule {self.schedule} needs sparsity")
            return self
        if self.criterion == DATA_FREE:
            if self.amount is None:
                raise ValueError("criterion data-free needs amount: a fraction in [0, 1) or auto")
            if isinstance(self.amount, float) and not 0 <= self.amount < 1:
                raise ValueError(f"amount must be in [0, 1) or auto, got {self.amount!r}")
        elif self.sparsity is None:
            raise ValueError(f"criterion {self.criterion!r} needs sparsity")
        return self

    @field_validator("granularity")
    @classmethod
    def _granularity(cls, v: str) -> str:
        granularity.parse(v)
        return v


class Penalty(_Strict):
    """A sparsity regulariser added to the training loss (:func:`secateurs.penalty`)."""

    kind: Literal["l1", "l2", "linf", "group_lasso"] = Field(description="l1, l2, linf or group_lasso")
    weight: float = Field(1e-5, ge=0, description="its coefficient")


class Export(_Strict):
    """What is written besides the report."""

    format: Literal["safetensors"] = Field("safetensors", description="file format of the saved model")
    compact: bool = Field(False, description="physically remove pruned channels before saving "
                                             "(needs a neuron/channel/filter stage)")


class Recipe(_Strict):
    """A whole run: model, data, training, pruning stages, export and report."""

    model: str = Field(description="zoo model name, or a .safetensors file saved by secateurs")
    model_args: dict[str, Any] = Field(default_factory=dict, description="arguments of the zoo model")
    data: str | None = Field(None, description="zoo dataset; needed to train and to measure accuracy")
    seed: int = Field(0, description="seeds initialisation and data order")
    train: Train = Field(default_factory=Train, description="training before pruning")
    prune: list[Stage] = Field(default_factory=list, description="pruning stages, in order")
    penalty: Penalty | None = Field(None, description="regulariser added to every training loss")
    export: Export = Field(default_factory=Export, description="saved model format")
    report: bool = Field(True, description="write report.md, report.html and their plots")

    @model_validator(mode="after")
    def _needs_data(self) -> Recipe:
        trains = self.train.epochs or any((s.finetune and s.finetune.epochs) or s.schedule != "oneshot"
                                          for s in self.prune)
        if self.data is None and trains:
            raise ValueError("training or fine-tuning needs data: set data to a zoo dataset")
        if self.export.compact and any(s.schedule == "runtime" for s in self.prune):
            raise ValueError("export.compact cannot follow a runtime stage: its gates are decided per input")
        if self.export.compact and not any(granularity.parse(s.granularity).units for s in self.prune):
            raise ValueError("export.compact needs a prune stage with granularity neuron, channel or filter")
        for s in self.prune:
            if self.data is None and s.criterion != DATA_FREE and criteria.get(s.criterion).needs_data:
                raise ValueError(f"criterion {s.criterion!r} needs data: set data to a zoo dataset")
        return self


def _line_of(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """Line (1-based) of the YAML node at ``loc``, or of its nearest ancestor that exists."""
    node, line = root, None
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if k.value == str(part)]
            if not match:
                break
            key, node = match[0]
            line = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
    if node is not None and line is None:
        line = node.start_mark.line + 1
    return line


def parse(text: str, source: str = "recipe") -> Recipe:
    """Validate recipe text; raise :class:`RecipeError` naming the key and line."""
    try:
        root = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"{source}{where}: malformed YAML: {problem}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: a recipe is a YAML mapping with at least 'model:'")
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        key, msg, loc = describe(exc)
        line = _line_of(root, loc)
        where = f" line {line}" if line else ""
        raise RecipeError(f"{source}{where}: {key}: {msg}") from None


def describe(exc: ValidationError, skip: int = 0) -> tuple[str, str, tuple[Any, ...]]:
    """``(dotted key, message naming the value received, location)`` of the first error.

    Args:
        exc: the pydantic error.
        skip: leading location parts to leave out of the key (e.g. ``("prune", 0)``).
    """
    err = exc.errors()[0]
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    key = ".".join(str(p) for p in (loc[skip:] if skip else loc)) or ("" if skip else "recipe")
    if err["type"] == "extra_forbidden":
        return key, "unknown key", loc
    msg = err["msg"].removeprefix("Value error, ")
    if not err["type"].startswith("value_error") and err["type"] != "missing":
        msg += f", got {err.get('input')!r}"
    return key, msg, loc


DENSE_FIELDS = ("model", "model_args", "data", "seed", "train", "penalty")
"""The fields that together make a recipe's trained dense model."""


def key(recipe: Recipe, stages: int = 0) -> str:
    """A short hash of what produced a run's saved state: the :data:`DENSE_FIELDS` and the first
    ``stages`` pruning stages. Saved files carry it, so a resumed run reuses only its own."""
    spec = recipe.model_dump(include=set(DENSE_FIELDS))
    if stages:
        spec["prune"] = [s.model_dump() for s in recipe.prune[:stages]]
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load(path: str | Path) -> Recipe:
    """Read and validate a recipe file."""
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"no such recipe file: {str(path)!r}")
    return parse(p.read_text(), source=str(path))


DEMO = """\
# The demo: LeNet-300-100 on 4,000 real MNIST digits, pruned to 90% by global
# magnitude and fine-tuned. `secateurs run` takes files like this one.
model: lenet-300-100
data: mnist
seed: 0
train: {epochs: 10, lr: 1.0e-3, batch_size: 64}
prune:
  - sparsity: 0.9
    criterion: magnitude
    scope: global
    finetune: {epochs: 5, lr: 5.0e-4}
export: {format: safetensors}
report: true
"""
