"""Poisson-process simulation (thinning), synthetic intensities, window geometry (moved from gpkit.datasets)."""

import math

import pytest
import torch

from gpkit import datasets as D
from gpkit.cox import (
    HermiteIntensity,
    poisson_process,
    polygon_contains,
    synthetic_point_process,
    window_contains,
)
from gpkit.datasets.point_processes import PP_SETS


@pytest.mark.parametrize("name", ["sine1d", "bumps2d"])
def test_poisson_process_counts(name):
    counts = torch.tensor([float(len(synthetic_point_process(name, seed=s).X)) for s in range(60)])
    expected = synthetic_point_process(name).extras["expected_count"]
    assert abs(counts.mean() - expected) < 4 * math.sqrt(expected / 60)
    assert abs(counts.var() / expected - 1) < 0.5  # Poisson: variance = mean


def test_poisson_process_follows_intensity():
    lam = lambda X: 1.0 + 9.0 * (X[:, 0] > 50)
    bounds = torch.tensor([[0.0], [100.0]], dtype=torch.float64)
    ev = poisson_process(lam, bounds, seed=0)
    assert ((ev >= 0) & (ev <= 100)).all() and (ev[:, 0].diff() >= 0).all()
    left = (ev[:, 0] <= 50).sum()
    assert abs(left - 50) < 4 * math.sqrt(50) and abs(len(ev) - 550) < 4 * math.sqrt(550)
    # a too small max_intensity is detected and enlarged, not silently wrong
    ev2 = poisson_process(lam, bounds, seed=1, max_intensity=2.0)
    assert abs((ev2[:, 0] > 50).sum() - 500) < 4 * math.sqrt(500)
    with pytest.raises(ValueError, match="bounds"):
        poisson_process(lam, torch.tensor([[1.0], [0.0]]))


def test_hermite_intensity_is_seeded_and_loadable():
    a, b = D.load("synthetic-hermite1d"), D.load("synthetic-hermite1d", seed=0)
    assert torch.equal(a.X, b.X) and a.extras["bounds"].tolist() == [[0.0], [100.0]]
    t = torch.linspace(0, 100, 50, dtype=torch.float64)[:, None]
    assert (a.extras["intensity"](t) >= 0).all()
    assert not torch.equal(HermiteIntensity(1)(t), a.extras["intensity"](t))
    assert torch.equal(synthetic_point_process("hermite1d").X, a.X)


def test_polygon_contains_square_with_hole():
    outer = torch.tensor([[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 4.0]])
    hole = torch.tensor([[1.0, 1.0], [1.0, 3.0], [3.0, 3.0], [3.0, 1.0]])
    pts = torch.tensor([[0.5, 0.5], [2.0, 2.0], [5.0, 1.0], [3.5, 2.0]])
    assert polygon_contains([outer, hole], pts).tolist() == [True, False, False, True]


@pytest.mark.parametrize("name", ["redwood", "clmfires"])
def test_real_patterns_lie_in_their_windows(name, shared_data_dir):
    ds = D.load(name)
    assert window_contains(ds, ds.X).all()
    assert not window_contains(ds, ds.extras["bounds"][1:] + 1.0).any()
    assert name in PP_SETS
