"""torchvision's Python parts import beside the CPU build of torch once its missing operators are declared."""

import importlib.util

import pytest

from secateurs.compat import prepare_torchvision


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None, reason="torchvision is not installed")
def test_torchvision_imports_after_prepare():
    prepare_torchvision()  # import secateurs has already called it: a second call changes nothing
    assert prepare_torchvision() is False
    import torchvision
    from torchvision.ops.misc import FrozenBatchNorm2d

    assert FrozenBatchNorm2d(4).weight.shape == (4,)
    assert torchvision.__version__


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None, reason="torchvision is not installed")
def test_transformers_and_timm_import_after_secateurs():
    from secateurs import compat

    pytest.importorskip("transformers")
    from transformers import GPT2Config, GPT2LMHeadModel  # failed with PyPI's torchvision before secateurs' fix

    assert GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=10)).config.n_layer == 1
    assert all("torchvision" in why for why in compat.TORCHVISION_OPS_MISSING)
