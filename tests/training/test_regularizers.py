"""Sparsity penalties: hand-computed values and gradients, masks, layers=, training, errors."""

import doctest
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from secateurs import masking
from secateurs.training import regularizers
from secateurs.errors import PruningError
from secateurs.pruning import prune
from secateurs.training.regularizers import PENALTIES, penalty

W = [[3.0, -4.0], [0.0, 1.0]]
R2 = math.sqrt(2.0)


def linear(values=W, bias: bool = False) -> nn.Linear:
    rows, cols = len(values), len(values[0])
    layer = nn.Linear(cols, rows, bias=bias)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(values))
    return layer


def two_layers(first=W, second=((1.0, -2.0), (0.5, 0.0))) -> nn.Sequential:
    return nn.Sequential(linear(first), nn.ReLU(), linear(second))


def value_and_grad(model: nn.Module, kind: str, **kw) -> tuple[float, torch.Tensor]:
    value = penalty(model, kind, 1.0, **kw)
    value.backward()
    return value.item(), masking.original(model).grad


# -- values and gradients by hand, w = [[3, -4], [0, 1]] --------------------------------

HAND = {  # kind: (value, d value / d w)
    "l1": (8.0, [[1.0, -1.0], [0.0, 1.0]]),  # sign(w); |·|'(0) = 0
    "l2": (26.0, [[6.0, -8.0], [0.0, 2.0]]),  # 2w
    "linf": (4.0, [[0.0, -1.0], [0.0, 0.0]]),  # sign at the argmax only
    # rows [3, -4] (norm 5) and [0, 1] (norm 1), each of size 2: √2·(5 + 1); grad √2·w_g/‖w_g‖
    "group_lasso": (R2 * 6.0, [[R2 * 0.6, -R2 * 0.8], [0.0, R2 * 1.0]]),
}


@pytest.mark.parametrize("kind", PENALTIES)
def test_value_and_gradient_by_hand(kind):
    value, grad = value_and_grad(linear(), kind)
    expected, expected_grad = HAND[kind]
    assert value == pytest.approx(expected)
    torch.testing.assert_close(grad, torch.tensor(expected_grad))


@pytest.mark.parametrize("kind", PENALTIES)
def test_weight_scales_linearly_and_defaults_to_1e_4(kind):
    model = linear()
    assert penalty(model, kind, 0.5).item() == pytest.approx(0.5 * HAND[kind][0])
    assert penalty(model, kind).item() == pytest.approx(1e-4 * HAND[kind][0])
    assert penalty(model, kind, 0.0).item() == 0.0


def test_group_lasso_input_columns_by_hand():
    # columns [3, 0] (norm 3) and [-4, 1] (norm √17), each of size 2
    value, grad = value_and_grad(linear(), "group_lasso", groups="input")
    assert value == pytest.approx(R2 * (3.0 + math.sqrt(17.0)))
    col = torch.tensor([-4.0, 1.0]) / math.sqrt(17.0)
    expected = R2 * torch.tensor([[1.0, col[0]], [0.0, col[1]]])
    torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize("synonym", ["channel", "filter"])
def test_channel_and_filter_mean_output_rows(synonym):
    model = linear()
    assert penalty(model, "group_lasso", 1.0, groups=synonym).item() == pytest.approx(R2 * 6.0)


def test_group_lasso_with_groups_of_one_is_l1():
    model = linear([[3.0], [-4.0], [0.5]])  # three neurons with one weight each
    assert penalty(model, "group_lasso", 1.0).item() == pytest.approx(7.5)
    assert penalty(model, "l1", 1.0).item() == pytest.approx(7.5)


def test_group_lasso_on_conv_filters_and_input_channels():
    conv = nn.Conv2d(2, 3, kernel_size=2, bias=False)
    nn.init.ones_(conv.weight)
    # 3 filters of 2·2·2 = 8 ones: 3 · √8 · √8; 2 input channels of 3·2·2 = 12 ones: 2 · √12 · √12
    assert penalty(conv, "group_lasso", 1.0, groups="filter").item() == pytest.approx(24.0)
    assert penalty(conv, "group_lasso", 1.0, groups="input").item() == pytest.approx(24.0)


