"""``--help`` examples on every command, and ``secateurs zoo``."""

from __future__ import annotations

import shlex

import pytest

from secateurs import cli, zoo
from secateurs.helptext import EXAMPLES, SUBCOMMAND_EXAMPLES


def _commands() -> dict:
    parser = cli._parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices


def test_every_command_has_examples_in_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    commands = _commands()
    assert set(commands) == set(EXAMPLES)  # a new command needs its examples
    for name, command in commands.items():
        text = command.format_help()
        assert "examples:" in text and all(line in text for line, _ in EXAMPLES[name]), name


def test_llm_subcommands_have_examples_in_their_help() -> None:
    llm = _commands()["llm"]
    subs = next(a for a in llm._actions if a.dest == "llm_command").choices
    for name in ("prune", "eval"):
        text = subs[name].format_help()
        assert "examples:" in text and all(line in text for line, _ in SUBCOMMAND_EXAMPLES[f"llm {name}"]), name


@pytest.mark.parametrize("line", [line for lines in [*EXAMPLES.values(), *SUBCOMMAND_EXAMPLES.values()]
                                  for line, _ in lines])
def test_every_example_parses_with_the_flags_the_command_has(line: str) -> None:
    words = shlex.split(line)
    assert words[0] == "secateurs"
    cli._parser().parse_args(words[1:])  # an unknown flag or a missing argument exits 2


def test_the_run_examples_work_on_the_bundled_recipe(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "examples/lenet-300-100.yaml", "--check"]) == 0
    assert capsys.readouterr().out.startswith("recipe ok: model lenet-300-100")


def test_zoo_lists_every_model_with_arguments_that_build_and_every_data_set(capsys) -> None:
    assert cli.main(["zoo"]) == 0
    out = capsys.readouterr().out
    for name in zoo.models():
        args = zoo.arguments(name)
        assert f"  {name} " in out and all(f"{k}=" in out for k in args)
        zoo.model(name, **{k: list(v) if isinstance(v, tuple) else v for k, v in args.items()})  # defaults build
    assert "widths=[256, 128]" in out  # as a recipe writes it
    for name in zoo.datasets():
        assert f"  {name} " in out and "classes" in out
