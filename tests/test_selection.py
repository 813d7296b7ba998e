"""Selection on transformers' Conv1D (weight stored (in, out)): granularities see it as (out, in)."""

import pytest
import torch
from torch import nn

import secateurs as sc


def _pair():
    conv1d = pytest.importorskip("transformers.pytorch_utils").Conv1D(6, 8)  # nf=6 outputs, nx=8 inputs
    torch.nn.init.normal_(conv1d.weight, generator=torch.Generator().manual_seed(0))
    linear = nn.Linear(8, 6)
    with torch.no_grad():
        linear.weight.copy_(conv1d.weight.t())
    return conv1d, linear


@pytest.mark.parametrize("granularity", ["neuron", "2:4", (2, 4), "unstructured"])
@pytest.mark.parametrize("criterion", ["magnitude", "random"])
def test_conv1d_is_pruned_as_the_linear_with_its_weight_transposed(granularity, criterion):
    conv1d, linear = _pair()
    for m in (conv1d, linear):
        sc.prune(m, 0.5, granularity=granularity, scope="local", criterion=criterion)  # the layer itself
    mask_c, mask_l = sc.masks(conv1d)["weight"], sc.masks(linear)["weight"]
    if criterion == "magnitude":
        assert torch.equal(mask_c.t(), mask_l)
    assert int((~mask_c).sum()) == 24
    if granularity == "neuron":  # whole output units: columns of the stored weight
        assert sorted(mask_c.all(dim=0).tolist()) == [False] * 3 + [True] * 3
    if granularity == "2:4":  # 2 of every 4 inputs of each output: along the stored rows
        assert (mask_c.t().reshape(6, 2, 4).sum(-1) == 2).all()


def test_unstructured_half_of_gpt2_is_exact_and_every_conv1d_is_pruned():
    pytest.importorskip("transformers")
    from tests.transformer_models import gpt2

    model, _ = gpt2()
    r = sc.prune(model.transformer, 0.5)
    assert len(r.layers) == 8 and all("c_" in row.name for row in r.layers)
    total = sum(row.params for row in r.layers)
    assert sum(row.params - row.nonzero for row in r.layers) == total // 2
