"""SWSGP model: fitting, BoTorch posterior and acquisitions, likelihoods, bad inputs."""

import gpytorch
import pytest
import torch
from botorch.acquisition.logei import qLogExpectedImprovement
from botorch.optim import optimize_acqf
from botorch.posteriors.gpytorch import GPyTorchPosterior

import gpkit
from gpkit.models import SWSGP


def _data(n=400, d=2, noise=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, d, generator=g)
    f = torch.sin(6 * X[:, 0]) * torch.cos(4 * X[:, 1])
    return X, (f + noise * torch.randn(n, generator=g)).unsqueeze(-1), f


def _fitted(epochs=30, **kwargs):
    X, Y, f = _data()
    model = SWSGP(X, Y, num_inducing=kwargs.pop("num_inducing", 100), num_neighbors=kwargs.pop("num_neighbors", 8), **kwargs)
    gpkit.fit(model, epochs=epochs, lr=0.03, batch_size=50, seed=0)
    return model, X, Y, f


@pytest.fixture(scope="module")
def fitted():
    torch.manual_seed(0)
    return _fitted()


def test_fits_a_small_problem(fitted):
    model, _X, _Y, _f = fitted
    Xt, _, ft = _data(n=200, seed=1)
    post = model.posterior(Xt)
    rmse = (post.mean.squeeze(-1) - ft).pow(2).mean().sqrt()
    assert rmse < 0.1  # f has std ~0.5; noise std 0.05
    assert model.fit_history[-1] < model.fit_history[0]
    # the predictive interval covers most noisy test targets
    noisy = model.posterior(Xt, observation_noise=True)
    z = (ft - noisy.mean.squeeze(-1)).abs() / noisy.variance.squeeze(-1).sqrt()
    assert (z < 2.5).float().mean() > 0.9


def test_posterior_shapes_and_noise(fitted):
    model = fitted[0]
    for shape in [(4, 2), (3, 4, 2), (2, 3, 1, 2)]:
        post = model.posterior(torch.rand(shape))
        assert isinstance(post, GPyTorchPosterior)
        assert post.mean.shape == (*shape[:-1], 1) and post.variance.shape == (*shape[:-1], 1)
    X = torch.rand(3, 5, 2)
    latent, noisy = model.posterior(X), model.posterior(X, observation_noise=True)
    # the noise is learned on standardised targets (the default Standardize outcome transform)
    noise = model.likelihood.noise * model.outcome_transform.stdvs.squeeze() ** 2
    assert torch.allclose(noisy.variance - latent.variance, noise.expand(3, 5, 1))
    assert model.num_outputs == 1 and model.batch_shape == torch.Size([])
    samples = latent.rsample(torch.Size([7]))
    assert samples.shape == (7, 3, 5, 1)


# the posterior changes where an input's nearest-inducing set changes, so L-BFGS-B line searches may stop early
@pytest.mark.filterwarnings("ignore:Optimization failed")
def test_qlogei_with_optimize_acqf(fitted):
    model = fitted[0]
    acqf = qLogExpectedImprovement(model, best_f=fitted[2].max())
    bounds = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    cand, value = optimize_acqf(acqf, bounds=bounds, q=2, num_restarts=2, raw_samples=32, options={"maxiter": 20})
    assert cand.shape == (2, 2) and ((cand >= 0) & (cand <= 1)).all()
    assert torch.isfinite(value)


def test_fixed_inducing_locations_and_kmeans_init():
    X, Y, _ = _data(n=200)
    model = SWSGP(X, Y, num_inducing=30, num_neighbors=5, inducing_points="kmeans", learn_inducing_locations=False)
    assert "variational_strategy.inducing_points" not in dict(model.named_parameters())
    Z0 = model.variational_strategy.inducing_points.clone()
    gpkit.fit(model, epochs=2, batch_size=50)
    assert torch.equal(model.variational_strategy.inducing_points, Z0)


