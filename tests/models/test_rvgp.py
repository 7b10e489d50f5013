"""RVGP: Woodbury inference == dense exact GP, the sparse variant's exact limit, tangency, field recovery, bad inputs."""

from __future__ import annotations

import math

import pytest
import torch

import gpkit
from gpkit.datasets import sphere_vector_field, torus_vector_field
from gpkit.models import RVGP


def _sphere(n=300, n_train=60, noise=0.05, seed=0):
    ds = sphere_vector_field(n, noise=noise, seed=seed)
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:n_train]
    return ds, idx


def _dense_gp(model, idx, test):
    """Exact GP with the dense kernel matrix (no structure used)."""
    kern = model.covar_module
    as_x = lambda i: i.to(torch.float64).unsqueeze(-1)
    K = kern(as_x(idx)).to_dense()
    Ks, Kss = kern(as_x(test), as_x(idx)).to_dense(), kern(as_x(test)).to_dense()
    Ky = K + model.likelihood.noise.squeeze() * torch.eye(K.shape[0])
    y = model.train_vectors.reshape(-1)
    nll = -torch.distributions.MultivariateNormal(torch.zeros_like(y), Ky).log_prob(y) / y.numel()
    return nll, Ks @ torch.linalg.solve(Ky, y), Kss - Ks @ torch.linalg.solve(Ky, Ks.T)


@pytest.mark.parametrize("spectrum", ["matern", "se"])
def test_woodbury_equals_dense_exact_gp(spectrum):
    ds, idx = _sphere()
    model = RVGP(ds.X, idx, ds.y[idx], num_eigenpairs=40, spectrum=spectrum)
    with torch.no_grad():  # away from the initial values
        model.covar_module.lengthscale = 0.7 * model.covar_module.lengthscale
        model.likelihood.noise = 0.02
    test = torch.arange(0, 300, 7)
    nll, mean, cov = _dense_gp(model, idx, test)
    assert torch.allclose(model.loss(), nll, atol=1e-10)
    post = model.posterior(test)
    assert post.mean.shape == (test.numel() * 3, 1)
    assert torch.allclose(post.mean.squeeze(-1), mean, atol=1e-10)
    assert torch.allclose(post.distribution.covariance_matrix, cov, atol=1e-10)
    noisy = model.posterior(test, observation_noise=True).distribution.covariance_matrix
    assert torch.allclose(noisy, cov + 0.02 * torch.eye(cov.shape[0]), atol=1e-10)
    # GPyTorch's own Woodbury on the kernel's LinearOperator gives the same likelihood
    K = model.covar_module(idx.double().unsqueeze(-1)).evaluate_kernel()
    mvn = gpytorch_mvn(K, model.likelihood)
    y = model.train_vectors.reshape(-1)
    assert torch.allclose(-mvn.log_prob(y) / y.numel(), nll, atol=1e-8)


def gpytorch_mvn(K, likelihood):
    import gpytorch

    return likelihood(gpytorch.distributions.MultivariateNormal(torch.zeros(K.shape[-1]), K))


def test_sparse_variant_exact_limit_and_bound():
    ds, idx = _sphere(n_train=20)
    exact = RVGP(ds.X, idx, ds.y[idx], num_eigenpairs=100)
    full = RVGP(ds.X, idx, ds.y[idx], num_eigenpairs=100, num_inducing=20, geometry=exact.geometry)
    assert full.num_eigenpairs >= 20 * 2
    test = torch.arange(300)
    assert torch.allclose(full.loss(), exact.loss(), atol=1e-6)
    p, q = exact.posterior(test), full.posterior(test)
    assert torch.allclose(q.mean, p.mean, atol=1e-6)
    assert torch.allclose(q.distribution.covariance_matrix, p.distribution.covariance_matrix, atol=1e-6)
    few = RVGP(ds.X, idx, ds.y[idx], num_eigenpairs=100, num_inducing=6, geometry=exact.geometry)
    assert few.loss() > exact.loss()  # a bound on the marginal likelihood
    assert few.posterior(test).distribution.covariance_matrix.diagonal().min() > -1e-10


def test_predictions_tangent_on_sphere():
    ds, idx = _sphere()
    model = RVGP(ds.X, idx, ds.y[idx], num_eigenpairs=60)
    pred = model.predict(torch.arange(300))
    assert pred.shape == (300, 3)
    # exactly in the estimated tangent planes, and nearly so for the true normals (local-PCA error)
    assert (model.geometry.normal_component(pred) / pred.norm(dim=-1)).max() < 1e-12
    cos_normal = (pred * ds.extras["normals"]).sum(-1).abs() / pred.norm(dim=-1)
    assert cos_normal.median() < 0.02
    samples = model.posterior(torch.arange(10)).rsample(torch.Size([3])).reshape(3, 10, 3)
    assert (model.geometry.normal_component(samples[0], torch.arange(10)) / samples[0].norm(dim=-1)).max() < 1e-8


def _alignment(pred, truth):
    return torch.nn.functional.cosine_similarity(pred, truth, dim=-1).mean().item()


