"""Module paths from before the layered layout still import, as the modules that hold their code now."""

import importlib
import subprocess
import sys

import pytest

import secateurs as sc
from secateurs._moved import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_path_imports_the_new_module(old):
    assert importlib.import_module(old) is importlib.import_module(MOVED[old])


def test_documented_names_are_where_the_docs_say():
    from secateurs.distributed import init, verify_identical  # noqa: F401
    from secateurs.export import export_onnx, load, save  # noqa: F401
    from secateurs.sparse_linear import CompactLinear, CsrLinear  # noqa: F401
    from secateurs.surgery.attention import PrunedMultiheadAttention  # noqa: F401
    from secateurs.training import evaluate, train  # noqa: F401


def test_importing_an_old_path_keeps_the_public_functions():
    code = ("import secateurs as sc, importlib; importlib.import_module('secateurs.accelerate'); "
            "import secateurs.runtime, secateurs.compare; assert callable(sc.accelerate), sc.accelerate; "
            "assert sc.wrap_convs.__module__ == 'secateurs.surgery.gates'")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert callable(sc.accelerate)