def test_neighbours_refresh_when_inducing_points_move():
    X, Y, _ = _data(n=200)
    model = SWSGP(X, Y, num_inducing=30, num_neighbors=5)
    model.refresh_neighbors()
    before = model._train_neighbors.clone()
    with torch.no_grad():
        model.variational_strategy.inducing_points.copy_(torch.rand(30, 2))
    model.on_epoch_end(1)
    after = model._train_neighbors
    assert not torch.equal(before, after)
    assert torch.equal(after, model.variational_strategy.neighbors(X))


@pytest.mark.parametrize(
    "likelihood, make_y",
    [
        (gpytorch.likelihoods.BernoulliLikelihood, lambda f: (f > 0).double()),
        (lambda: gpytorch.likelihoods.StudentTLikelihood(), lambda f: f + 0.05 * torch.randn_like(f)),
    ],
)
def test_non_gaussian_likelihoods(likelihood, make_y):
    X, _, f = _data(n=300)
    model = SWSGP(X, make_y(f).unsqueeze(-1), likelihood=likelihood(), num_inducing=60, num_neighbors=8)
    gpkit.fit(model, epochs=10, lr=0.03, batch_size=50, seed=0)
    assert model.fit_history[-1] < model.fit_history[0]
    mean = model.posterior(X).mean.squeeze(-1)
    assert torch.corrcoef(torch.stack([mean, f]))[0, 1] > 0.8
    with pytest.raises(ValueError, match="observation_noise"):
        model.posterior(X[:3], observation_noise=True)


def test_float32():
    X, Y, _f = _data(n=200)
    model = SWSGP(X.float(), Y.float(), num_inducing=40, num_neighbors=6)
    gpkit.fit(model, epochs=2, batch_size=50)
    post = model.posterior(X[:5].float())
    assert post.mean.dtype == torch.float32 and torch.isfinite(post.variance).all()


def test_bad_inputs():
    X, Y, _ = _data(n=50)
    with pytest.raises(ValueError, match="num_neighbors"):
        SWSGP(X, Y, num_inducing=10, num_neighbors=11)
    with pytest.raises(ValueError, match="num_inducing"):
        SWSGP(X, Y, num_inducing=0, num_neighbors=5)
    bad = X.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="train_X"):
        SWSGP(bad, Y, num_inducing=10, num_neighbors=5)
    bad = Y.clone()
    bad[0] = float("inf")
    with pytest.raises(ValueError, match="train_Y"):
        SWSGP(X, bad, num_inducing=10, num_neighbors=5)
    with pytest.raises(ValueError, match="train_Y"):
        SWSGP(X, Y[:40], num_inducing=10, num_neighbors=5)
    with pytest.raises(ValueError, match="train_X"):
        SWSGP(X[0], Y, num_inducing=10, num_neighbors=5)
    with pytest.raises(ValueError, match="inducing_init"):
        SWSGP(X, Y, num_inducing=10, num_neighbors=5, inducing_points="grid")
    model = SWSGP(X, Y, num_inducing=10, num_neighbors=5)
    with pytest.raises(ValueError, match="NaN"):
        model.posterior(torch.full((2, 2), float("nan")))
    with pytest.raises(ValueError, match="X must"):
        model.posterior(torch.rand(2, 3))


def test_variational_mean_starts_at_nearest_targets():
    X, Y, _ = _data(n=100)
    model = SWSGP(X, Y, num_inducing=20, num_neighbors=4, inducing_points="kmeans")
    Z = model.variational_strategy.inducing_points.detach()
    nearest = torch.cdist(Z, X).argmin(-1)
    assert torch.equal(model.variational_strategy.local_distribution.variational_mean,
                       model.train_targets[nearest])
    assert torch.allclose(model.train_targets, (Y[:, 0] - Y.mean()) / Y.std())  # standardised by default
    # a non-Gaussian likelihood starts from the prior mean
    model = SWSGP(X, (Y > 0).double(), likelihood=gpytorch.likelihoods.BernoulliLikelihood(), num_inducing=20,
                  num_neighbors=4)
    assert torch.equal(model.variational_strategy.local_distribution.variational_mean, torch.zeros(20))


