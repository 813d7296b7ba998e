"""ONNX export: onnxruntime computes what torch computes (masked, finalized and compacted models)."""

import subprocess
import sys

import pytest
import torch

import secateurs as sc
from secateurs import zoo

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def run_onnx(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


def assert_close(a, b, tol=1e-4):
    assert a.shape == b.shape and (a - b).abs().max() <= tol * max(1.0, float(b.abs().max()))


def test_masked_lenet_matches_onnxruntime_at_another_batch_size(tmp_path):
    model = zoo.model("lenet-300-100")
    sc.prune(model, 0.9)
    diff = sc.export_onnx(model, zoo.example_inputs(model), tmp_path / "lenet.onnx")
    assert diff is not None and diff <= 1e-4
    assert sc.masks(model), "the model keeps its masks: a copy was finalized"
    x = torch.randn(5, 784)
    with torch.no_grad():
        assert_close(run_onnx(tmp_path / "lenet.onnx", x), model(x))
    assert [p.name for p in tmp_path.iterdir()] == ["lenet.onnx"]


def test_compacted_resnet_matches_onnxruntime(tmp_path):
    model = zoo.model("resnet-20").eval()
    x = torch.randn(2, 3, 32, 32)
    sc.prune(model, 0.5, granularity="channel", scope="local", example_inputs=(x,))
    small = sc.compact(model, (x,))
    sc.export_onnx(small, (x,), tmp_path / "small.onnx")
    x3 = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert_close(run_onnx(tmp_path / "small.onnx", x3), model(x3))


def test_bad_inputs_leave_no_file(tmp_path):
    model = zoo.model("lenet-300-100")
    with pytest.raises(sc.PruningError, match="example_inputs"):
        sc.export_onnx(model, torch.randn(1, 783), tmp_path / "x.onnx")
    with pytest.raises(sc.PruningError, match="example_inputs"):
        sc.export_onnx(model, {"x": torch.randn(1, 784)}, tmp_path / "x.onnx")
    assert list(tmp_path.iterdir()) == []


def test_missing_onnxscript_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(sc.PruningError, match=r"secateurs\[onnx\]"):
        sc.export_onnx(zoo.model("lenet-300-100"), torch.randn(1, 784), tmp_path / "x.onnx")


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "secateurs", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_exports_a_saved_pruned_model(tmp_path):
    model = zoo.model("lenet-300-100")
    sc.prune(model, 0.8)
    sc.save(model, tmp_path / "m.safetensors")
    done = cli("export", "m.safetensors", "--onnx", "out/m.onnx", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "wrote out/m.onnx" in done.stdout and "onnxruntime max abs diff" in done.stdout
    x = torch.randn(4, 784)
    with torch.no_grad():
        assert_close(run_onnx(tmp_path / "out" / "m.onnx", x), model(x))


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
    sc.save(zoo.model("lenet-300-100"), tmp_path / "m.safetensors")
    for args in (["--input-shape", "1,783"], ["--input-shape", "1,x"]):
        done = cli("export", "m.safetensors", "--onnx", "m.onnx", *args, cwd=tmp_path)
        assert done.returncode == 2 and "--input-shape" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    done = cli("export", "missing.safetensors", "--onnx", "m.onnx", cwd=tmp_path)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
