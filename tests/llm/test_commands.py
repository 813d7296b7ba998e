"""``secateurs llm prune`` and ``secateurs llm eval``."""

from __future__ import annotations

import subprocess
import sys

from secateurs import cli

from .conftest import save_tiny


def test_prune_then_eval(tmp_path, capsys):
    path = save_tiny(tmp_path / "tok", tokenizer=True)
    text = tmp_path / "held.txt"
    text.write_text("Return a new list containing all items from the iterable in ascending order. " * 4)
    code = cli.main(["llm", "prune", str(path), "-o", str(tmp_path / "out"), "--sparsity", "2:4", "--method",
                     "wanda", "--samples", "4", "--seqlen", "16", "--calibration", str(text), "-q"])
    assert code == 0 and "done: 2 layers wanda at 2:4 (uniform)" in capsys.readouterr().out
    assert cli.main(["llm", "eval", str(tmp_path / "out"), "--text", str(text), "--seqlen", "16", "-q"]) == 0
    assert capsys.readouterr().out.startswith("perplexity ")
    assert cli.main(["llm", "prune", str(path), "-o", str(tmp_path / "o2"), "--sparsity", "1.5"]) == 2
    assert "sparsity 1.5 is out of range" in capsys.readouterr().err


def test_bad_input_exits_2_with_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "secateurs", "llm", "prune", str(tmp_path), "-o", str(tmp_path / "o")],
                       check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "has no config.json" in r.stderr


def test_the_command_runs_beside_a_torchvision_whose_operators_do_not_load(tmp_path):
    """In a fresh process (no test conftest): transformers' model classes import torchvision, which fails
    beside the CPU build of torch unless ``secateurs.compat.prepare_torchvision`` ran first."""
    path = save_tiny(tmp_path / "tok", tokenizer=True)
    text = tmp_path / "held.txt"
    text.write_text("Return a new list containing all items from the iterable in ascending order. " * 4)
    r = subprocess.run([sys.executable, "-m", "secateurs", "llm", "eval", str(path), "--text", str(text),
                        "--seqlen", "16", "-q"], check=False, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.startswith("perplexity "), r.stderr
