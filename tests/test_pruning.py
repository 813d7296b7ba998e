"""sc.prune: the public entry point, its result and its errors."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import secateurs as sc


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))


def test_global_prune_result_table():
    net = _net()
    r = sc.prune(net, sparsity=0.9)
    assert r.sparsity == pytest.approx(0.9, abs=1e-12)
    assert [row.name for row in r.layers] == ["0.weight", "2.weight"]
    assert sum(row.params - row.nonzero for row in r.layers) == 270
    assert "0.weight" in str(r) and "sparsity 0.9000" in str(r)
    assert sc.sparsity(net) == pytest.approx(0.9)


def test_global_prunes_smallest_weights_first():
    net = _net()
    before = torch.cat([net[0].weight.detach().abs().reshape(-1), net[2].weight.detach().abs().reshape(-1)])
    sc.prune(net, sparsity=0.5)
    after = torch.cat([net[0].weight.detach().reshape(-1), net[2].weight.detach().reshape(-1)])
    assert float(before[after == 0].max()) <= float(before[after != 0].min())


def test_biases_are_not_pruned():
    net = _net()
    bias = net[0].bias.detach().clone()
    sc.prune(net, sparsity=0.99)
    assert torch.equal(net[0].bias, bias)


@pytest.mark.parametrize("bad", [1.0, 1.5, -0.1, float("nan"), "0.5", True, None])
def test_bad_sparsity(bad):
    net = _net()
    with pytest.raises(sc.PruningError, match="sparsity"):
        sc.prune(net, sparsity=bad)
    assert sc.masks(net) == {}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"scope": "wide"}, "scope 'wide'; allowed: global, local"),
        ({"granularity": "octagon"}, "granularity 'octagon'; allowed: unstructured"),
        ({"criterion": "nope"}, "criterion 'nope'"),
        ({"layers": {"fc9": 0.5}}, "matches no prunable layer; prunable layers are: 0, 2"),
        ({"layers": {"0": 2.0}}, r"layers\['0'\]"),
        ({"min_density": 1.5}, "min_density"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, match):
    net = _net()
    with pytest.raises(sc.PruningError, match=match):
        sc.prune(net, sparsity=0.5, **kwargs)
    assert sc.masks(net) == {}


def test_pruning_error_is_a_value_error():
    assert issubclass(sc.PruningError, ValueError)


def test_model_without_prunable_layers():
    with pytest.raises(sc.PruningError, match="no prunable layers"):
        sc.prune(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)), sparsity=0.5)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weight_changes_nothing(value):
    net = _net()
    sc.prune(net, sparsity=0.3)
    masks_before = {k: v.clone() for k, v in sc.masks(net).items()}
    with torch.no_grad():
        net[2].parametrizations.weight.original[0, 0] = value
    with pytest.raises(sc.PruningError, match="2.weight has NaN or infinite"):
        sc.prune(net, sparsity=0.9)
    for k, v in sc.masks(net).items():
        assert torch.equal(v, masks_before[k])


def test_sparsity_zero_is_a_no_op_mask():
    net = _net()
    sc.prune(net, sparsity=0.0)
    assert sc.sparsity(net) == 0.0
    assert all(bool(m.all()) for m in sc.masks(net).values())


def test_conv_model_prunes_exactly():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 10))
    sc.prune(net, sparsity=0.7, scope="local")
    for name, m in sc.masks(net).items():
        assert int((~m).sum()) == int(0.7 * m.numel() + 0.5), name
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_pruned_model_still_trains_and_masks_hold():
    net = _net()
    sc.prune(net, sparsity=0.8)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.randn(32, 10), torch.randint(0, 5, (32,))
    first = None
    for _ in range(20):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        first = first if first is not None else float(loss.detach())
        loss.backward()
        opt.step()
    assert float(loss) < first
    assert sc.sparsity(net) == pytest.approx(0.8, abs=1 / 300)


def test_submodule_modes_are_restored():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).train()
    net[1].eval()  # a frozen BatchNorm
    data = [(torch.randn(6, 4), torch.randint(0, 3, (6,)))]
    x = torch.randn(2, 4)
    sc.prune(net, 0.3, criterion="taylor", data=data, loss_fn=F.cross_entropy)
    sc.prune(net, 0.3, granularity="channel", example_inputs=(x,))
    sc.summary(net, (x,))
    sc.compact(net, (x,))
    assert net.training and not net[1].training


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"layers": {"*": None}}, "excludes every prunable layer"),
        ({"layers": ["0"]}, "layers must be a dict"),
        ({"criterion": "wanda", "data": 5}, "data= must be an iterable"),
        ({"criterion": "random", "seed": "a"}, "seed must be an integer"),
        ({"granularity": "channel", "example_inputs": (torch.ones(1, 7),)}, "example_inputs do not fit"),
    ],
)
def test_bad_input_is_one_clear_error(kwargs, match):
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(sc.PruningError, match=match):
        sc.prune(net, 0.5, **kwargs)
    assert sc.masks(net) == {}


class _Frozen(nn.Module):
    """One kind of channel that cannot go: after ``a``, through ``kind``, into ``b`` (then the output)."""

    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.a = nn.Conv2d(4, 8, 1)
        self.g = nn.Conv2d(8, 8, 1, groups=2)
        self.norm = nn.LayerNorm(8)
        self.b = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        y = self.a(x)
        if self.kind == "unknown":
            y = torch.roll(y, 1, dims=1)
        elif self.kind == "layer_norm":
            y = y + self.norm(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        elif self.kind == "grouped":
            y = self.g(y.transpose(1, 2))  # its groups would cut across another axis
        elif self.kind == "twice":
            y = self.b(y)
        return self.b(y)


FROZEN_KINDS = {"output": ("b", "the model's output"), "unknown": ("a", "roll"),
                "layer_norm": ("a", "LayerNorm"), "grouped": ("g", "grouped conv 'g'"),
                "twice": ("b", "called twice")}


@pytest.mark.parametrize("kind", sorted(FROZEN_KINDS))
def test_every_kind_of_frozen_channel_warns_once_and_strict_refuses(kind):
    layer, why = FROZEN_KINDS[kind]
    x = torch.randn(1, 4, 8, 8)
    m = _Frozen(kind)
    with pytest.warns(UserWarning) as caught:
        result = sc.prune(m, 0.5, granularity="channel", scope="local", example_inputs=(x,))
    less = [str(w.message) for w in caught if "less than asked" in str(w.message)]
    assert len(less) == 1 and "reached" in less[0]
    note = next(n for n in result.notes if n.startswith(f"{layer}:"))
    assert why in note and note in less[0]
    assert result.asked == 0.5 and result.reached == result.sparsity
    fresh = _Frozen(kind)
    with pytest.raises(sc.PruningError, match=rf"strict=True.*{layer}: .*{why}"):
        sc.prune(fresh, 0.5, granularity="channel", scope="local", example_inputs=(x,), strict=True)
    assert sc.masks(fresh) == {}


def test_nothing_left_out_means_no_notes_and_no_warning():
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = sc.prune(net, 0.5, strict=True)
    assert result.notes == [] and result.asked == 0.5


def test_neuron_pruning_without_example_inputs_keeps_the_output_layer_whole():
    # LeNet-300-100 lost 6 of its 10 logits this way: the output layer is pruned by rows only when named
    model = sc.zoo.model("lenet-300-100")
    with pytest.warns(UserWarning, match="kept fc3 whole: its neurons are the model's outputs"):
        r = sc.prune(model, 0.5, granularity="neuron")
    masks = sc.masks(model)
    assert "fc3.weight" not in masks and int((~masks["fc1.weight"].all(dim=1)).sum()) > 0
    assert r.notes and "fc3" in r.notes[0] and r.layers[-1].nonzero == r.layers[-1].params
    with pytest.raises(sc.PruningError, match="fc3"):
        sc.prune(sc.zoo.model("lenet-300-100"), 0.5, granularity="neuron", strict=True)
    named = sc.zoo.model("lenet-300-100")
    sc.prune(named, 0.5, granularity="neuron", layers={"fc3": 0.5})  # named: its rows go
    assert int((~sc.masks(named)["fc3.weight"].all(dim=1)).sum()) == 5


def test_untraceable_model_keeps_its_last_layer_and_says_why():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(self.fc1(-x if x.sum() > 0 else x))

    with pytest.warns(UserWarning, match="kept fc2 whole: taken as the model's output layer"):
        sc.prune(Net(), 0.5, granularity="neuron")
    with pytest.raises(sc.PruningError, match="produce the model's outputs; name them in layers="):
        sc.prune(nn.Sequential(nn.Linear(4, 3)), 0.5, granularity="neuron")


@pytest.mark.parametrize("granularity", ["unstructured", "neuron"])
def test_a_sparsity_just_below_one_keeps_a_group_in_every_layer_locally(granularity):
    net = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5), nn.ReLU(), nn.Linear(5, 3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = sc.prune(net, 0.9999999, granularity=granularity, scope="local")  # used to round up to everything
    assert not [w for w in caught if "collapse" in str(w.message)]
    kept = {row.name: row.nonzero for row in r.layers}
    row = {"0.weight": 10, "2.weight": 20, "4.weight": 5}
    assert kept == ({k: 1 for k in row} if granularity == "unstructured" else {**row, "4.weight": 15})
    assert r.sparsity < 1 and sc.sparsity(net) < 1


def test_a_sparsity_just_below_one_globally_keeps_one_weight_and_names_the_collapsed_layers():
    with pytest.warns(UserWarning, match=r"layer collapse\): 2.weight"):
        r = sc.prune(_net(), 0.9999999)
    assert sum(row.nonzero for row in r.layers) == 1 and r.sparsity == pytest.approx(1 - 1 / 300)


def test_the_less_than_asked_warning_points_at_the_callers_line():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    with pytest.warns(UserWarning, match="less than asked") as seen:
        sc.prune(model, 0.5, granularity="neuron", scope="local")  # through sc.prune's wrapper (hardware.entry)
    assert [w.filename for w in seen if "less than asked" in str(w.message)] == [__file__]
