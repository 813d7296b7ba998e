"""The seeded k-means folding uses."""

import pytest
import torch

from secateurs.surgery.kmeans import kmeans


def test_exactly_k_non_empty_clusters_even_with_duplicate_points():
    x = torch.tensor([[0.0, 0.0]] * 5 + [[1.0, 1.0]])
    labels, err = kmeans(x, 4)
    assert torch.bincount(labels, minlength=4).min() >= 1 and labels.max() == 3
    assert err == pytest.approx(0.0)


def test_same_seed_same_clusters_and_the_error_by_hand():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(10, 3, generator=g), torch.randn(10, 3, generator=g) + 20])
    a, err_a = kmeans(x, 2, seed=3)
    b, err_b = kmeans(x, 2, seed=3)
    assert torch.equal(a, b) and err_a == err_b
    assert len(set(a[:10].tolist())) == 1 and a[0] != a[10]
    means = [x[:10].mean(0), x[10:].mean(0)]
    by_hand = float((x[:10] - means[0]).pow(2).sum() + (x[10:] - means[1]).pow(2).sum())
    assert err_a == pytest.approx(by_hand, rel=1e-5)


def test_k_out_of_range_is_refused():
    with pytest.raises(ValueError, match="k must be"):
        kmeans(torch.zeros(3, 2), 4)