def test_sparse_grad_gives_the_same_loss_and_gradients():
    X, Y, _ = _data(n=120)
    models = [SWSGP(X, Y, num_inducing=40, num_neighbors=6, sparse_grad=s) for s in (False, True)]
    g = torch.Generator().manual_seed(2)
    state = models[0].state_dict()
    state["variational_strategy._variational_distribution.local_rows"] = 0.1 * torch.randn(40, 7, generator=g)
    for m in models:
        m.load_state_dict(state)
        m.train()
    assert models[0].sparse_parameters() == []
    sparse = models[1].sparse_parameters()
    assert len(sparse) == 2  # local rows and inducing locations
    batch = torch.arange(0, 120, 3)
    losses = [m.batch_loss(batch) for m in models]
    assert torch.equal(losses[0], losses[1])  # forward values identical
    for m, loss in zip(models, losses):
        loss.backward()
    touched = models[1].variational_strategy.neighbors(X[batch]).unique()
    strategy = models[0].variational_strategy
    dense = [strategy.local_distribution.local_rows, strategy.inducing_points]
    for dense_p, sparse_p in zip(dense, sparse):
        assert sparse_p.grad.is_sparse and not dense_p.grad.is_sparse
        assert torch.allclose(sparse_p.grad.to_dense(), dense_p.grad, atol=1e-12)
        rows = sparse_p.grad.coalesce().indices()[0]
        assert torch.equal(rows, touched)  # only the batch's active inducing points
    # everything else (kernel, mean, likelihood) keeps a dense gradient
    others = [p for p in models[1].parameters() if all(p is not q for q in sparse)]
    assert others and all(p.grad is not None and not p.grad.is_sparse for p in others)


def test_fit_with_sparse_grad():
    torch.manual_seed(0)
    # SparseAdam raises on a dense gradient, so a completed fit shows the gradients are sparse
    model, _X, _Y, _f = _fitted(epochs=30, sparse_grad=True)
    Xt, _, ft = _data(n=200, seed=1)
    rmse = (model.posterior(Xt).mean.squeeze(-1) - ft).pow(2).mean().sqrt()
    assert rmse < 0.1
    assert model.fit_history[-1] < model.fit_history[0]


def test_neighbours_not_recomputed_when_inducing_points_did_not_move(monkeypatch):
    X, Y, _ = _data(n=200)
    model = SWSGP(X, Y, num_inducing=30, num_neighbors=5)
    model.refresh_neighbors()
    calls = []
    search = model.variational_strategy.neighbors
    monkeypatch.setattr(model.variational_strategy, "neighbors", lambda x: calls.append(1) or search(x))
    model.on_epoch_end(1)
    assert calls == []
    with torch.no_grad():
        model.variational_strategy.inducing_points[3] += 0.01
    model.on_epoch_end(2)
    assert calls == [1]


# ------------------------------------------------------------------ BoTorch loops: repeats, fantasies, q-batches
def test_repeated_inputs_cap_num_inducing():
    X, Y, _ = _data(n=24)
    Xr, Yr = torch.cat([X, X[:6]]), torch.cat([Y, Y[:6]])  # a BO loop re-proposes evaluated points
    model = SWSGP(Xr, Yr)  # default num_inducing=1024, num_neighbors=50
    assert model.variational_strategy.num_inducing == 24 and model.variational_strategy.num_neighbors == 24
    with pytest.raises(ValueError, match="repeated"):
        SWSGP(X, Y, inducing_points=torch.cat([X[:5], X[:1]]), num_neighbors=3)


def test_initialize_is_gpytorch_module_initialize():
    X, Y, _ = _data(n=50)
    model = SWSGP(X, Y, num_inducing=10, num_neighbors=5)
    model.initialize(**{"likelihood.noise": 0.3, "covar_module.outputscale": 2.0})
    assert torch.allclose(model.likelihood.noise, torch.tensor(0.3))
    assert torch.allclose(model.covar_module.outputscale, torch.tensor(2.0))


