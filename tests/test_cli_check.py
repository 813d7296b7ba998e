"""``secateurs run --check``: every stage is validated against the built model before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from secateurs import cli

HEAD = "model: mlp\nmodel_args: {widths: [16]}\ndata: digits\ntrain: {epochs: 1}\nprune:\n"


def _run(tmp_path: Path, capsys: pytest.CaptureFixture[str], stages: str, *flags: str) -> tuple[int, str, str]:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(HEAD + stages)
    code = cli.main(["run", str(recipe), "-o", str(tmp_path / "out"), "-q", *flags])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("stages, message", [
    ("  - {sparsity: 0.5}\n  - {schedule: runtime, epochs: 1}\n", "prune stage 2 (schedule runtime): model "),
    ("  - {sparsity: 0.5}\n  - {sparsity: 0.7, granularity: '2:4'}\n", "prune stage 2 (schedule oneshot): granularity 2:4"),
    ("  - {schedule: gradual, sparsity: 0.5, granularity: '2:4', epochs: 1}\n", "prune stage 1 (schedule gradual)"),
    ("  - {schedule: iterative, rate: 0.2, granularity: '2:4', epochs: 1}\n", "prune stage 1 (schedule iterative)"),
    ("  - {criterion: data-free, amount: 0.5, layers: {'nothing*': 0.5}}\n", "prune stage 1 (criterion data-free)"),
])
@pytest.mark.parametrize("check", [True, False])
def test_a_stage_that_cannot_run_is_refused_before_any_training(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                 stages: str, message: str, check: bool) -> None:
    code, _, err = _run(tmp_path, capsys, stages, *(["--check"] if check else []))
    assert code == 2 and err.startswith(f"secateurs: error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written (it used to fail after training)


def test_check_of_a_good_recipe_says_so_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(tmp_path, capsys, "  - {sparsity: 0.5, granularity: '2:4'}\n"
                                            "  - {schedule: iterative, rounds: 1, rate: 0.5, epochs: 1}\n", "--check")
    assert code == 0 and err == ""
    assert out.startswith("recipe ok: model mlp (") and "2 pruning stage(s): schedule oneshot, schedule iterative" in out
    assert not (tmp_path / "out").exists()
