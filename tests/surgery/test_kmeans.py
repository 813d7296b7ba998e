"""The seeded k-means folding uses."""

import itertools

import pytest
import torch

from secateurs.surgery.kmeans import kmeans, ward


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


def test_weighted_kmeans_centres_are_weighted_means():
    x = torch.tensor([[0.0], [1.0], [10.0]])
    labels, err = kmeans(x, 2, weights=torch.tensor([3.0, 1.0, 1.0]))
    assert labels[0] == labels[1] != labels[2]
    assert err == pytest.approx(3 * 0.25**2 + 1 * 0.75**2)  # centre 0.25


def test_ward_matches_a_brute_force_agglomeration():
    def brute(x, k, w):
        clusters = [[i] for i in range(len(x))]
        while len(clusters) > k:
            def cost(a, b):
                wa, wb = w[a].sum(), w[b].sum()
                ca, cb = (w[a, None] * x[a]).sum(0) / wa, (w[b, None] * x[b]).sum(0) / wb
                return float(wa * wb / (wa + wb) * (ca - cb).pow(2).sum())
            p, q = min(itertools.combinations(range(len(clusters)), 2),
                       key=lambda pq: cost(clusters[pq[0]], clusters[pq[1]]))
            clusters[p] += clusters.pop(q)
        return sorted(sorted(c) for c in clusters)

    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        x, w = torch.randn(10, 3, generator=gen).double(), torch.rand(10, generator=gen).double()
        labels, _, kept = ward(x, 4, w)
        got = sorted(sorted((labels == c).nonzero().squeeze(1).tolist()) for c in range(4))
        assert got == brute(x, 4, w)
        assert all(int(labels[kept[c]]) == c for c in range(4))  # each representative is in its cluster


def test_ward_joins_a_light_point_into_its_nearest_heavy_one():
    x = torch.tensor([[0.0], [1.0], [3.0]])
    labels, _, kept = ward(x, 2, torch.tensor([10.0, 0.01, 10.0]))
    assert labels.tolist() == [0, 0, 1] and kept.tolist() == [0, 2]