def test_joint_posterior_is_exact_at_large_q():
    X, Y, _ = _data(n=200)
    model = SWSGP(X, Y, num_inducing=60, num_neighbors=8)
    Xq = torch.rand(300, 2)  # q * H = 2400 > max_joint_inducing of a plain call, still joint in posterior()
    cov = model.posterior(Xq).distribution.covariance_matrix
    assert cov.shape == (300, 300) and cov.tril(-1).abs().max() > 1e-6
    # the joint equals conditioning on the union of the neighbour sets, computed densely
    vs = model.variational_strategy
    union = vs.neighbors(Xq).flatten().unique()
    Z, L = vs.inducing_points.detach(), vs.local_distribution.to_dense()
    Kuu = model.covar_module(Z[union]).to_dense() + vs.jitter_val * torch.eye(union.numel())
    Kxu = model.covar_module(Xq[:5], Z[union]).to_dense()
    interp = torch.linalg.solve(Kuu, Kxu.T)
    Lu = L[union][:, union]
    ref = model.covar_module(Xq[:5]).to_dense() - Kxu @ interp + interp.T @ Lu @ Lu.T @ interp
    scale = model.outcome_transform.stdvs.squeeze() ** 2
    assert torch.allclose(cov[:5, :5], scale * ref, atol=1e-8)
    # batches of q = 1 are the per-input marginals (what gpkit.metrics uses)
    marg = model.posterior(Xq[:5].unsqueeze(-2)).variance.flatten()
    assert marg.shape == (5,) and torch.isfinite(marg).all()


@pytest.mark.filterwarnings("ignore:Optimization failed")
def test_knowledge_gradient_and_max_value_entropy_with_q_batches(fitted):
    from botorch.acquisition import qKnowledgeGradient, qMaxValueEntropy

    model = fitted[0]
    bounds = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    fantasy = model.fantasize(torch.rand(2, 2), sampler=_sampler(4))
    assert fantasy.posterior(torch.rand(3, 1, 5, 2)).mean.shape == (3, 4, 5, 1)
    kg = qKnowledgeGradient(model, num_fantasies=4)
    cand, value = optimize_acqf(kg, bounds=bounds, q=2, num_restarts=2, raw_samples=16, options={"maxiter": 5})
    assert cand.shape == (2, 2) and torch.isfinite(value)
    mes = qMaxValueEntropy(model, candidate_set=torch.rand(200, 2), num_fantasies=4)
    cand, value = optimize_acqf(mes, bounds=bounds, q=2, num_restarts=2, raw_samples=16, sequential=True,
                                options={"maxiter": 5})
    assert cand.shape == (2, 2) and torch.isfinite(value).all()


def _sampler(n):
    from botorch.sampling import SobolQMCNormalSampler

    return SobolQMCNormalSampler(torch.Size([n]), seed=0)


def test_fit_gpytorch_mll_on_the_elbo():
    from botorch.fit import fit_gpytorch_mll

    X, Y, _f = _data(n=60)
    model = SWSGP(X, Y, num_inducing=30, num_neighbors=10)
    mll = gpytorch.mlls.VariationalELBO(model.likelihood, model, num_data=60)
    before = model.likelihood.noise.item()
    fit_gpytorch_mll(mll, optimizer_kwargs={"options": {"maxiter": 30}})
    assert model.likelihood.noise.item() != before and not model.training
    assert torch.isfinite(model.posterior(X[:4]).mean).all()


# ------------------------------------------------------------------------------------------ small data (BO)
def _bo_data(n=30, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, d, generator=g, dtype=torch.float64)
    Y = torch.sin(5 * X[:, :1]) + X[:, 1:2] ** 2 + 0.01 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    return X, Y


def test_small_data_regime_uses_all_inducing_points_and_large_data_does_not():
    X, Y = _bo_data()
    model = SWSGP(X, Y)
    vs = model.variational_strategy
    assert vs.num_inducing == 30 and vs.num_neighbors == 30 and not vs.learn_inducing_locations
    assert isinstance(model.covar_module, gpytorch.kernels.RBFKernel)
    assert model.fit_defaults["optimizer"] == "lbfgs"
    explicit = SWSGP(X, Y, num_neighbors=8)  # an explicit H is kept: the nearest-neighbour method
    assert explicit.variational_strategy.num_neighbors == 8 and "optimizer" not in explicit.fit_defaults
    X, Y, _ = _data(n=400)
    big = SWSGP(X, Y, num_inducing=200)  # M > exact_size: unchanged
    vs = big.variational_strategy
    assert vs.num_neighbors == 50 and vs.learn_inducing_locations
    assert isinstance(big.covar_module, gpytorch.kernels.ScaleKernel) and "optimizer" not in big.fit_defaults