@pytest.mark.accuracy
def test_torus_field_recovery_and_noise():
    """Smooth field on a torus, 200 noisy training nodes; fit learns the noise (std 0.1 per tangent direction)."""
    ds = torus_vector_field(600, kind="smooth", noise=0.1, seed=0, lengthscale=1.5)
    idx = torch.randperm(600, generator=torch.Generator().manual_seed(0))[:200]
    model = RVGP(ds.X, idx, ds.y[idx], num_eigenpairs=200)
    gpkit.fit(model)
    test = torch.ones(600, dtype=torch.bool)
    test[idx] = False
    test = test.nonzero().squeeze(-1)
    assert _alignment(model.predict(test), ds.extras["f"][test]) > 0.97
    # the observed noise is tangent, 0.1^2 per tangent direction (0.02 / 3 per ambient coordinate); the
    # model's isotropic noise lands in between, plus the basis' misfit (the initial value is 0.053)
    assert 0.005 < model.likelihood.noise.item() < 0.02


def test_automatic_number_of_eigenpairs_keeps_clusters():
    ds, idx = _sphere(n=500, n_train=60)
    model = RVGP(ds.X, idx, ds.y[idx])
    assert model.num_eigenpairs == 126  # n d = 120, moved up to the end of the l = 7 cluster
    small = RVGP(ds.X, idx, ds.y[idx], max_eigenpairs=20, geometry=model.geometry)
    assert small.num_eigenpairs == 30  # the geometry's leading eigenpairs are reused, cut at a cluster end


def test_posterior_batch_shapes_and_float32():
    ds, idx = _sphere()
    model = RVGP(ds.X.float(), idx, ds.y[idx].float(), num_eigenpairs=30)
    post = model.posterior(torch.randint(0, 300, (4, 5)))
    assert post.mean.shape == (4, 15, 1) and post.mean.dtype == torch.float32
    assert post.rsample(torch.Size([2])).shape == (2, 4, 15, 1)
    assert post.variance.min() >= -1e-5
    mean, cov = model.marginals(torch.arange(7))
    assert mean.shape == (7, 3) and cov.shape == (7, 3, 3)
    loss = model.loss()
    loss.backward()
    assert math.isfinite(loss.item()) and model.covar_module.raw_lengthscale.grad is not None


def test_bad_inputs():
    ds, idx = _sphere(n=100, n_train=10)
    X, Y = ds.X, ds.y[idx]
    bad_X = X.clone()
    bad_X[3, 0] = float("nan")
    with pytest.raises(ValueError, match="points contains NaN"):
        RVGP(bad_X, idx, Y)
    with pytest.raises(ValueError, match="train_vectors must be n_train x D"):
        RVGP(X, idx, Y[:, :2])
    with pytest.raises(ValueError, match="train_vectors must be n_train x D"):
        RVGP(X, idx, Y[:-1])
    with pytest.raises(IndexError, match="train_index"):
        RVGP(X, torch.cat([idx[:-1], torch.tensor([100])]), Y)
    with pytest.raises(ValueError, match="train_index has repeated"):
        RVGP(X, torch.cat([idx[:-1], idx[:1]]), Y)
    with pytest.raises(TypeError, match="train_index must be a LongTensor"):
        RVGP(X, idx.double(), Y)
    bad_Y = Y.clone()
    bad_Y[0, 0] = float("inf")
    with pytest.raises(ValueError, match="train_vectors contains NaN"):
        RVGP(X, idx, bad_Y)
    with pytest.raises(ValueError, match="num_eigenpairs"):
        RVGP(X, idx, Y, num_eigenpairs=0)
    model = RVGP(X, idx, Y, num_eigenpairs=10)
    with pytest.raises(IndexError, match="index"):
        model.predict(torch.tensor([0, 100]))
    with pytest.raises(TypeError, match="LongTensor"):
        model.posterior(torch.tensor([0.0]))
    with pytest.raises(TypeError, match="X must be a LongTensor"):  # BoTorch's name for the argument
        model.posterior([0, 1])
    with pytest.raises(ValueError, match="max_eigenpairs"):
        RVGP(X, idx, Y, max_eigenpairs=0)
    with pytest.raises(ValueError, match="geometry was built on different points"):
        RVGP(X.flip(0), idx, Y, geometry=model.geometry)  # same shape, other order: a silent mismatch before


def test_woodbury_nll_gradients():
    from gpkit.models._woodbury import WoodburyNLL

    g = torch.Generator().manual_seed(0)
    Phi, y = torch.randn(30, 6, generator=g), torch.randn(30, generator=g)
    r = torch.rand(6, generator=g).requires_grad_()
    noise = torch.tensor(0.3, requires_grad=True)
    fn = lambda r, noise: WoodburyNLL.apply(r, noise, Phi.T @ Phi, Phi.T @ y, float(y @ y), 30)
    assert torch.autograd.gradcheck(fn, (r, noise))
    K = Phi @ torch.diag(r.detach() ** 2) @ Phi.T + 0.3 * torch.eye(30)
    dense = -torch.distributions.MultivariateNormal(torch.zeros(30), K).log_prob(y) / 30
    assert torch.allclose(fn(r, noise), dense, atol=1e-12)
