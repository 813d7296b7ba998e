"""Fuzzing the parsers of untrusted input: random JSON in a file's header fields and random YAML recipes
give a model or exactly one PruningError line (the CLI's exit 2), never another exception, never a large
allocation, never a file left half-written."""

from __future__ import annotations

import importlib
import json
import resource
import tempfile
from unittest import mock
from pathlib import Path

import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

import secateurs as sc
from secateurs import zoo
from secateurs.runs import recipes

SIZES = st.one_of(st.integers(-3, 40), st.integers(-2**63, 2**63), st.sampled_from([0, 1, 2**31, 2**40, 10**12]))
# (mlp widths up to 40 keep accepted models tiny; the huge ones must be refused before allocation)
SCALARS = st.one_of(st.none(), st.booleans(), SIZES, st.floats(allow_nan=True), st.text(max_size=12))
JSON = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                    max_leaves=12)
NAMES = st.sampled_from(["fc1", "fc2", "fc1.weight", "relu1", "", "nope", "flatten"])
SPARSE = st.dictionaries(NAMES, st.fixed_dictionaries({
    "shape": st.one_of(st.lists(SIZES, max_size=3), JSON), "dtype": st.sampled_from(["float32", "int8", 3]),
    "layout": st.sampled_from(["csr", "bitmask", "zip"])}), max_size=2)
SURGERY = st.lists(st.dictionaries(NAMES, st.dictionaries(
    st.sampled_from(["rows", "cols", "norm", "attrs", "heads", "runtime", "forward"]),
    st.one_of(st.lists(SIZES, max_size=4), JSON), max_size=2), max_size=2), max_size=2)
ARCH = st.fixed_dictionaries({"name": st.sampled_from(["mlp", "lenet-5", "resnet-20", "nope", 3]),
                              "kwargs": st.dictionaries(st.sampled_from(["widths", "in_features", "image_size",
                                                                         "width", "x"]),
                                                        st.one_of(SIZES, st.lists(SIZES, max_size=3), JSON),
                                                        max_size=2)})
FIELDS = st.fixed_dictionaries({}, optional={"sparse": st.one_of(SPARSE, JSON), "surgery": st.one_of(SURGERY, JSON),
                                             "architecture": st.one_of(ARCH, JSON)})

zoo_models = importlib.import_module("secateurs.zoo.models")  # the module (zoo.models is a function)

_BASE: dict[str, torch.Tensor] = {}


def _base() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A real pruned MLP's tensors and header, made once."""
    if not _BASE:
        m = zoo.model("mlp", in_features=6, widths=[4], num_classes=3)
        sc.prune(m, 0.5)
        with tempfile.TemporaryDirectory() as d:
            sc.save(m, Path(d) / "m.safetensors")
            with safe_open(str(Path(d) / "m.safetensors"), "pt") as f:
                _BASE.update({k: f.get_tensor(k) for k in f.keys()})
                _BASE["__header__"] = f.metadata()  # type: ignore[assignment]
    header = dict(_BASE["__header__"])  # type: ignore[arg-type]
    return {k: v for k, v in _BASE.items() if k != "__header__"}, header


def _peak_mib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=FIELDS, raw=st.booleans())
def test_random_header_fields_load_or_give_one_error_line(tmp_path: Path, fields: dict, raw: bool) -> None:
    tensors, header = _base()
    for key, value in fields.items():
        header[key] = json.dumps(value)[:-1] if raw else json.dumps(value)  # raw: damaged JSON
    path = tmp_path / "fuzz.safetensors"
    save_file(tensors, str(path), metadata=header)
    before = _peak_mib()
    try:
        sc.load(path)
    except sc.PruningError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 600, str(exc)
    assert _peak_mib() - before < 200


RECIPE_KEYS = st.sampled_from(["model", "model_args", "data", "seed", "train", "prune", "export", "report", "x"])
RECIPE = st.dictionaries(RECIPE_KEYS, JSON, max_size=5).map(lambda d: {"model": "mlp", **d})


@settings(max_examples=60, deadline=None)
@given(recipe=RECIPE, text=st.text(max_size=80))
def test_random_recipes_parse_or_give_one_error_line(recipe: dict, text: str) -> None:
    for source in (yaml.safe_dump(recipe), text):
        try:
            recipes.parse(source)
        except recipes.RecipeError as exc:
            assert "\n" not in str(exc) and len(str(exc)) < 600, str(exc)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=st.dictionaries(st.sampled_from(["widths", "in_features", "num_classes", "image_size"]),
                            st.one_of(SIZES, st.lists(SIZES, max_size=3)), max_size=2),
       name=st.sampled_from(["mlp", "lenet-5", "resnet-20", "mobilenet-v2", "vgg", "transformer"]))
def test_random_model_args_build_or_give_one_error_line(args: dict, name: str) -> None:
    """Under a 64 MiB limit on the weights (the real one is half the machine's memory)."""
    before = _peak_mib()
    with mock.patch.object(zoo_models, "memory_limit", lambda: 64 * 2**20):
        try:
            zoo.model(name, **args)
        except sc.PruningError as exc:
            assert "\n" not in str(exc) and len(str(exc)) < 600, str(exc)
    assert _peak_mib() - before < 300
