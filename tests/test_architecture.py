"""The package's shape: layers import only downwards, no cycles, and every module imports on its own."""

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import import_graph  # noqa: E402


def test_no_cycles_no_upward_imports_no_late_imports():
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "import_graph.py"), "--verbose"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    for figure in ("cycles 0", "upward imports 0", "late imports 0"):
        assert figure in out.stdout


def test_every_module_has_a_layer():
    assert [m for m in import_graph.modules() if import_graph.rank(m, import_graph.LAYERS) is None] == []


def test_the_counts_see_what_they_count(tmp_path, monkeypatch):
    pkg = tmp_path / "secateurs"
    (pkg / "runs").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "runs" / "__init__.py").write_text("")
    (pkg / "masking.py").write_text("from .runs import runner\n\ndef f():\n    import json\n    import onnx\n")
    (pkg / "runs" / "runner.py").write_text("from .. import masking\n")
    monkeypatch.setattr(import_graph, "ROOT", pkg)
    mods = import_graph.modules()
    edges, late = import_graph.graph(mods)
    assert import_graph.cycles(edges) == [["secateurs.masking", "secateurs.runs.runner"]]
    assert import_graph.upward(edges, mods, import_graph.LAYERS) == [("secateurs.masking", "secateurs.runs.runner")]
    assert [t for _, t, _ in late] == ["json"]  # onnx is an optional extra


def _submodules() -> list[str]:
    return sorted(import_graph.modules())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_every_submodule_imports_alone_in_a_fresh_interpreter():
    """One fresh interpreter loads the third-party packages, then forks once per module: each child
    imports that one secateurs module with no other secateurs module loaded before it."""
    code = """
import os, sys, importlib
import numpy, torch, torch.fx, pydantic, yaml, safetensors, tqdm, matplotlib.figure
failed = []
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        assert not [m for m in sys.modules if m == 'secateurs' or m.startswith('secateurs.')]
        try:
            importlib.import_module(name)
        except BaseException as exc:
            print(f'{name}: {type(exc).__name__}: {exc}', flush=True)
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if status:
        failed.append(name)
print('failed:', failed)
sys.exit(1 if failed else 0)
"""
    names = _submodules()
    assert len(names) > 50
    out = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
