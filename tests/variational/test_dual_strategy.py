"""DualVariationalStrategy, site updates, moving duals, memory selection: against their exact limits."""

import math

import gpytorch
import pytest
import torch

from gpkit.variational import (
    DualVariationalDistribution,
    DualVariationalStrategy,
    bayesian_leverage_scores,
    damped_site_step,
    select_inducing_points,
    select_memory,
    site_parameters,
    softmax_site_parameters,
)

JITTER = 1e-10


class DualModel(gpytorch.models.ApproximateGP):
    def __init__(self, Z, batch_shape=None, learn=True):
        batch_shape = torch.Size([]) if batch_shape is None else batch_shape
        q = DualVariationalDistribution(Z.size(-2), batch_shape, dtype=Z.dtype)
        super().__init__(DualVariationalStrategy(self, Z, q, learn_inducing_locations=learn, jitter_val=JITTER))
        self.mean_module = gpytorch.means.ConstantMean(batch_shape=batch_shape)
        self.covar_module = gpytorch.kernels.ScaleKernel(
            gpytorch.kernels.RBFKernel(batch_shape=batch_shape), batch_shape=batch_shape
        )
        self.double()

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def _data(n=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 2, generator=g, dtype=torch.float64)
    y = torch.sin(5 * X[:, 0]) + torch.cos(3 * X[:, 1]) + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    return X, y


def _setup(Z, noise=0.05):
    model = DualModel(Z)
    model.mean_module.constant.data.fill_(0.3)
    model.covar_module.base_kernel.lengthscale = 0.4
    lik = gpytorch.likelihoods.GaussianLikelihood().double()
    lik.noise = noise
    return model, lik


def _e_step(model, lik, X, y, rho=1.0):
    strategy = model.variational_strategy
    mean, var, prior_mean = strategy.marginals(X)
    new = strategy.project_sites(X, *site_parameters(lik, mean, var, prior_mean, y))
    strategy.set_duals(*damped_site_step(strategy.duals, new, rho))


def _titsias(model, lik, X, y, Z, Xs):
    """SGPR (Titsias 2009) predictions and collapsed bound, dense."""
    k = model.covar_module
    mu = model.mean_module.constant.detach()
    s2 = lik.noise.detach()
    Kzz = k(Z).to_dense() + JITTER * torch.eye(Z.size(0), dtype=Z.dtype)
    Kzx, Ksz = k(Z, X).to_dense(), k(Xs, Z).to_dense()
    sigma = torch.linalg.inv(Kzz + Kzx @ Kzx.mT / s2)
    mean = mu + Ksz @ sigma @ Kzx @ (y - mu) / s2
    cov = k(Xs).to_dense() - Ksz @ torch.linalg.solve(Kzz, Ksz.mT) + Ksz @ sigma @ Ksz.mT
    Q = Kzx.mT @ torch.linalg.solve(Kzz, Kzx)
    n = X.size(0)
    mvn = torch.distributions.MultivariateNormal(mu.expand(n), Q + s2 * torch.eye(n, dtype=X.dtype))
    bound = mvn.log_prob(y) - (k(X).diagonal() - Q.diagonal()).sum() / (2 * s2)
    return mean, cov, bound


def _elbo(model, lik, X, y):
    model.train()
    out = model(X)
    return lik.expected_log_prob(y, out).sum() - model.variational_strategy.kl_divergence()


def test_gaussian_z_equals_x_is_the_exact_gp():
    X, y = _data()
    model, lik = _setup(X.clone())
    _e_step(model, lik, X, y)
    exact = gpytorch.models.ExactGP(X, y, lik)
    exact.mean_module, exact.covar_module = model.mean_module, model.covar_module
    exact.forward = model.forward
    exact.eval()
    model.eval()
    Xs = torch.rand(9, 2, dtype=torch.float64)
    with gpytorch.settings.fast_computations(False, False, False):
        pe = exact(Xs)
    pd = model(Xs)
    assert torch.allclose(pd.mean, pe.mean, atol=1e-6)
    assert torch.allclose(pd.covariance_matrix, pe.covariance_matrix, atol=1e-6)
    exact.train()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(lik, exact)(exact(X), y) * X.size(0)
    assert torch.allclose(_elbo(model, lik, X, y), mll, atol=1e-5)


