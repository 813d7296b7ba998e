"""Choosing round_to from timings: the largest staircase the noise allows."""

from secateurs.hardware.rounding import choose_round_to, sweep
from secateurs.hardware.table import LatencyTable, LayerSpec
from secateurs.hardware.timing import Timing

from .helpers import fake_measure


def _stairs(step: int, noise: float = 0.0, spread: float = 0.0) -> dict[int, Timing]:
    return {w: Timing(-(-w // step) + noise * ((w * 7) % 3 - 1), spread, 5) for w in range(16, 33)}


def test_staircases_of_16_8_and_4_are_read():
    assert [choose_round_to(_stairs(s)) for s in (16, 8, 4, 2)] == [16, 8, 4, 2]


def test_noise_within_the_spread_does_not_hide_the_steps():
    assert choose_round_to(_stairs(8, noise=0.05, spread=0.05)) == 8


def test_proportional_or_flat_times_give_one():
    assert choose_round_to({w: Timing(float(w), 0.01, 5) for w in range(16, 33)}) == 1
    assert choose_round_to({w: Timing(5.0, 0.5, 5) for w in range(16, 33)}) == 1
    assert choose_round_to({}) == 1


def test_sweep_covers_sixteen_widths_below_a_multiple_of_sixteen(tmp_path):
    table = LatencyTable(batch_size=1, folder=None, measure=fake_measure)
    spec = LayerSpec("conv", 8, 40, (4, 4), 1, (3, 3), (1, 1), (1, 1), (1, 1))
    assert sorted(sweep(spec, table)) == list(range(16, 33))
    assert sorted(sweep(spec.at(8, 6), table)) == list(range(1, 7))
    assert choose_round_to(sweep(spec, table)) == 8
