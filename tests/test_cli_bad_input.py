"""Bad input on the command line: exit 2 with one line on stderr, found before any work (in-process: fast)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

import secateurs as sc
from secateurs import cli, files, zoo
from secateurs.runs import runner


def _main(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line(code: int, err: str) -> None:
    assert code == 2, err
    assert err.startswith("secateurs: error:") and err.count("\n") == 1 and len(err) < 400, err


def test_export_input_shape_that_does_not_fit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _main(capsys, "export", "mlp", "--compact", "--input-shape", "1,5", "--onnx", tmp_path / "m.onnx")
    _one_line(code, err)
    assert "--input-shape 1,5" in err and not (tmp_path / "m.onnx").exists()


def test_data_that_does_not_fit_a_saved_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sc.save(zoo.model("mlp", in_features=784, widths=[8], num_classes=10), tmp_path / "m.safetensors")
    code, out, err = _main(capsys, "prune", tmp_path / "m.safetensors", "--sparsity", "0.5", "--data", "digits",
                           "--finetune-epochs", "0", "-o", tmp_path / "out", "-q")
    _one_line(code, err)
    assert "data 'digits'" in err


def test_unusable_output_is_found_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("")
    trained = []
    monkeypatch.setattr(runner, "train", lambda *a, **k: trained.append(1))
    code, _, err = _main(capsys, "prune", "mlp", "--sparsity", "0.5", "--data", "digits", "-o",
                         tmp_path / "file" / "out")
    _one_line(code, err)
    assert not trained


def test_read_only_file_system_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def read_only(folder: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(folder))

    monkeypatch.setattr(runner, "check_writable", read_only)
    code, _, err = _main(capsys, "prune", "mlp", "--sparsity", "0.5", "-o", tmp_path / "out")
    _one_line(code, err)
    assert "Read-only file system" in err


@pytest.mark.parametrize("recipe", [b"\x89PNG\r\n\x1a\n\x00\x00", b"model: mlp\nseed: 1.0e23\n",
                                    b"model: mlp\nmodel_args: {widths: [1000000, 1000000]}\n"])
def test_bad_recipes_are_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], recipe: bytes) -> None:
    (tmp_path / "r.yaml").write_bytes(recipe)
    code, _, err = _main(capsys, "run", tmp_path / "r.yaml", "-o", tmp_path / "out")
    _one_line(code, err)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_damaged_header_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    code, _, err = _main(capsys, "summary", tmp_path / "m.safetensors")
    _one_line(code, err)


@pytest.mark.parametrize("model", zoo.models())
@pytest.mark.parametrize("data", zoo.datasets())
def test_every_zoo_model_builds_for_every_data_set_it_can_take(model: str, data: str) -> None:
    ds = zoo.dataset(data)
    try:
        net = runner.build_model(runner.Recipe(model=model, data=data))
    except sc.PruningError as exc:  # only a model that cannot take images this small may refuse
        assert "image" in str(exc) and ds.input_shape[-1] < 12, exc
        return
    runner.fits(net, (ds.test.tensors[0][:2],), data)


def test_files_module_is_used_by_the_cli() -> None:
    assert runner.check_writable is files.check_writable


def test_amount_without_data_free_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _main(capsys, "prune", "mlp", "--amount", "0.5", "-o", tmp_path / "out")
    _one_line(code, err)
    assert "--amount" in err and not (tmp_path / "out").exists()


def test_export_compact_of_an_unstructured_model_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    m = zoo.model("mlp", widths=[8])
    sc.prune(m, 0.5)
    sc.save(m, tmp_path / "m.safetensors")
    code, _, err = _main(capsys, "export", tmp_path / "m.safetensors", "--compact", "--onnx", tmp_path / "m.onnx")
    assert code == 0 and "removed nothing" in err


def test_pruning_untrained_weights_prints_a_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _main(capsys, "prune", "mlp", "--sparsity", "0.5", "-o", tmp_path / "out")
    assert code == 0 and "not trained" in err
    code, _, err = _main(capsys, "prune", "mlp", "--sparsity", "0.5", "-o", tmp_path / "out", "-q")
    assert code == 0 and err == ""  # --quiet stays silent