def test_z_subset_of_x_is_sgpr_and_sites_in_two_chunks_equal_one():
    X, y = _data(40)
    Z = X[::4].clone()
    Xs = torch.rand(6, 2, dtype=torch.float64)
    model, lik = _setup(Z)
    _e_step(model, lik, X[:25], y[:25])
    strategy = model.variational_strategy
    strategy.set_duals(*[a + b for a, b in zip(strategy.duals, strategy.project_sites(X[25:], *site_parameters(
        lik, *strategy.marginals(X[25:]), y[25:])))])
    mean, cov, bound = _titsias(model, lik, X, y, Z, Xs)
    model.eval()
    out = model(Xs)
    assert torch.allclose(out.mean, mean, atol=1e-6)
    assert torch.allclose(out.covariance_matrix, cov, atol=1e-6)
    assert torch.allclose(_elbo(model, lik, X, y), bound, atol=1e-5)
    # q(u) and KL agree with the closed forms of the variational distribution
    qu = strategy.variational_distribution
    kl = torch.distributions.kl_divergence(qu, strategy.prior_distribution)
    assert torch.allclose(strategy.kl_divergence(), kl, atol=1e-6)


def _matched_svgp(model, lik):
    """An unwhitened Cholesky SVGP holding the dual model's q(u) (same prior modules)."""
    strategy = model.variational_strategy
    qu = strategy.variational_distribution
    Z = strategy.inducing_points.detach().clone()
    dist = gpytorch.variational.CholeskyVariationalDistribution(Z.size(0)).double()
    svgp = gpytorch.models.ApproximateGP(
        gpytorch.variational.UnwhitenedVariationalStrategy(None, Z, dist, True, jitter_val=JITTER)
    )
    object.__setattr__(svgp.variational_strategy, "model", svgp)
    svgp.mean_module, svgp.covar_module, svgp.forward = model.mean_module, model.covar_module, model.forward
    svgp.variational_strategy.variational_params_initialized.fill_(1)
    with torch.no_grad():
        dist.variational_mean.copy_(qu.mean)
        dist.chol_variational_covar.copy_(torch.linalg.cholesky(qu.covariance_matrix))
    return svgp


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_hyperparameter_gradients_match_svgp_at_the_e_step_optimum(likelihood):
    X, y = _data(30)
    Z = X[::3].clone()
    model, lik = _setup(Z)
    steps, rho = 1, 1.0
    if likelihood == "bernoulli":
        lik, y, steps, rho = gpytorch.likelihoods.BernoulliLikelihood(), (y > 0.8).double(), 60, 0.5
    for _ in range(steps):
        _e_step(model, lik, X, y, rho)
    svgp = _matched_svgp(model, lik)
    svgp.train()
    elbo_svgp = lik.expected_log_prob(y, svgp(X)).sum() - svgp.variational_strategy.kl_divergence()
    grads_q = torch.autograd.grad(elbo_svgp, list(svgp.variational_strategy._variational_distribution.parameters()),
                                  retain_graph=True)
    # the dual fixed point is the SVGP optimum: no gradient left in (m, S)
    assert max(g.abs().max() for g in grads_q) < 1e-5
    hyper = list(model.mean_module.parameters()) + list(model.covar_module.parameters())
    g_svgp = torch.autograd.grad(elbo_svgp, hyper + [svgp.variational_strategy.inducing_points])
    g_dual = torch.autograd.grad(_elbo(model, lik, X, y), hyper + [model.variational_strategy.inducing_points])
    for a, b in zip(g_dual, g_svgp):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_wrong_sign_breaks_the_gaussian_limit(monkeypatch):
    """The limit tests can fail: a flipped site sign moves the posterior mean."""
    X, y = _data()
    model, lik = _setup(X.clone())
    mean, var, prior_mean = model.variational_strategy.marginals(X)
    s1, beta = site_parameters(lik, mean, var, prior_mean, y)
    model.variational_strategy.set_duals(*model.variational_strategy.project_sites(X, -s1, beta))
    _, _, bound = _titsias(model, lik, X, y, X, X[:3])
    assert not torch.allclose(_elbo(model, lik, X, y), bound, atol=1e-2)


