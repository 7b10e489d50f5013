"""DKLGP model: exact limit, every likelihood fits, BoTorch posterior/acquisition, re-ordering, bad inputs."""

import gpytorch
import pytest
import torch
from botorch.acquisition.logei import qLogExpectedImprovement
from botorch.optim import optimize_acqf
from botorch.posteriors import GPyTorchPosterior
from gpytorch.distributions import MultivariateNormal

import gpkit
from gpkit.datasets import synthetic_gp
from gpkit.likelihoods import BernoulliLogitLikelihood, ExpLinkPoissonLikelihood as PoissonLikelihood
from gpkit.models import DKLGP


def toy(n=60, d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, d, generator=g, dtype=torch.float64)
    y = torch.sin(5 * X[:, 0]) + X[:, -1] + 0.05 * torch.randn(n, generator=g, dtype=torch.float64)
    return X, y.unsqueeze(-1)


def fixed_kernel(d=2):
    k = gpytorch.kernels.ScaleKernel(gpytorch.kernels.MaternKernel(nu=1.5, ard_num_dims=d)).double()
    k.base_kernel.lengthscale = torch.full((d,), 0.3)
    return k


def test_full_pattern_matches_exact_gp():
    X, Y = toy(40)
    model = DKLGP(
        X, Y, covar_module=fixed_kernel(), rho=1e6, max_size=None, ancestor_size=None, reorder_epoch=None,
        outcome_transform=None,
    )
    model.likelihood.noise = 0.02
    model.initialize_variational()
    s = model.variational_strategy
    Xo, yo, n = s.inputs, model.train_Y_ordered, X.shape[0]
    with torch.no_grad():
        K = model.covar_module(Xo).to_dense() + s.jitter_val * torch.eye(n, dtype=X.dtype)
        Ky = K + 0.02 * torch.eye(n, dtype=X.dtype)
        mu = model.mean_module(Xo)
        nu = mu + K @ torch.linalg.solve(Ky, yo - mu)
        # Newton + IC0 initialisation on the full pattern = the exact posterior (V V^T = K^{-1} + I / noise)
        torch.testing.assert_close(s._variational_distribution.variational_mean, nu, rtol=1e-6, atol=1e-6)
        V = s._variational_distribution.factor().to_dense()
        P = torch.linalg.inv(K) + torch.eye(n, dtype=X.dtype) / 0.02
        torch.testing.assert_close(V @ V.T, P, rtol=1e-6, atol=1e-4)
        exact = MultivariateNormal(mu, Ky).log_prob(yo)
        torch.testing.assert_close(model.elbo(), exact, rtol=1e-8, atol=1e-8)

        Xt = torch.rand(2, 3, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        post = model.posterior(Xt)
        Kxt = model.covar_module(Xo, Xt).to_dense()
        A = torch.linalg.solve(Ky, Kxt)
        mean = mu[0] + A.mT @ (yo - mu)
        cov = model.covar_module(Xt).to_dense() + s.jitter_val * torch.eye(3, dtype=X.dtype) - Kxt.mT @ A
        torch.testing.assert_close(post.mean.squeeze(-1), mean, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(post.distribution.covariance_matrix, cov, rtol=1e-6, atol=1e-7)
        noisy = model.posterior(Xt, observation_noise=True)
        torch.testing.assert_close(noisy.variance.squeeze(-1), cov.diagonal(dim1=-2, dim2=-1) + 0.02)


def test_elbo_below_exact_mll_for_sparse_pattern_and_fit_improves_it():
    X, Y = toy(80)
    model = DKLGP(X, Y, covar_module=fixed_kernel(), rho=1.5, reorder_epoch=None)
    model.likelihood.noise = 0.02
    before = model.elbo().item()
    gpkit.fit(model, epochs=15, batch_size=16, seed=0, progress=False)
    assert model.elbo().item() > before
    assert len(model.fit_history) == 15


@pytest.mark.parametrize("name", ["gaussian", "studentt", "bernoulli", "poisson"])
def test_each_likelihood_fits(name):
    # a 1-D GP draw observed through each likelihood; kernel and likelihood fixed at the truth
    outputscale = 4.0 if name == "bernoulli" else 1.0
    ds = synthetic_gp(300, 1, "matern15", likelihood=name, lengthscale=0.2, outputscale=outputscale, seed=2)
    likelihood = {
        "gaussian": gpytorch.likelihoods.GaussianLikelihood(),
        "studentt": gpytorch.likelihoods.StudentTLikelihood(),
        "bernoulli": BernoulliLogitLikelihood(),
        "poisson": PoissonLikelihood(),
    }[name].double()
    if name == "gaussian":
        likelihood.noise = 0.01
    if name == "studentt":
        likelihood.noise, likelihood.deg_free = 0.01, 2.0  # noise = scale^2
    model = DKLGP(
        ds.train_X,
        ds.train_y.unsqueeze(-1),
        likelihood=likelihood,
        covar_module=ds.extras["covar_module"],
        rho=2.0,
        outcome_transform=None,  # hyperparameters fixed at the truth, in the data's units
    )
    for p in [*model.covar_module.parameters(), *likelihood.parameters()]:
        p.requires_grad_(False)
    elbo_before = model.elbo().item()
    gpkit.fit(model, epochs=10, batch_size=60, lr=0.003, seed=0, progress=False)
    # Newton + IC0 start near the optimum; training must not lose more than 0.5%
    assert model.elbo().item() > elbo_before - 0.005 * abs(elbo_before)
    f_test = ds.extras["f"][ds.splits["test"]]
    with torch.no_grad():
        pred = model(ds.test_X)
    rmse = (pred.mean - f_test).pow(2).mean().sqrt()
    # stated accuracy: latent RMSE relative to the spread of f (Gaussian/Student-t data are nearly exact)
    threshold = {"gaussian": 0.1, "studentt": 0.1, "bernoulli": 0.35, "poisson": 0.3}[name]
    assert rmse < threshold * f_test.std(), (name, rmse.item())
    assert torch.isfinite(pred.variance).all() and (pred.variance > 0).all()


def test_posterior_shapes_and_botorch_acquisition():
    X, Y = toy(50)
    model = DKLGP(X, Y, rho=1.5)
    gpkit.fit(model, epochs=3, batch_size=25, seed=0, progress=False)
    for shape in [(4, 2), (5, 4, 2), (3, 5, 1, 2)]:
        post = model.posterior(torch.rand(*shape, dtype=torch.float64))
        assert isinstance(post, GPyTorchPosterior)
        assert post.mean.shape == (*shape[:-1], 1)
        assert post.distribution.covariance_matrix.shape == (*shape[:-1], shape[-2])
    post = model.posterior(torch.rand(4, 2, dtype=torch.float64))
    noisy = model.posterior(torch.rand(4, 2, dtype=torch.float64), observation_noise=True)
    assert (noisy.variance > post.variance.min()).all()
    # joint covariance is a proper non-diagonal covariance
    cov = model.posterior(
        torch.tensor([[0.5, 0.5], [0.51, 0.5]], dtype=torch.float64)
    ).distribution.covariance_matrix
    assert cov[0, 1] > 0.5 * cov.diagonal().min()
    acqf = qLogExpectedImprovement(model, best_f=Y.max())
    bounds = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    cand, val = optimize_acqf(acqf, bounds, q=2, num_restarts=2, raw_samples=16, options={"maxiter": 5})
    assert cand.shape == (2, 2) and torch.isfinite(val)
    assert model.num_outputs == 1


def test_reorder_uses_learned_lengthscales_and_keeps_the_mean():
    X, Y = toy(70)
    model = DKLGP(X, Y, rho=1.5, reorder_epoch=2)
    with torch.no_grad():
        model.covar_module.base_kernel.lengthscale = torch.tensor([0.05, 5.0])
    nu = model.variational_strategy._variational_distribution.variational_mean.detach().clone()
    by_point = torch.empty_like(nu)
    by_point[model.order] = nu
    old_order = model.order.clone()
    assert model.on_epoch_end(1) is False  # epochs count from 1: re-ordered after epoch 2, not 1
    assert model.on_epoch_end(2) is True
    assert not torch.equal(model.order, old_order)
    # the lengthscale in x2 is huge: x1 dominates the ordering distances
    assert torch.equal(model.variational_strategy.inputs, X[model.order])
    assert torch.equal(model.train_Y_ordered, model.train_targets[model.order])


def test_sparse_gradients_train_with_sparse_adam():
    X, Y = toy(80)
    model = DKLGP(X, Y, covar_module=fixed_kernel(), rho=1.5, reorder_epoch=None, sparse_grad=True)
    model.likelihood.noise = 0.02
    before = model.elbo().item()
    gpkit.fit(model, epochs=15, batch_size=16, seed=0, progress=False)
    q = model.variational_strategy._variational_distribution
    assert [p is q.raw_values or p is q.raw_mean for p in model.sparse_parameters()] == [True, True]
    assert model.elbo().item() > before


def test_dkl_d_variant_trains():
    X, Y = toy(60)
    model = DKLGP(X, Y, rho=1.5, diagonal=True)
    gpkit.fit(model, epochs=3, batch_size=20, seed=0, progress=False)
    assert model.variational_strategy._variational_distribution.index.shape == (60, 1)
    assert torch.isfinite(model.posterior(X[:5]).variance).all()


def test_float32():
    X, Y = toy(40)
    model = DKLGP(X.float(), Y.float(), rho=1.5)
    gpkit.fit(model, epochs=2, batch_size=20, seed=0, progress=False)
    assert model.posterior(X[:3].float()).mean.dtype == torch.float32


def test_bad_inputs():
    X, Y = toy(20)
    with pytest.raises(ValueError, match="train_Y"):
        DKLGP(X, Y[:-1])
    with pytest.raises(ValueError, match="train_X"):
        DKLGP(X[0], Y)
    with pytest.raises(ValueError, match="NaN"):
        DKLGP(X.clone().index_fill_(0, torch.tensor([3]), float("nan")), Y)
    with pytest.raises(ValueError, match="rho"):
        DKLGP(X, Y, rho=0.5)
    with pytest.raises(TypeError, match="train_X"):
        DKLGP(X.numpy(), Y)


def test_plain_gpytorch_training_loop_matches_batch_loss():
    X, Y = toy(40)
    model = DKLGP(X, Y, rho=1.5)
    model.train()
    mll = gpytorch.mlls.VariationalELBO(model.likelihood, model, num_data=40)
    batch = torch.tensor([3, 17, 29, 5])
    plain = -mll(model(X[batch]), model.train_targets[batch])  # x given: mapped to the training columns
    pos = model.variational_strategy.training_positions(X[batch])
    torch.testing.assert_close(plain, model.batch_loss(pos))
    assert torch.equal(model.variational_strategy.inputs[pos], X[batch])
    with pytest.raises(ValueError, match="training inputs"):
        model(X[batch] + 0.5)
