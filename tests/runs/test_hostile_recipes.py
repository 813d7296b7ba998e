"""Recipes from others: bounded size, short error lines, exit 2 before any allocation."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from secateurs.runs import recipes
from secateurs.runs.recipes import RecipeError, parse

LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
model: *g
"""


def test_nested_aliases_are_refused_quickly() -> None:
    start = time.perf_counter()
    with pytest.raises(RecipeError, match="aliases") as info:
        parse(LAUGHS)
    assert time.perf_counter() - start < 1 and len(str(info.value)) < 200


def test_a_small_alias_bomb_gives_a_short_line() -> None:
    """Under the node limit, the value quoted in the error is cut: the line stays short."""
    text = "\n".join(LAUGHS.splitlines()[:3]) + "\nmodel: mlp\nseed: *c\n"
    with pytest.raises(RecipeError, match="seed") as info:
        parse(text)
    assert len(str(info.value)) < 300 and "\n" not in str(info.value)


def test_deep_nesting_is_a_recipe_error() -> None:
    with pytest.raises(RecipeError):
        parse("model: " + "[" * 5000 + "]" * 5000)


def test_aliases_of_ordinary_size_still_work() -> None:
    r = parse("train: &t {epochs: 0}\nmodel: mlp\nprune:\n  - {sparsity: 0.5, finetune: *t}\n")
    assert r.prune[0].finetune.epochs == 0


@pytest.mark.parametrize("seed", ["1.0e23", "-1", "9223372036854775808"])
def test_out_of_range_seed_is_refused(seed: str) -> None:
    with pytest.raises(RecipeError, match="seed"):
        parse(f"model: mlp\nseed: {seed}\n")


def test_long_unknown_key_is_cut() -> None:
    with pytest.raises(RecipeError) as info:
        parse(f"model: mlp\n{'k' * 5000}: 1\n")
    assert len(str(info.value)) < 300


@pytest.mark.parametrize("content", [bytes(range(256)), b"model: mlp\x00\n", b"\xff\xfe\x00m"])
def test_binary_recipe_file_is_a_recipe_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "r.yaml"
    path.write_bytes(content)
    with pytest.raises(RecipeError, match="not a text file"):
        recipes.load(path)


def test_huge_recipe_file_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("model: mlp\n" + "#" * (recipes.MAX_BYTES + 1))
    with pytest.raises(RecipeError, match="bytes"):
        recipes.load(path)
