"""Per-layer masks and updates on hand-made tensors."""

from __future__ import annotations

import pytest
import torch

from secateurs.criteria.obs import surgeon
from secateurs.errors import PruningError
from secateurs.llm import layerwise


def test_target_parsing():
    assert layerwise.target(0.5).sparsity == 0.5 and layerwise.target(0.5).nm is None
    t = layerwise.target("2:4")
    assert t.sparsity == 0.5 and t.nm.n == 2 and t.nm.m == 4
    for bad in (0, 1, -0.1, True, "half"):
        with pytest.raises(PruningError, match="sparsity"):
            layerwise.target(bad)


def test_keep_mask_rows_and_nm():
    scores = torch.tensor([[4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
    keep = layerwise.keep_mask(scores, layerwise.target(0.5), 0.5)
    assert keep.tolist() == [[True, True, False, False], [False, False, True, True]]
    keep = layerwise.keep_mask(scores, layerwise.target(0.25), 0.25)
    assert keep.sum(dim=1).tolist() == [3, 3]
    nm = layerwise.keep_mask(torch.tensor([[1.0, 5.0, 2.0, 4.0, 9.0, 8.0, 7.0, 6.0]]), layerwise.target("2:4"), 0.5)
    assert nm.tolist() == [[False, True, False, True, True, True, False, False]]


def test_prune_weight_methods():
    w = torch.tensor([[1.0, -3.0, 2.0, 0.5]])
    goal = layerwise.target(0.5)
    new, keep = layerwise.prune_weight(w, "magnitude", None, goal, 0.5)
    assert new.tolist() == [[0.0, -3.0, 2.0, 0.0]]
    x2 = torch.tensor([100.0, 0.01, 1.0, 1.0])  # mean x² per input
    new, keep = layerwise.prune_weight(w, "wanda", x2, goal, 0.5)
    assert keep.tolist() == [[True, False, True, False]]  # scores 10, 0.3, 2, 0.5
    h = torch.eye(4) * 2
    new, keep = layerwise.prune_weight(w, "sparsegpt", h, goal, 0.5)
    inverse = torch.cholesky_inverse(torch.linalg.cholesky(h + 0.02 * torch.eye(4)))
    assert torch.allclose(new, surgeon(w, keep, torch.linalg.cholesky(inverse, upper=True)))
    with pytest.raises(PruningError, match="never ran on the calibration data"):
        layerwise.prune_weight(w, "wanda", None, goal, 0.5, "fc")


def test_fingerprint():
    a = [torch.tensor([[1, 2]])]
    assert layerwise.fingerprint(a) == layerwise.fingerprint([torch.tensor([[1, 2]])])
    assert layerwise.fingerprint(a) != layerwise.fingerprint([torch.tensor([[2, 1]])])
    assert layerwise.fingerprint([]) == "none"
