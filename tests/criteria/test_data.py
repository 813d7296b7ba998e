"""Criteria that use data: missing data or loss, batches of every form, the model left as it was."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import secateurs as sc

from .helpers import _linear


@pytest.mark.parametrize("name", ["taylor", "snip", "obd", "grasp", "fisher", "activation", "wanda", "obs"])
def test_missing_data_names_the_criterion(name):
    net = _linear([[1.0, 2.0]])
    with pytest.raises(sc.PruningError, match=f"criterion '{name}' needs data="):
        sc.prune(net, sparsity=0.5, criterion=name)
    assert sc.masks(net) == {}


def test_missing_loss_and_missing_shape():
    net = _linear([[1.0, 2.0]])
    with pytest.raises(sc.PruningError, match="criterion 'taylor' needs loss_fn="):
        sc.prune(net, sparsity=0.5, criterion="taylor", data=[torch.ones(1, 2)])
    with pytest.raises(sc.PruningError, match="synflow.*example_inputs"):
        sc.prune(net, sparsity=0.5, criterion="synflow")


@pytest.mark.parametrize("name", ["taylor", "snip", "obd", "grasp", "fisher", "activation", "wanda", "obs", "synflow"])
def test_scoring_leaves_the_model_as_it_was(name):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    net.train()
    net[3].bias.requires_grad_(False)
    net[0].weight.grad = torch.full_like(net[0].weight, 7.0)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    data = [(torch.randn(6, 4), torch.randint(0, 3, (6,))) for _ in range(2)]
    sc.score(net, name, data=data, loss_fn=F.cross_entropy, example_inputs=(torch.randn(2, 4),))
    assert net.training
    assert not net[3].bias.requires_grad and net[0].weight.requires_grad
    assert torch.equal(net[0].weight.grad, torch.full_like(net[0].weight, 7.0))
    assert net[3].weight.grad is None
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k  # BatchNorm statistics did not move


def test_dict_batches_for_keyword_models():
    class Kw(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 2)

        def forward(self, input_ids=None, attention_mask=None):
            return self.proj(input_ids * attention_mask)

    net = Kw()
    data = [{"input_ids": torch.randn(5, 4), "attention_mask": torch.ones(5, 4)}]
    sc.prune(net, sparsity=0.5, criterion="wanda", data=data, scope="local")
    assert sc.sparsity(net) == 0.5


def test_bad_batches_are_a_clear_error():
    with pytest.raises(sc.PruningError, match="data batches must be"):
        sc.prune(_linear([[1.0, 2.0]]), sparsity=0.5, criterion="wanda", data=[(1, 2, 3)])
    with pytest.raises(sc.PruningError, match="no batches"):
        sc.prune(_linear([[1.0, 2.0]]), sparsity=0.5, criterion="wanda", data=[])
