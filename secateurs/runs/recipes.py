"""Recipes: one YAML file says what a run does, validated before anything starts.

Example::

    model: lenet-300-100          # zoo name, or a .safetensors file saved by secateurs
    data: mnist                   # zoo dataset name
    train: {epochs: 10, lr: 1e-3}
    prune:
      - {sparsity: 0.9, criterion: magnitude, scope: global, finetune: {epochs: 5}}
    export: {format: safetensors}
    report: true
    device: auto                  # cpu (the default), cuda, cuda:N, or auto: a GPU when there is one

Each entry of ``prune:`` is a stage of the kind its ``schedule:`` names (``oneshot`` when left out;
``criterion: data-free`` for neuron merging): a small model of its own, registered in
:mod:`secateurs.runs.stages`, whose keys are only those of that kind. :class:`Stage` is their union.

Every field has a default that does nothing surprising, so old recipes keep
their meaning when fields are added.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from .. import devices
from ..errors import PruningError
from ..training.regularizers import PENALTIES
from . import stages
from .keys import DENSE_FIELDS, key
from .settings import Finetune, Strict, Train
from .stages import Stage
from .stages.data_free import DATA_FREE

__all__ = ["DATA_FREE", "DEMO", "DENSE_FIELDS", "Export", "Finetune", "Penalty", "Recipe", "RecipeError", "Stage",
           "Train", "ValidationError", "describe", "key", "load", "parse"]


class RecipeError(PruningError):
    """A recipe that cannot run: the message names the key and the line."""


class Penalty(Strict):
    """A sparsity regulariser added to the training loss (:func:`secateurs.penalty`)."""

    kind: Literal[PENALTIES] = Field(description=", ".join(PENALTIES))  # type: ignore[valid-type]
    weight: float = Field(1e-5, ge=0, description="its coefficient")


class Export(Strict):
    """What is written besides the report."""

    format: Literal["safetensors"] = Field("safetensors", description="file format of the saved model")
    compact: bool = Field(False, description="physically remove pruned channels before saving "
                                             "(needs a neuron/channel/filter stage)")


class Recipe(Strict):
    """A whole run: model, data, training, pruning stages, export and report."""

    model: str = Field(description="zoo model name, or a .safetensors file saved by secateurs")
    model_args: dict[str, Any] = Field(default_factory=dict, description="arguments of the zoo model")
    data: str | None = Field(None, description="zoo dataset; needed to train and to measure accuracy")
    seed: int = Field(0, ge=0, lt=2**63, description="seeds initialisation and data order")
    train: Train = Field(default_factory=Train, description="training before pruning")
    prune: list[Stage] = Field(default_factory=list, description="pruning stages, in order; each is the kind its "
                                                                 "schedule names (secateurs.runs.stages)")
    penalty: Penalty | None = Field(None, description="regulariser added to every training loss")
    export: Export = Field(default_factory=Export, description="saved model format")
    report: bool = Field(True, description="write report.md, report.html and their plots")
    device: str = Field("cpu", description=f"where training, scoring, merging and evaluation run: {devices.ALLOWED} "
                                           "(auto: a GPU when there is one; under torchrun each process's own)")

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        return devices.check(value, "device")  # whether this machine has it is checked when the run starts

    @model_validator(mode="after")
    def _needs_data(self) -> Recipe:
        if self.data is None and (self.train.epochs or any(s.trains() for s in self.prune)):
            raise ValueError("training or fine-tuning needs data: set data to a zoo dataset")
        if self.export.compact:
            for s in self.prune:
                if s.blocks_compact:
                    raise ValueError(f"export.compact cannot follow a {s.name} stage: {s.blocks_compact}")
            if not any(s.removes_units() for s in self.prune):
                raise ValueError("export.compact needs a prune stage with granularity neuron, channel or filter")
        for s in self.prune:
            needs = s.needs_data()
            if self.data is None and needs:
                raise ValueError(f"{needs} needs data: set data to a zoo dataset")
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


MAX_NODES = 100_000
"""The most YAML nodes a recipe may hold once its aliases are expanded (real recipes have a few hundred):
nested aliases (a "billion laughs" file) are refused before anything reads their values."""

MAX_BYTES = 1_000_000
"""The largest recipe file read."""

MAX_QUOTED = 80
"""The most characters of a value an error message quotes."""


def quoted(value: Any) -> str:
    """``repr(value)``, cut to :data:`MAX_QUOTED` characters: an error line stays one short line."""
    text = repr(value)
    return text if len(text) <= MAX_QUOTED else text[: MAX_QUOTED - 3] + "..."


def _expanded(root: yaml.Node | None) -> int:
    """Nodes under ``root`` with every alias expanded, counted without expanding them (each node once)."""
    sizes: dict[int, int] = {}
    order, stack = [], [root] if root is not None else []
    while stack:  # iterative post-order: deep nesting cannot exhaust Python's stack
        node = stack.pop()
        if id(node) in sizes:
            continue
        sizes[id(node)] = 0
        order.append(node)
        if isinstance(node, yaml.MappingNode):
            stack.extend(part for pair in node.value for part in pair)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    for node in reversed(order):
        children = ([p for pair in node.value for p in pair] if isinstance(node, yaml.MappingNode)
                    else node.value if isinstance(node, yaml.SequenceNode) else [])
        sizes[id(node)] = min(1 + sum(sizes[id(c)] for c in children), MAX_NODES + 1)
    return sizes[id(root)] if root is not None else 0


def _compose(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    try:
        root = yaml.compose(text)
        if _expanded(root) > MAX_NODES:
            raise RecipeError(f"{source}: more than {MAX_NODES:,} values once its aliases are expanded; "
                              f"a recipe is a short file (nested aliases?)")
        return root, yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"{source}{where}: malformed YAML: {problem[:MAX_QUOTED]}") from None
    except RecursionError:
        raise RecipeError(f"{source}: nested too deeply to be a recipe") from None


def parse(text: str, source: str = "recipe") -> Recipe:
    """Validate recipe text; raise :class:`RecipeError` naming the key and line.

    The expanded size is bounded (:data:`MAX_NODES`) and error lines quote at most
    :data:`MAX_QUOTED` characters of a value."""
    root, raw = _compose(text, source)
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: a recipe is a YAML mapping with at least 'model:'")
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        name, msg, loc = describe(exc)
        line = _line_of(root, loc)
        where = f" line {line}" if line else ""
        raise RecipeError(f"{source}{where}: {name[:MAX_QUOTED]}: {msg[:300]}") from None


def describe(exc: ValidationError, skip: int = 0) -> tuple[str, str, tuple[Any, ...]]:
    """``(dotted key, message naming the value received, location)`` of the first error.

    The stage kind pydantic puts in a stage's location (``prune.0.oneshot.sparsity``) is left out
    (``prune.0.sparsity``); an unknown key of a stage names the kind it does not belong to and its keys.

    Args:
        exc: the pydantic error.
        skip: leading location parts to leave out of the key (e.g. ``("prune", 0)``).
    """
    err = exc.errors()[0]
    loc, kind = _untagged(err["loc"])
    if err["type"] == "union_tag_invalid":  # a schedule no stage kind is registered as
        loc += ("schedule",)
    name = ".".join(str(p) for p in (loc[skip:] if skip else loc)) or ("" if skip else "recipe")
    if err["type"] == "extra_forbidden":
        own = f" for {kind.selector()} (its keys: {', '.join(sorted(kind.model_fields))})" if kind else ""
        return name, f"unknown key{own}", loc
    if err["type"] == "union_tag_invalid":
        return name, f"unknown schedule {err['ctx']['tag']!r}; allowed: {', '.join(stages.schedules())}", loc
    if err["type"] == "union_tag_not_found":
        return name, f"a stage is a mapping such as {{sparsity: 0.9}}, got {quoted(err.get('input'))}", loc
    msg = err["msg"].removeprefix("Value error, ")
    if not err["type"].startswith("value_error") and err["type"] != "missing":
        msg += f", got {quoted(err.get('input'))}"
    return name, msg, loc


def _untagged(raw: tuple[Any, ...]) -> tuple[tuple[Any, ...], type[stages.StageBase] | None]:
    """``raw`` without pydantic's validator and stage-kind parts; and the stage kind when ``raw`` ends on one
    of a stage's own keys (``("prune", 0, "oneshot", "rounds")``), else ``None``."""
    loc: list[Any] = []
    kind, at = None, -1
    for p in raw:
        if isinstance(p, str) and p.startswith("function-"):
            continue
        if isinstance(p, str) and loc and isinstance(loc[-1], int) and p in stages.names():
            kind, at = stages.get(p), len(loc)
            continue
        loc.append(p)
    return tuple(loc), kind if len(loc) == at + 1 else None


def load(path: str | Path) -> Recipe:
    """Read and validate a recipe file."""
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"no such recipe file: {str(path)!r}")
    if p.stat().st_size > MAX_BYTES:
        raise RecipeError(f"{str(path)!r} has {p.stat().st_size:,} bytes; a recipe is a short YAML file "
                          f"(at most {MAX_BYTES:,})")
    data = p.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise RecipeError(f"{str(path)!r} is not a text file (a recipe is YAML in UTF-8)") from None
    if "\x00" in text:
        raise RecipeError(f"{str(path)!r} is not a text file (it holds NUL bytes; a recipe is YAML)")
    return parse(text, source=str(path))


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
