"""torchvision's Python parts import beside the CPU build of torch once its missing operators are declared."""

import importlib.util

import pytest

from secateurs.compat import prepare_torchvision


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None, reason="torchvision is not installed")
def test_torchvision_imports_after_prepare():
    prepare_torchvision()  # conftest has already called it: a second call changes nothing
    assert prepare_torchvision() is False
    import torchvision
    from torchvision.ops.misc import FrozenBatchNorm2d

    assert FrozenBatchNorm2d(4).weight.shape == (4,)
    assert torchvision.__version__
