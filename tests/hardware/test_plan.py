"""The latency model and the greedy allocation, on hand-built problems."""

import pytest
import torch

from secateurs.hardware.plan import Layer, Problem, Space, descend, levels
from secateurs.hardware.table import LatencyTable, LayerSpec
from secateurs.hardware.timing import Timing


def _table():
    # a layer's time is c_in * c_out / 100 ms (no staircase)
    return LatencyTable(batch_size=1, folder=None, measure=lambda s: Timing(s.c_in * s.c_out / 100, 0.1, 3))


def _problem(scores_a, scores_b, residual=0.0):
    a = Space(("a",), list(range(8)), torch.tensor(scores_a), levels(8, 2, 1))
    b = Space(("b",), list(range(8, 16)), torch.tensor(scores_b), levels(8, 2, 1))
    spec = LayerSpec("linear", 8, 8, (), 1)
    layers = [Layer("a", spec.at(10, 8), rows={0: 8}, volume=1.0),       # 10 -> a
              Layer("b", spec, rows={1: 8}, cols={0: 8}, volume=1.0),    # a -> b
              Layer("c", spec.at(8, 4), cols={1: 8}, volume=1.0)]        # b -> 4
    return Problem([a, b], layers, residual)


def test_levels():
    assert levels(20, 8, 1) == [8, 16, 20] and levels(16, 4, 5) == [8, 12, 16] and levels(3, 8, 1) == [3]


def test_channels_follow_the_spaces_read_and_written():
    p = _problem([1.0] * 8, [1.0] * 8)
    assert p.layers[1].channels((4, 6), p.spaces) == (4, 6)
    assert p.predict((8, 8), _table()) == pytest.approx((80 + 64 + 32) / 100)
    assert p.spread((8, 8), _table()) == pytest.approx((3 * 0.1 ** 2) ** 0.5)


def test_the_residual_shrinks_with_the_activations():
    p = _problem([1.0] * 8, [1.0] * 8, residual=1.0)
    assert p.predict((8, 8), _table()) - p.predict((4, 8), _table()) == pytest.approx(
        (80 + 64 - 40 - 32) / 100 + 1.0 * 4 / 20)


def test_descend_removes_the_least_important_per_millisecond_first():
    unimportant_a = _problem([0.1] * 8, [1.0] * 8)
    path = descend(unimportant_a, _table(), stop_ms=0.0)
    assert path[1].widths == (6, 8)
    unimportant_b = _problem([1.0] * 8, [0.1] * 8)
    assert descend(unimportant_b, _table(), stop_ms=0.0)[1].widths == (8, 6)
    assert [s.predicted_ms for s in path] == sorted((s.predicted_ms for s in path), reverse=True)
    assert path[-1].widths == (2, 2)  # the narrowest levels, where no move is left
    assert path[1].loss == pytest.approx(0.2)  # the two lowest scores of a


def test_descend_stops_at_the_limit():
    p = _problem([1.0] * 8, [1.0] * 8)
    path = descend(p, _table(), stop_ms=1.2)
    assert path[-1].predicted_ms <= 1.2 < path[-2].predicted_ms


def test_a_level_that_saves_nothing_is_jumped_over():
    flat = LatencyTable(batch_size=1, folder=None,
                        measure=lambda s: Timing(float(-(-s.c_out // 4) * -(-s.c_in // 4)), 0.0, 3))
    p = _problem([0.1] * 8, [1.0] * 8)
    path = descend(p, flat, stop_ms=0.0)
    assert path[1].widths[0] % 4 == 0  # 6 saves nothing in steps of 4: straight to 4