def test_grouped_conv_input_channel_is_read_by_its_own_filters_only():
    conv = nn.Conv1d(4, 2, kernel_size=1, groups=2, bias=False)  # weight (2, 2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[3.0], [4.0]], [[-4.0], [3.0]]]))
    # every input channel meets one weight: Σ √1 · |w| = 14, not √2 · (5 + 5)
    assert penalty(conv, "group_lasso", 1.0, groups="input").item() == pytest.approx(14.0)
    assert penalty(conv, "group_lasso", 1.0, groups="neuron").item() == pytest.approx(R2 * 10.0)


def test_linf_is_summed_over_layers():
    model = two_layers()
    assert penalty(model, "linf", 1.0).item() == pytest.approx(4.0 + 2.0)
    penalty(model, "linf", 1.0).backward()
    torch.testing.assert_close(model[2].weight.grad, torch.tensor([[0.0, -1.0], [0.0, 0.0]]))


def test_other_kinds_sum_over_layers_and_ignore_biases():
    model = two_layers()
    with torch.no_grad():
        model[0].bias = nn.Parameter(torch.full((2,), 100.0))
    assert penalty(model, "l1", 1.0).item() == pytest.approx(8.0 + 3.5)
    assert penalty(model, "l2", 1.0).item() == pytest.approx(26.0 + 5.25)


def test_half_precision_weights_do_not_overflow():
    layer = nn.Linear(256, 256, bias=False).half()
    nn.init.ones_(layer.weight)  # Σ w² = 65536 > float16's largest, 65504
    value = penalty(layer, "l2", 1.0)
    assert value.dtype == torch.float32 and value.item() == 65536.0


@given(
    st.lists(st.floats(-10, 10), min_size=6, max_size=6),
    st.sampled_from(PENALTIES),
    st.floats(0, 5),
)
def test_nonnegative_and_linear_in_weight(values, kind, lam):
    model = linear([values[:3], values[3:]])
    one = penalty(model, kind, 1.0).item()
    assert one >= 0.0
    assert penalty(model, kind, lam).item() == pytest.approx(lam * one, rel=1e-5, abs=1e-6)


# -- masks: pruned weights add nothing and get no gradient -------------------------------

MASK = torch.tensor([[True, False], [True, True]])  # prunes the -4
MASKED = {"l1": 4.0, "l2": 10.0, "linf": 3.0, "group_lasso": R2 * (3.0 + 1.0)}


@pytest.mark.parametrize("kind", PENALTIES)
def test_masked_weights_contribute_nothing_and_get_zero_gradient(kind):
    model = linear()
    masking.set_mask(model, MASK)
    value, grad = value_and_grad(model, kind)
    assert value == pytest.approx(MASKED[kind])
    assert grad[0, 1].item() == 0.0
    assert masking.original(model)[0, 1].item() == -4.0  # the stored value is still there


def test_fully_pruned_group_gets_zero_not_nan_gradient():
    model = linear()
    masking.set_mask(model, torch.tensor([[False, False], [True, True]]))
    value, grad = value_and_grad(model, "group_lasso")
    assert value == pytest.approx(R2 * 1.0)
    torch.testing.assert_close(grad, torch.tensor([[0.0, 0.0], [0.0, R2]]))


def test_after_prune_the_penalty_sees_the_masked_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4))
    prune(model, sparsity=0.5)
    used = sum(m.weight.abs().sum() for _, m in masking.prunable_layers(model))
    stored = sum(masking.original(m).abs().sum() for _, m in masking.prunable_layers(model))
    assert penalty(model, "l1", 1.0).item() == pytest.approx(used.item())
    assert used < stored


