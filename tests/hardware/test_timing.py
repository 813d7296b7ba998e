"""Timings: medians, spreads, interleaving and the machine key."""

import pytest
import torch
from torch import nn

from secateurs.hardware.timing import (
    Timing,
    interleaved,
    machine,
    machine_key,
    spread,
    summarise,
    time_call,
)


def test_spread_is_half_the_interquartile_range():
    assert spread([1.0, 2.0, 3.0, 4.0, 5.0]) == 1.0
    assert spread([7.0]) == 0.0


def test_summarise_reports_milliseconds():
    t = summarise([0.001, 0.002, 0.003, 0.004, 0.100])  # one outlier: the median ignores it
    assert t == Timing(3.0, pytest.approx(1.0), 5)
    assert t.within(2.0) and not t.within(1.9)


def test_time_call_counts_its_calls():
    calls = []
    t = time_call(lambda: calls.append(1), repeats=5, warmup=2, budget_s=10.0)
    assert len(calls) == 7 and t.n == 5 and t.ms >= 0


def test_interleaved_gives_equal_rounds_and_restores_modes():
    a, b = nn.Linear(4, 4).train(), nn.Linear(4, 2)
    out = interleaved([a, b], (torch.ones(3, 4),), rounds=4, warmup=1)
    assert [len(o) for o in out] == [4, 4] and a.training


def test_the_machine_key_follows_batch_size_threads_and_dtype():
    base = machine("cpu", torch.float32, 32)
    assert base["batch_size"] == 32 and base["threads"] == torch.get_num_threads()
    keys = {machine_key(base), machine_key(machine("cpu", torch.float32, 1)),
            machine_key(machine("cpu", torch.float64, 32)), machine_key({**base, "threads": base["threads"] + 1})}
    assert len(keys) == 4 and machine_key(base) == machine_key(dict(base))