def test_collapsed_bound_is_the_elbo_at_the_optimal_q():
    X, Y = _bo_data(n=40)
    Z = torch.rand(15, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    model = SWSGP(X, Y, inducing_points=Z, num_neighbors=15)  # H = M, Z != X: Titsias's bound, not the exact one
    with torch.no_grad():
        model.covar_module.base_kernel.lengthscale = torch.tensor([[0.4, 0.6, 0.8]])
        model.likelihood.noise = 0.03
    model.set_optimal_variational_distribution()
    model.train()
    y, lik, vs = model.train_targets, model.likelihood, model.variational_strategy

    def elbo():
        return float((lik.expected_log_prob(y, model(X)).sum() - vs.kl_divergence()).detach())

    best = elbo()
    assert abs(best - float(model.collapsed_bound())) < 1e-8 * abs(best)
    q = vs.local_distribution
    start = q.local_rows.detach().clone()
    for seed in range(3):  # any other q is worse
        with torch.no_grad():
            q.local_rows.copy_(start + 1e-3 * torch.randn(start.shape, generator=torch.Generator().manual_seed(seed)))
        assert elbo() < best
    # Titsias's bound from its textbook form
    K = model.covar_module(Z).to_dense() + gpytorch.settings.variational_cholesky_jitter.value(torch.float64) * torch.eye(15)
    Kzx = model.covar_module(Z, X).to_dense()
    Qff = Kzx.T @ torch.linalg.solve(K, Kzx)
    mu = model.mean_module.constant.detach()
    lml = torch.distributions.MultivariateNormal(mu.expand(40), Qff + 0.03 * torch.eye(40)).log_prob(y)
    trace = (model.covar_module(X, diag=True) - Qff.diagonal()).sum() / 0.03
    assert torch.allclose(model.collapsed_bound(), lml - 0.5 * trace, rtol=1e-8)


@pytest.mark.accuracy
@pytest.mark.parametrize("n", [20, 60])
def test_default_fit_at_bo_sizes_matches_single_task_gp(n):
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP

    X, Y = _bo_data(n=n)
    ref = SingleTaskGP(X, Y)
    fit_gpytorch_mll(gpytorch.mlls.ExactMarginalLogLikelihood(ref.likelihood, ref))
    model = gpkit.fit(SWSGP(X, Y), progress=False)
    assert len(model.fit_history) < 200  # converged, not stopped by the cap
    # the same model as SingleTaskGP's (exact GP, its kernel and priors), fitted to the same MAP
    assert torch.allclose(model.likelihood.noise, ref.likelihood.noise, rtol=0.05)
    assert torch.allclose(model.covar_module.lengthscale, ref.covar_module.lengthscale, rtol=0.05)
    Xt = torch.rand(50, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    post, post_ref = model.posterior(Xt.unsqueeze(-2)), ref.posterior(Xt.unsqueeze(-2))
    scale = Y.std()
    assert (post.mean - post_ref.mean).abs().max() < 0.01 * scale
    assert (post.variance.sqrt() - post_ref.variance.sqrt()).abs().max() < 0.01 * scale


def test_small_data_fit_learns_given_inducing_points_through_the_collapsed_bound():
    X, Y = _bo_data(n=40)
    Z = torch.rand(8, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    model = SWSGP(X, Y, inducing_points=Z)  # M = 8 <= exact_size: H = M, Z learned (not the training inputs)
    assert model.variational_strategy.num_neighbors == 8 and model.variational_strategy.learn_inducing_locations
    gpkit.fit(model, progress=False)
    assert not torch.allclose(model.variational_strategy.inducing_points, Z)
    # q was left at its optimum for the final hyperparameters: the ELBO (no priors) is the collapsed bound
    model.train()
    elbo = model.likelihood.expected_log_prob(model.train_targets, model(X)).sum() - model.variational_strategy.kl_divergence()
    assert torch.allclose(elbo, model.collapsed_bound(), rtol=1e-8)