# -- layers= -----------------------------------------------------------------------------


def test_layers_none_excludes_a_layer_and_it_gets_no_gradient():
    model = two_layers()
    value = penalty(model, "l1", 1.0, layers={"0": None})
    assert value.item() == pytest.approx(3.5)
    value.backward()
    assert model[0].weight.grad is None and model[2].weight.grad is not None


def test_layers_any_value_includes_and_the_last_pattern_wins():
    model = two_layers()
    # 1.0 would be refused as a sparsity by sc.prune; here any non-None value includes
    assert penalty(model, "l1", 1.0, layers={"*": None, "2": 1.0}).item() == pytest.approx(3.5)
    assert penalty(model, "l1", 1.0, layers={"*.weight": 0.3}).item() == pytest.approx(11.5)


# -- minimised alone, the penalties shrink the weights -----------------------------------


def minimise(model: nn.Module, kind: str, steps: int, lr: float = 0.01) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        penalty(model, kind, 1.0).backward()
        opt.step()


@pytest.mark.parametrize("kind", PENALTIES)
def test_minimising_the_penalty_shrinks_the_weights(kind):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    before = penalty(model, kind, 1.0).item()
    l1_before = penalty(model, "l1", 1.0).item()
    minimise(model, kind, steps=20)
    assert penalty(model, kind, 1.0).item() < 0.9 * before
    assert penalty(model, "l1", 1.0).item() < l1_before


def test_group_lasso_zeroes_a_whole_row_where_l1_zeroes_single_weights():
    rows = [[1.0, 0.1], [3.0, 2.0]]  # norms ≈ 1.005 and ≈ 3.61
    group, single = linear(rows), linear(rows)
    # each row's norm shrinks by lr·√2 per step: the first reaches 0 after ~71 steps
    minimise(group, "group_lasso", steps=80)
    minimise(single, "l1", steps=80)
    norms = group.weight.detach().norm(dim=1)
    assert norms[0] < 0.01 * R2 + 1e-6  # whole row within one step of zero
    assert norms[1] > 2.0  # the strong row survives
    # L1 moves each weight by lr per step: the 0.1 is gone but its row-mate is not
    assert single.weight[0, 1].abs() < 0.011 and single.weight[0, 0] > 0.15


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"kind": "l3"}, ["kind", "'l3'", "l1", "group_lasso"]),
        ({"kind": "l1", "groups": "rows"}, ["groups", "'rows'", "neuron", "input"]),
        ({"kind": "l1", "weight": -1.0}, ["weight", "-1.0", ">= 0"]),
        ({"kind": "l1", "weight": float("nan")}, ["weight", "nan", ">= 0"]),
        ({"kind": "l1", "weight": float("inf")}, ["weight", "inf"]),
        ({"kind": "l1", "weight": "big"}, ["weight", "'big'"]),
        ({"kind": "l1", "weight": True}, ["weight", "True"]),
        ({"kind": "l1", "layers": {"fc9": None}}, ["'fc9'", "matches no prunable layer"]),
        ({"kind": "l1", "layers": {"*": None}}, ["excludes every prunable layer"]),
        ({"kind": "l1", "layers": ["0"]}, ["layers", "['0']"]),
    ],
)
def test_bad_arguments_name_the_argument_value_and_allowed(kwargs, words):
    with pytest.raises(PruningError) as err:
        penalty(two_layers(), **kwargs)
    for word in words:
        assert word in str(err.value)


def test_model_without_prunable_layers():
    with pytest.raises(PruningError, match="no prunable layers"):
        penalty(nn.Sequential(nn.ReLU(), nn.LayerNorm(3)), "l1")
    assert issubclass(PruningError, ValueError)


def test_penalties_constant_and_doctest():
    assert PENALTIES == ("l1", "l2", "linf", "group_lasso")
    result = doctest.testmod(regularizers)
    assert result.attempted >= 4 and result.failed == 0
