"""Embedded data: scaling helpers, synthetic generators (seeded, right statistics), PDE solutions, fields."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

import gpkit.datasets as D


# ---------------------------------------------------------------- scaling
def test_standardize():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(50, 3, generator=gen, dtype=torch.float64) * torch.tensor([1.0, 10.0, 0.0]) + 5.0
    y = 3.0 * torch.randn(50, generator=gen, dtype=torch.float64) + 7.0
    Xtr, ytr, Xte, yte, (ym, ys) = D.standardize(X[:40], y[:40], X[40:], y[40:])
    assert torch.allclose(Xtr[:, :2].mean(0), torch.zeros(2, dtype=X.dtype), atol=1e-12)
    assert torch.allclose(Xtr[:, :2].std(0), torch.ones(2, dtype=X.dtype))
    assert (
        torch.isfinite(Xtr).all() and torch.isfinite(Xte).all() and (Xtr[:, 2] == 0).all()
    )  # constant column
    assert torch.allclose(ytr.mean(), torch.zeros((), dtype=y.dtype), atol=1e-12)
    assert torch.allclose(ytr.std(), torch.ones((), dtype=y.dtype))
    assert torch.allclose(yte * ys + ym, y[40:]) and torch.allclose(ym, y[:40].mean())
    # test points use the training statistics
    assert torch.allclose(Xte[:, 0], (X[40:, 0] - X[:40, 0].mean()) / X[:40, 0].std())
    assert D.standardize(X, y)[2] is None
    with pytest.raises(ValueError, match="train_X"):
        D.standardize(X[:, 0], y)
    with pytest.raises(ValueError, match="train_y"):
        D.standardize(X, y[:10])


def test_min_max():
    X = torch.tensor([[0.0, 2.0, 1.0], [4.0, 6.0, 1.0], [2.0, 4.0, 1.0]], dtype=torch.float64)
    tr, te = D.min_max(X[:2], X[2:])
    assert tr.tolist() == [[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]] and te.tolist() == [[0.5, 0.5, 0.0]]


# ---------------------------------------------------------------- synthetic GP
def test_synthetic_gp_seeded_and_defaults():
    a, b, c = D.synthetic_gp(200, 3, seed=1), D.synthetic_gp(200, 3, seed=1), D.synthetic_gp(200, 3, seed=2)
    assert torch.equal(a.X, b.X) and torch.equal(a.y, b.y) and not torch.equal(a.y, c.y)
    assert torch.equal(D.load("synthetic-gp", split=1, n=200, d=3).y, a.y)
    f32 = D.load("synthetic-gp", split=1, n=200, d=3, dtype=torch.float32)  # same draw, cast
    assert f32.y.dtype == torch.float32 and torch.allclose(f32.y.double(), a.y, atol=1e-5)
    sim1 = D.synthetic_gp(50, 5)
    assert sim1.extras["lengthscale"].tolist() == [0.25, 0.5, 0.75, 1.0, 1.25]
    assert ((a.X >= 0) & (a.X <= 1)).all() and len(a.splits["test"]) == 40
    with pytest.raises(ValueError, match="likelihood"):
        D.synthetic_gp(10, 1, likelihood="gamma")
    with pytest.raises(ValueError, match="kernel"):
        D.synthetic_gp(10, 1, kernel="periodic")


@pytest.mark.parametrize("kernel", ["matern15", "rbf", "rq"])
def test_synthetic_gp_latent_has_the_kernel_covariance(kernel):
    # whitening f with the true Gram matrix must give i.i.d. N(0, 1) values
    ds = D.synthetic_gp(400, 2, kernel=kernel, lengthscale=0.3, outputscale=2.0, seed=3)
    K = ds.extras["covar_module"](ds.X).to_dense().detach()
    K.diagonal().add_(1e-6)
    z = torch.linalg.solve_triangular(torch.linalg.cholesky(K), ds.extras["f"][:, None], upper=False)[:, 0]
    assert abs(z.mean()) < 4 / math.sqrt(400) and abs(z.var() - 1) < 0.25
    # and with the wrong outputscale the whitened variance is far from 1
    assert abs((z * math.sqrt(2.0)).var() - 1) > 0.3


def test_synthetic_gp_likelihoods():
    n = 1500
    g = D.synthetic_gp(n, 1, noise=0.04, seed=0)
    assert abs((g.y - g.extras["f"]).var() - 0.04) < 0.006
    t = D.synthetic_gp(n, 1, likelihood="studentt", noise=0.1, df=2.0, seed=0)
    med = (t.y - t.extras["f"]).abs().median()
    assert abs(med - 0.1 * stats.t.ppf(0.75, 2)) < 0.01
    b = D.synthetic_gp(n, 1, likelihood="bernoulli", seed=0)
    assert set(b.y.unique().tolist()) <= {0.0, 1.0}
    assert abs(b.y.mean() - torch.sigmoid(b.extras["f"]).mean()) < 0.04
    p = D.synthetic_gp(n, 1, likelihood="poisson", seed=0)
    assert (p.y == p.y.round()).all() and abs(p.y.mean() - p.extras["f"].exp().mean()) < 0.13


def test_synthetic_classification():
    ds = D.load("synthetic-classification", n=300, num_classes=4)
    assert ds.y.dtype == torch.long and ds.y.max() < 4 and torch.equal(ds.y, ds.extras["f"].argmax(-1))


# ---------------------------------------------------------------- PDE solutions
def test_pde_solutions():
    sol = D.pde_solution("poisson1d-sin100")
    assert sol.bounds().tolist() == [[0.0], [2 * math.pi]] and sol.grid_size == 400
    x = torch.tensor([[0.3]], dtype=torch.float64, requires_grad=True)
    (du,) = torch.autograd.grad(sol.u(x).sum(), x, create_graph=True)
    (d2u,) = torch.autograd.grad(du.sum(), x)
    assert torch.allclose(d2u, -1e4 * torch.sin(100 * x.detach()))
    ds = D.load("pde-advection-sin", grid_size=11)
    assert ds.X.shape == (121, 2) and torch.allclose(ds.y, torch.sin(ds.X[:, 0] - 200 * ds.X[:, 1]))
    assert ds.X.min() == 0 and ds.X.max() == 1
    ac = D.load("pde-allencahn2d-multiscale", grid_size=5)
    z = ac.X
    ref = (torch.sin(z) + 0.1 * torch.sin(20 * z) + torch.cos(100 * z)).prod(-1)
    assert torch.allclose(ac.y, ref) and ac.extras["pde"] == "allen-cahn"
    with pytest.raises(ValueError, match="poisson1d"):
        D.pde_solution("poisson1d")


# ---------------------------------------------------------------- vector fields
@pytest.mark.parametrize("kind", ["smooth", "rotation"])
def test_vector_fields_are_tangent(kind):
    s = D.sphere_vector_field(500, kind=kind, seed=0, noise=0.1)
    assert torch.allclose(s.X.norm(dim=-1), torch.ones(500, dtype=torch.float64))
    assert (s.X * s.y).sum(-1).abs().max() < 1e-12 and (s.X * s.extras["f"]).sum(-1).abs().max() < 1e-12
    t = D.torus_vector_field(500, kind=kind, seed=0, major=1.0, minor=0.4)
    rho = t.X[:, :2].norm(dim=-1)
    assert torch.allclose((rho - 1.0) ** 2 + t.X[:, 2] ** 2, torch.full((500,), 0.16, dtype=torch.float64))
    assert (t.extras["normals"] * t.y).sum(-1).abs().max() < 1e-12
    assert t.y.norm(dim=-1).mean() > 0.05
    assert torch.equal(D.load("torus-vector-field", n=500, kind=kind).y, t.y)


def test_sklearn_sets():
    for name, shape, C in [
        ("digits", (1797, 64), 10),
        ("breast-cancer", (569, 30), 2),
        ("sklearn-wine", (178, 13), 3),
    ]:
        ds = D.load(name)
        assert ds.X.shape == shape and ds.num_classes == C
    dia = D.load("diabetes")
    assert dia.y.dtype == torch.float64 and len(dia.splits["test"]) == 45  # fold 0 of 10 over 442 rows