def test_moving_duals_is_exact_for_sites_in_the_span():
    X, y = _data(30)
    model, lik = _setup(X[:20].clone())
    strategy = model.variational_strategy
    sites = site_parameters(lik, *strategy.marginals(X[:20]), y[:20])
    strategy.set_duals(*strategy.project_sites(X[:20], *sites))
    new_Z = torch.cat([X[:10], X[20:]])
    model.eval()
    before = model(X[20:]).mean
    strategy.move_inducing_points(new_Z)
    direct = DualModel(new_Z)
    direct.load_state_dict({k: v for k, v in model.state_dict().items() if "variational" not in k}, strict=False)
    direct.variational_strategy.set_duals(*direct.variational_strategy.project_sites(X[:20], *sites))
    # sites at X[:20] lie in the span of the old Z = X[:20], so the moved duals equal the direct projection
    # restricted to what the new inducing points can represent
    lam1, Lam2 = strategy.duals
    d1, D2 = direct.variational_strategy.duals
    assert torch.allclose(lam1, d1, atol=1e-6) and torch.allclose(Lam2, D2, atol=1e-6)
    assert before.shape == (10,)


def test_select_inducing_points_greedy_variance():
    X, _ = _data(50)
    kernel = gpytorch.kernels.RBFKernel().double()
    Z = select_inducing_points(kernel, torch.cat([X, X[:10]]), 20)
    assert Z.shape == (20, 2) and torch.unique(Z, dim=0).size(0) == 20
    # repeated candidates: the count is kept
    Z = select_inducing_points(kernel, X[:3].repeat(4, 1), 5)
    assert Z.shape == (5, 2)


def test_memory_selection():
    g = torch.Generator().manual_seed(0)
    scores = torch.tensor([0.0, 1.0, 2.0, 4.0, 8.0], dtype=torch.float64)
    idx = select_memory(scores, 3, g)
    assert idx.numel() == 3 and idx.unique().numel() == 3  # without replacement
    assert select_memory(scores, 10, g).sort().values.tolist() == [0, 1, 2, 3, 4]  # capped at n
    assert select_memory(scores, 0, g).numel() == 0
    counts = torch.zeros(5)
    for _ in range(2000):
        counts[select_memory(scores, 1, g)] += 1
    assert counts[0] == 0
    assert torch.allclose(counts[1:] / 2000, scores[1:] / scores.sum(), atol=0.04)  # proportional to scores
    assert torch.allclose(bayesian_leverage_scores(torch.tensor([0.5]), torch.tensor([4.0])), torch.tensor([2.0]))
    with pytest.raises(ValueError, match="num"):
        select_memory(scores, -1)


def test_softmax_sites_classify_three_classes():
    g = torch.Generator().manual_seed(0)
    X = torch.rand(60, 1, generator=g, dtype=torch.float64)
    labels = (X[:, 0] * 3).floor().long().clamp(max=2)
    model = DualModel(X[::3].clone(), batch_shape=torch.Size([3]))
    model.covar_module.base_kernel.lengthscale = 0.2
    model.covar_module.outputscale = 4.0
    strategy = model.variational_strategy
    for _ in range(20):
        mean, var, prior_mean = strategy.marginals(X)  # shape: (3, n)
        s1, beta = softmax_site_parameters(mean, var, prior_mean, labels, 256, g)
        assert (beta > 0).all()
        strategy.set_duals(*damped_site_step(strategy.duals, strategy.project_sites(X, s1, beta), 0.5))
    model.eval()
    pred = model(X).mean.argmax(0)  # shape: (n,)
    assert (pred == labels).double().mean() > 0.9


def test_damping_checks_rho():
    with pytest.raises(ValueError, match="rho"):
        damped_site_step((torch.zeros(1), torch.zeros(1)), (torch.zeros(1), torch.zeros(1)), 1.5)
    assert math.isclose(float(damped_site_step((torch.zeros(1),) * 2, (torch.ones(1),) * 2, 0.25)[0]), 0.25)
