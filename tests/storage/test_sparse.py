"""Bitmask and CSR encodings of pruned weights."""

import torch
from hypothesis import given
from hypothesis import strategies as st

from secateurs.storage import sparse as sparse_format


@given(rows=st.integers(1, 9), cols=st.integers(1, 40), density=st.floats(0, 1), seed=st.integers(0, 1000))
def test_round_trip_is_exact(rows, cols, density, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g)
    mask = torch.rand(rows, cols, generator=g) < density
    parts, meta = sparse_format.encode("w", w, mask)
    weight, back = sparse_format.decode("w", dict(parts), meta)
    assert torch.equal(back, mask)
    assert torch.equal(weight, w * mask)


def test_pack_by_hand():
    bits = sparse_format.pack(torch.tensor([True, False, True, False, False, False, False, True, True]))
    assert bits.tolist() == [0b10100001, 0b10000000]
    assert sparse_format.unpack(bits, 9).tolist() == [True, False, True, False, False, False, False, True, True]


def test_layout_is_the_smaller_one():
    w = torch.randn(64, 64)
    dense_mask = torch.rand(64, 64) < 0.5
    sparse_mask = torch.zeros(64, 64, dtype=torch.bool)
    sparse_mask[0, :3] = True
    assert sparse_format.encode("w", w, dense_mask)[1]["layout"] == "bitmask"
    assert sparse_format.encode("w", w, sparse_mask)[1]["layout"] == "csr"
