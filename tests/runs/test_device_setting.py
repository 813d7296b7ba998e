"""The ``device`` setting of recipes and ``--device`` of the command line: parsed, checked, used, recorded."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from secateurs import cli, devices
from secateurs.runs import recipes, runner

GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")

RECIPE = """\
model: mlp
model_args: {widths: [16]}
data: digits
train: {epochs: 1}
prune:
  - {sparsity: 0.5, finetune: {epochs: 1}}
report: false
"""


def _main(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str]:
    code = cli.main([str(a) for a in args])
    return code, capsys.readouterr().err


def test_the_default_is_the_cpu_and_old_recipes_keep_it() -> None:
    assert recipes.parse(RECIPE).device == "cpu"
    assert recipes.parse(RECIPE + "device: CUDA:1\n").device == "cuda:1"


def test_a_bad_device_names_the_key_and_the_line() -> None:
    with pytest.raises(recipes.RecipeError, match=r"line 8: device: device must be auto, cpu, cuda or cuda:N, "
                                                  r"got 'tpu'"):
        recipes.parse(RECIPE + "device: tpu\n")


def test_bad_device_flag_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _main(capsys, "prune", "mlp", "--sparsity", "0.5", "--device", "tpu", "-o", tmp_path / "o", "-q")
    assert code == 2 and err == "secateurs: error: --device must be auto, cpu, cuda or cuda:N, got 'tpu'\n"
    assert not (tmp_path / "o").exists()


@NO_GPU
@pytest.mark.parametrize("flag", [True, False])
def test_a_gpu_on_a_machine_without_one_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            flag: bool) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE + ("" if flag else "device: cuda\n"))
    code, err = _main(capsys, "run", recipe, *(["--device", "cuda"] if flag else []), "-o", tmp_path / "o", "-q")
    name = "--device" if flag else "device"
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"secateurs: error: {name} 'cuda' asks for a GPU, but torch sees none"), err
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_auto_is_resolved_used_and_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[torch.device] = []
    real = runner._run

    def spy(recipe: recipes.Recipe, out: Path, quiet: bool, device: torch.device) -> dict:
        seen.append(device)
        return real(recipe, out, quiet, device)

    monkeypatch.setattr(runner, "_run", spy)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    code, err = _main(capsys, "run", recipe, "--device", "auto", "-o", tmp_path / "o")
    assert code == 0, err
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    want = devices.resolve("auto")
    assert seen == [want]
    assert metrics["device"] == devices.describe(want) and metrics["recipe"]["device"] == "auto"
    assert metrics["final"]["accuracy"] > 0.3  # it trained and evaluated there


def test_the_runner_joins_torchrun_with_the_backend_of_its_device(monkeypatch: pytest.MonkeyPatch) -> None:
    backends: list[str | None] = []

    @contextlib.contextmanager
    def session(backend: str | None = None) -> Iterator[None]:
        backends.append(backend)
        raise RuntimeError("stop here")
        yield

    monkeypatch.delenv("SECATEURS_BACKEND", raising=False)
    monkeypatch.setattr(runner.distributed, "session", session)
    with pytest.raises(RuntimeError, match="stop here"):
        runner.run(recipes.parse(RECIPE + "device: cpu\n"), "unused")
    assert backends == ["gloo"]


@GPU
def test_a_recipe_trains_prunes_and_evaluates_on_the_gpu(tmp_path: Path) -> None:
    cpu = runner.run(recipes.parse(RECIPE), tmp_path / "cpu", quiet=True)
    gpu = runner.run(recipes.parse(RECIPE + "device: cuda\n"), tmp_path / "gpu", quiet=True)
    assert gpu["device"].startswith("cuda:")
    assert abs(gpu["final"]["sparsity"] - cpu["final"]["sparsity"]) < 1e-6
    assert abs(gpu["final"]["accuracy"] - cpu["final"]["accuracy"]) < 0.05  # same run, other kernels


@GPU
@pytest.mark.parametrize("stage", ["{criterion: wanda, sparsity: 0.5}", "{criterion: obs, sparsity: 0.5}",
                                   "{criterion: data-free, amount: 0.5}",
                                   "{sparsity: 0.5, granularity: neuron, criterion: taylor}"])
def test_gpu_stages_that_score_with_data_or_merge(tmp_path: Path, stage: str) -> None:
    text = RECIPE.replace("  - {sparsity: 0.5, finetune: {epochs: 1}}", f"  - {stage}") + "device: cuda\n"
    metrics = runner.run(recipes.parse(text), tmp_path / "o", quiet=True)
    assert metrics["final"]["sparsity"] > 0.2 and metrics["device"].startswith("cuda")
