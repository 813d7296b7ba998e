"""The bundled calibration and evaluation text."""

from __future__ import annotations

import pytest
import torch

from secateurs.errors import PruningError
from secateurs.llm import text


def test_bundled_parts_are_real_disjoint_english():
    calib, held = text.bundled("calibration").splitlines(), text.bundled("evaluation").splitlines()
    assert len(calib) > 300 and len(held) > 300 and not set(calib) & set(held)
    assert sum(len(p.split()) for p in calib) > 10_000
    assert all(p[0].isalpha() for p in calib + held)
    with pytest.raises(PruningError, match="part 'train' is not allowed"):
        text.bundled("train")


def test_windows_and_chunks():
    ids = torch.arange(50)
    w = text.windows(ids, 3, 10)
    assert w.shape == (3, 10) and bool((w[:, 1:] - w[:, :-1] == 1).all())
    assert torch.equal(w, text.windows(ids, 3, 10))  # fixed seed
    assert [c.shape[1] for c in text.chunks(ids, 16)] == [16, 16, 16, 2]
    assert [c.shape[1] for c in text.chunks(torch.arange(33), 16)] == [16, 16]
    with pytest.raises(PruningError, match="fewer than seqlen=60"):
        text.windows(ids, 3, 60)
    with pytest.raises(PruningError, match="samples must be a positive int"):
        text.windows(ids, 0, 10)
