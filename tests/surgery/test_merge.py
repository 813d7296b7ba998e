"""Data-free neuron merging (Srinivas & Babu, 2015)."""

import math

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs import zoo
from secateurs.surgery import merge


def _mlp(w1, b1, w2):
    net = nn.Sequential(nn.Linear(len(w1[0]), len(w1)), nn.ReLU(), nn.Linear(len(w1), len(w2)))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor(w1))
        net[0].bias.copy_(torch.tensor(b1))
        net[2].weight.copy_(torch.tensor(w2))
        net[2].bias.zero_()
    return net


def test_identical_neurons_merge_with_no_change():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3))
    with torch.no_grad():
        net[0].weight[4] = net[0].weight[1]
        net[0].bias[4] = net[0].bias[1]
    x = torch.randn(8, 5)
    r = sc.merge_neurons(net, amount=1 / 6, example_inputs=(x,))
    assert r.model[0].out_features == 5 and r.model[2].in_features == 5
    assert sorted(r.layers[0].merges[0][:2]) == [1, 4] and r.layers[0].merges[0][3] == pytest.approx(0.0)
    with torch.no_grad():
        assert torch.allclose(r.model(x), net(x), atol=1e-6)
    assert net[0].out_features == 6  # the input model is unchanged


def test_saliency_and_surgery_by_hand_on_three_neurons():
    # W rows: [1, 0], [1, 0.1], [0, 1]; outgoing a = [1, 2, 3]  ->  <a_j^2> = [1, 4, 9]
    # D01 = 0.01, D02 = 2, D12 = 1.81; s_ij = <a_j^2> D_ij: merging 0 into 1 costs 1 * 0.01, the least
    net = _mlp([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]], [0.0, 0.0, 0.0], [[1.0, 2.0, 3.0]])
    r = sc.merge_neurons(net, amount=0.34, example_inputs=(torch.ones(1, 2),))
    kept, removed, alpha, saliency = r.layers[0].merges[0]
    assert (kept, removed, alpha) == (1, 0, 1.0)
    assert saliency == pytest.approx(0.01)
    assert r.model[2].weight.tolist() == [[3.0, 3.0]]  # a_1 <- a_1 + a_0 = 2 + 1
    assert r.model[0].weight.flatten().tolist() == pytest.approx([1.0, 0.1, 0.0, 1.0])


def test_greedy_matches_a_naive_recomputation():
    torch.manual_seed(1)
    w = torch.randn(12, 5, dtype=torch.float64)
    out = torch.randn(12, 3, dtype=torch.float64)
    fast = merge.greedy(w, out.pow(2).mean(1), 8, outgoing=out)
    alive, a, naive = list(range(12)), out.clone(), []
    for _ in range(8):
        best = min(((a[j].pow(2).mean() * (w[i] - w[j]).pow(2).sum()).item(), i, j)
                   for i in alive for j in alive if i != j)
        s, i, j = best
        naive.append((i, j))
        a[i] += a[j]
        alive.remove(j)
    assert [(i, j) for i, j, _, _ in fast] == naive


def test_record_matches_the_new_shapes_and_replays(tmp_path):
    torch.manual_seed(0)
    net = zoo.model("lenet-300-100")
    r = sc.merge_neurons(net, amount=0.4)
    by_layer = {rec.layer: rec for rec in r.layers}
    assert set(by_layer) == {"fc1", "fc2"}
    assert by_layer["fc1"].after == r.model.fc1.out_features == r.model.fc2.in_features == 180
    assert by_layer["fc2"].after == r.model.fc2.out_features == r.model.fc3.in_features == 60
    for rec in r.layers:
        removed = [j for _, j, _, _ in rec.merges]
        assert len(set(removed)) == len(removed) == rec.before - rec.after
        assert not set(removed) & {i for i, _, _, _ in rec.merges[len(removed):]}
    path = tmp_path / "merged.safetensors"
    sc.save(r.model, path)
    x = torch.randn(4, 1, 28, 28)
    again = sc.load(path)
    with torch.no_grad():
        assert torch.equal(again(x), r.model(x))


def test_conv_to_linear_boundary_merges_filters():
    torch.manual_seed(0)
    net = zoo.model("lenet-5").eval()
    with torch.no_grad():
        net.conv2.weight[7] = net.conv2.weight[3]
        net.conv2.bias[7] = net.conv2.bias[3]
    r = sc.merge_neurons(net, amount=0.0, layers={"conv2": 1 / 16})
    assert r.model.conv2.out_channels == 15 and r.model.fc1.in_features == 15 * 25
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(r.model(x), net(x), atol=1e-5)


