"""output_layers: the prunable layers whose rows are the model's outputs, found without example inputs."""

import torch
from torch import nn

from secateurs.graph.outputs import output_layers


class _TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body, self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 3), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.body(x))
        return self.a(h) + self.b(h).flatten(1)


class _Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            x = -x
        return self.fc2(self.fc1(x))


def test_the_last_layer_of_a_sequential_through_an_activation():
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2), nn.LogSoftmax(dim=1))
    assert output_layers(net, ["0", "2"]) == ["2"]


def test_every_layer_that_reaches_the_output_with_no_layer_between():
    assert output_layers(_TwoHeads(), ["body", "a", "b"]) == ["a", "b"]


def test_a_container_has_no_output_and_an_untraceable_model_is_none():
    assert output_layers(nn.ModuleDict({"a": nn.Linear(2, 2)}), ["a"]) == []
    assert output_layers(_Untraceable(), ["fc1", "fc2"]) is None
