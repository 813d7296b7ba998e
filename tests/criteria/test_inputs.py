"""Wanda and OBS on transformers' Conv1D (GPT-2): the same masks and weights as on the equal nn.Linear."""

import pytest
import torch
from torch import nn

import secateurs as sc

transformers = pytest.importorskip("transformers")
from transformers.pytorch_utils import Conv1D  # noqa: E402


def twins(seed=0):
    """Two equal models: one with GPT-2's Conv1D (weight stored in x out), one with nn.Linear."""
    torch.manual_seed(seed)
    conv = nn.Sequential(Conv1D(24, 16), nn.ReLU(), Conv1D(8, 24))
    lin = nn.Sequential(nn.Linear(16, 24), nn.ReLU(), nn.Linear(24, 8))
    with torch.no_grad():
        for c, l in ((conv[0], lin[0]), (conv[2], lin[2])):
            l.weight.copy_(c.weight.t())
            l.bias.copy_(c.bias)
    return conv, lin


@pytest.mark.parametrize("criterion", ["wanda", "obs"])
@pytest.mark.parametrize("granularity", ["unstructured", "2:4"])
def test_conv1d_is_pruned_as_its_linear_twin(criterion, granularity):
    conv, lin = twins()
    data = [(torch.randn(32, 16),) for _ in range(2)]
    for model in (conv, lin):
        sc.prune(model, 0.5, criterion=criterion, granularity=granularity, scope="local", data=data)
        sc.finalize(model)
    for c, l in ((conv[0], lin[0]), (conv[2], lin[2])):
        assert torch.equal(c.weight.t() != 0, l.weight != 0)
        assert torch.allclose(c.weight.t(), l.weight, atol=1e-5)
    x = torch.randn(5, 16)
    with torch.no_grad():
        assert torch.allclose(conv(x), lin(x), atol=1e-5)