def test_scaled_merges_positive_multiples_exactly():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    with torch.no_grad():
        net[0].weight[3] = 2.5 * net[0].weight[0]
        net[0].bias[3] = 2.5 * net[0].bias[0]
    x = torch.randn(16, 4)
    scaled = sc.merge_neurons(net, amount=0.2, scaled=True, example_inputs=(x,))
    plain = sc.merge_neurons(net, amount=0.2, example_inputs=(x,))
    with torch.no_grad():
        assert torch.allclose(scaled.model(x), net(x), atol=1e-5)
        assert not torch.allclose(plain.model(x), net(x), atol=1e-3)
    assert scaled.layers[0].merges[0][2] in (pytest.approx(2.5), pytest.approx(0.4))


def test_scaled_needs_a_relu_like_activation():
    net = nn.Sequential(nn.Linear(4, 5), nn.GELU(), nn.Linear(5, 2))
    with pytest.raises(sc.PruningError, match="ReLU-like.*GELU"):
        sc.merge_neurons(net, amount=0.2, scaled=True, example_inputs=(torch.ones(1, 4),))
    assert sc.merge_neurons(net, amount=0.2, example_inputs=(torch.ones(1, 4),)).model[0].out_features == 4


def test_auto_stops_at_the_knee():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 3))
    with torch.no_grad():
        net[0].weight.mul_(10)
        for src, dst in ((0, 5), (1, 6), (2, 7), (3, 8)):
            net[0].weight[dst] = net[0].weight[src] + 1e-4
            net[0].bias[dst] = net[0].bias[src]
    r = sc.merge_neurons(net, amount="auto", example_inputs=(torch.ones(1, 6),))
    assert r.layers[0].after == 6  # the four near-duplicates go, then saliency jumps


def test_knee_of_a_hockey_stick():
    assert merge.knee([1e-6, 1e-6, 1e-6, 1e-5, 1e-1, 1.0, 10.0]) == 4  # the knee point itself is included
    assert merge.knee([1e-6, 1e-6, 1e-6, 1.0, 1e-3, 1.1, 1.2]) == 3  # a dip after the jump does not move it
    assert merge.knee([0.0, 0.0, 0.0]) == 3  # all free
    assert merge.knee([1.0]) == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [({"amount": 1.5}, "amount must be a fraction"), ({"amount": "most"}, "amount must be"),
     ({"layers": {"fc9": 0.5}}, "matches no mergeable layer"), ({"layers": [1]}, "layers must be a dict")],
)
def test_bad_input(kwargs, match):
    with pytest.raises(sc.PruningError, match=match):
        sc.merge_neurons(zoo.model("lenet-300-100"), **kwargs)


def test_no_mergeable_pair():
    with pytest.raises(sc.PruningError, match="no mergeable layer pair"):
        sc.merge_neurons(nn.Sequential(nn.Linear(3, 2)), 0.5, example_inputs=(torch.ones(1, 3),))


def test_fast_on_a_wide_layer():
    net = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    r = sc.merge_neurons(net, 0.5, example_inputs=(torch.ones(1, 512),))
    assert r.model[0].out_features == 256 and math.isfinite(r.layers[0].merges[-1][3])


def test_stacked_pairs_see_the_layers_merged_before_them():
    torch.manual_seed(0)
    m = zoo.model("lenet-300-100")
    joint = sc.merge_neurons(m, amount=0.5)
    step1 = sc.merge_neurons(m, amount=0.5, layers={"fc2": None})
    step2 = sc.merge_neurons(step1.model, amount=0.5, layers={"fc1": None})
    assert [r[:2] for r in joint.layers[0].merges] == [r[:2] for r in step1.layers[0].merges]
    assert [r[:2] for r in joint.layers[1].merges] == [r[:2] for r in step2.layers[0].merges]
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(joint.model(x), step2.model(x), atol=1e-5)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_merge_refuses_nan_or_infinite_weights_as_prune_does(bad: float) -> None:
    net = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 2))
    with torch.no_grad():
        net[0].weight[1, 1] = bad
    before = net[0].weight.clone()
    with pytest.raises(sc.PruningError, match="NaN or infinite"):
        sc.merge_neurons(net, 0.5, example_inputs=(torch.ones(1, 3),))
    assert torch.equal(net[0].weight.nan_to_num(), before.nan_to_num())
