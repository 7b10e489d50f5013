"""DKL components against their exact limits: full pattern = exact GP, column-sum KL = dense KL, unbiased."""

import math
import unittest

import gpytorch
import pytest
import torch
from gpytorch.distributions import MultivariateNormal
from gpytorch.models import ApproximateGP
from gpytorch.test.variational_test_case import VariationalTestCase

from gpkit.neighbors import MaximinStructure
from gpkit.operators import SparseTriangularLinearOperator, canonical_pattern
from gpkit.variational import (
    DKLVariationalStrategy,
    SparseCholeskyVariationalDistribution,
    sparse_inverse_cholesky,
)

NUGGET = 1e-4


def full_pattern(n):
    """Row j = [-1, ..., -1, 0, ..., j]: the dense upper-triangular pattern."""
    j = torch.arange(n)
    idx = j.unsqueeze(0) - (n - 1) + j.unsqueeze(1)  # row j: j-n+1 ... j
    return torch.where(idx >= 0, idx, torch.full_like(idx, -1))


def random_pattern(n, m, seed=0):
    """Each column: itself plus up to m-1 random earlier rows."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.full((n, m), 0, dtype=torch.long)
    mask = torch.zeros(n, m, dtype=torch.bool)
    for j in range(n):
        prev = torch.randperm(j, generator=g)[: m - 1] if j > 0 else torch.zeros(0, dtype=torch.long)
        idx[j, m - 1], mask[j, m - 1] = j, True
        idx[j, m - 1 - len(prev) : m - 1], mask[j, m - 1 - len(prev) : m - 1] = prev, True
    return canonical_pattern(idx, mask)


def closure_sets(index):
    """Exact sets needed by V^{-1} e_j: j, S_j, S_{S_j}, ... (dense computation)."""
    n = index.shape[0]
    sets = []
    for j in range(n):
        reach, stack = {j}, [j]
        while stack:
            k = stack.pop()
            for i in index[k].tolist():
                if i >= 0 and i not in reach:
                    reach.add(i)
                    stack.append(i)
        sets.append(sorted(reach))
    a = max(len(s) for s in sets)
    return torch.tensor([[-1] * (a - len(s)) + s for s in sets])


class TinyDKL(ApproximateGP):
    def __init__(self, X, index, ancestors=None, diagonal=False):
        q = SparseCholeskyVariationalDistribution(X.shape[0], diagonal=diagonal).to(X)
        structure = MaximinStructure.from_sets(X, index, ancestors)
        strategy = DKLVariationalStrategy(self, X, q, jitter_val=NUGGET, structure=structure)
        super().__init__(strategy)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(
            gpytorch.kernels.MaternKernel(nu=1.5, ard_num_dims=2)
        )
        self.covar_module.base_kernel.lengthscale = torch.tensor([0.3, 0.5])
        self.covar_module.outputscale = 1.3
        self.mean_module.constant.data.fill_(0.2)
        self.to(X)

    def forward(self, x):
        return MultivariateNormal(self.mean_module(x), self.covar_module(x))


def data(n=14, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 2, generator=g, dtype=torch.float64)
    y = torch.sin(6 * X[:, 0]) + X[:, 1] + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    return X, y


def dense_K(model, X):
    return model.covar_module(X).to_dense() + NUGGET * torch.eye(X.shape[0], dtype=X.dtype)


def randomize_q(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    q = model.variational_strategy._variational_distribution
    with torch.no_grad():
        q.raw_values.copy_(0.3 * torch.randn(q.raw_values.shape, generator=g, dtype=q.raw_values.dtype))
        q.set_mean(torch.randn(q.num_data, generator=g, dtype=q.raw_values.dtype))
    model.variational_strategy.variational_params_initialized.fill_(1)


def dense_kl(model):
    """KL(q || N(mu, (U U^T)^{-1})) with dense matrices."""
    s = model.variational_strategy
    u, _ = s.prior_factor_columns()
    P = SparseTriangularLinearOperator(s.index, u).to_dense()
    prior = MultivariateNormal(
        model.mean_module(s.inputs), torch.cholesky_inverse(torch.linalg.cholesky(P @ P.mT))
    )
    return torch.distributions.kl_divergence(s._variational_distribution(), prior)


def test_full_pattern_factor_is_exact_inverse_cholesky():
    X, _ = data()
    model = TinyDKL(X, full_pattern(X.shape[0]))
    with torch.no_grad():
        U = sparse_inverse_cholesky(
            model.covar_module, X, model.variational_strategy.index, nugget=NUGGET
        ).to_dense()
        K = dense_K(model, X)
    torch.testing.assert_close(U @ U.mT, torch.linalg.inv(K), rtol=1e-7, atol=1e-6)
    assert torch.equal(U, U.triu())


@pytest.mark.parametrize("diagonal", [False, True])
def test_column_sum_kl_equals_dense_kl(diagonal):
    X, _ = data()
    index = random_pattern(X.shape[0], 4)
    anc = closure_sets(index)
    model = TinyDKL(X, index, anc, diagonal=diagonal)
    randomize_q(model)
    with torch.no_grad():
        torch.testing.assert_close(
            model.variational_strategy.kl_divergence(), dense_kl(model), rtol=1e-9, atol=1e-9
        )
        # marginal variances of q from the ancestor-block solves
        _, var, _ = model.variational_strategy.column_terms(torch.arange(X.shape[0]))
        dense_var = model.variational_strategy._variational_distribution().variance
        torch.testing.assert_close(var, dense_var)


def test_kl_with_reduced_ancestors_differs_only_in_trace_term():
    # a too-small ancestor set (A_j = S_j) must change the answer: the test above can fail
    X, _ = data()
    index = random_pattern(X.shape[0], 4)
    model = TinyDKL(X, index, index)
    randomize_q(model)
    with torch.no_grad():
        assert not torch.allclose(model.variational_strategy.kl_divergence(), dense_kl(model))


def optimal_q(model, y, noise):
    """Exact Gaussian posterior written as q: V = reverse-Cholesky of the posterior precision."""
    s = model.variational_strategy
    K = dense_K(model, s.inputs)
    n = K.shape[0]
    P = torch.linalg.inv(K) + torch.eye(n, dtype=K.dtype) / noise
    flip = torch.arange(n - 1, -1, -1)
    V = torch.linalg.cholesky(P[flip][:, flip])[flip][:, flip]  # upper, V V^T = P
    mu = model.mean_module(s.inputs)
    nu = mu + K @ torch.linalg.solve(K + noise * torch.eye(n, dtype=K.dtype), y - mu)
    values = torch.stack([V[s.index[j].clamp_min(0), j] * (s.index[j] >= 0) for j in range(n)])
    s._variational_distribution.initialize_from_factor(values, nu)
    s.variational_params_initialized.fill_(1)


def test_full_pattern_gaussian_elbo_and_prediction_are_exact():
    X, y = data()
    n = X.shape[0]
    model = TinyDKL(X, full_pattern(n))
    lik = gpytorch.likelihoods.GaussianLikelihood().double()
    lik.noise = 0.05
    optimal_q(model, y, 0.05)
    model.train()
    with torch.no_grad():
        out = model(None, index=torch.arange(n))
        elbo = gpytorch.mlls.VariationalELBO(lik, model, num_data=n)(out, y) * n
        K = dense_K(model, X)
        mu = model.mean_module(X)
        exact = MultivariateNormal(mu, K + 0.05 * torch.eye(n, dtype=X.dtype)).log_prob(y)
        torch.testing.assert_close(elbo, exact, rtol=1e-8, atol=1e-8)

        model.eval()
        Xt = torch.rand(3, 5, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        pred = model(Xt)
        Kxt = model.covar_module(X, Xt).to_dense()
        A = torch.linalg.solve(K + 0.05 * torch.eye(n, dtype=X.dtype), Kxt)  # shape: (3, n, 5)
        mean = model.mean_module(Xt) + A.mT @ (y - mu)
        cov = model.covar_module(Xt).to_dense() + NUGGET * torch.eye(5, dtype=X.dtype) - Kxt.mT @ A
        torch.testing.assert_close(pred.mean, mean, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(pred.covariance_matrix, cov, rtol=1e-6, atol=1e-7)
        # pointwise marginals (a batch of single points) agree with the joint's diagonal
        pred_diag = model(Xt.unsqueeze(-2))
        torch.testing.assert_close(
            pred_diag.variance.squeeze(-1), cov.diagonal(dim1=-2, dim2=-1), rtol=1e-6, atol=1e-7
        )


def test_minibatch_elbo_is_unbiased():
    X, y = data()
    n = X.shape[0]
    model = TinyDKL(X, random_pattern(n, 4), closure_sets(random_pattern(n, 4)))
    randomize_q(model)
    lik = gpytorch.likelihoods.GaussianLikelihood().double()
    mll = gpytorch.mlls.VariationalELBO(lik, model, num_data=n)
    model.train()
    with torch.no_grad():
        full = mll(model(None, index=torch.arange(n)), y)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
        parts = [mll(model(None, index=b), y[b]) for b in perm.split(2)]
    torch.testing.assert_close(torch.stack(parts).mean(), full, rtol=1e-10, atol=1e-10)
    assert torch.stack(parts).std() > 1e-3  # the estimate really varies


def test_gradients_match_finite_differences():
    X, y = data(n=8)
    model = TinyDKL(X, random_pattern(8, 3))
    randomize_q(model)
    lik = gpytorch.likelihoods.GaussianLikelihood().double()
    mll = gpytorch.mlls.VariationalELBO(lik, model, num_data=8)
    params = [
        model.covar_module.base_kernel.raw_lengthscale,
        model.covar_module.raw_outputscale,
        model.variational_strategy._variational_distribution.raw_values,
        model.variational_strategy._variational_distribution.raw_mean,
        lik.noise_covar.raw_noise,
    ]
    model.train()

    batch = torch.tensor([1, 4, 7])
    model.zero_grad()
    (-mll(model(None, index=batch), y[batch])).backward()
    eps = 1e-6
    for p in params:
        g = p.grad.clone()
        flat = p.data.view(-1)
        for k in range(0, flat.numel(), max(1, flat.numel() // 5)):
            old = flat[k].item()
            with torch.no_grad():
                flat[k] = old + eps
                up = -mll(model(None, index=batch), y[batch])
                flat[k] = old - eps
                down = -mll(model(None, index=batch), y[batch])
                flat[k] = old
            assert math.isclose(
                g.view(-1)[k].item(), ((up - down) / (2 * eps)).item(), rel_tol=1e-5, abs_tol=1e-7
            )


def test_sparse_gradients_match_dense():
    X, y = data()
    n = X.shape[0]
    index = random_pattern(n, 4)
    models = [TinyDKL(X, index, closure_sets(index)) for _ in range(2)]
    models[1].variational_strategy._variational_distribution.sparse_grad = True
    lik = gpytorch.likelihoods.GaussianLikelihood().double()
    batch = torch.tensor([2, 5, 11])
    grads = []
    for model in models:
        randomize_q(model)
        model.train()
        loss = -gpytorch.mlls.VariationalELBO(lik, model, num_data=n)(model(None, index=batch), y[batch])
        loss.backward()
        q = model.variational_strategy._variational_distribution
        grads.append([q.raw_values.grad, q.raw_mean.grad, loss.detach()])
    assert grads[1][0].is_sparse and grads[1][1].is_sparse
    torch.testing.assert_close(grads[1][0].to_dense(), grads[0][0])
    torch.testing.assert_close(grads[1][1].to_dense(), grads[0][1])
    torch.testing.assert_close(grads[1][2], grads[0][2])
    torch.optim.SparseAdam([q.raw_values, q.raw_mean], lr=0.01).step()  # accepted by the sparse optimizer


def _terms_and_grads(model, batch):
    q = model.variational_strategy._variational_distribution
    q.zero_grad()
    mean, var, kl = model.variational_strategy.column_terms(batch)
    (mean.sum() + var.sum() + kl.sum()).backward()
    return [mean.detach(), var.detach(), kl.detach(), q.raw_values.grad.clone(), q.raw_mean.grad.clone()]


def test_cached_index_maps_match_direct_computation():
    # the per-pattern index maps are a speed-up only: identical results
    X, _ = data()
    index = random_pattern(X.shape[0], 4)
    model = TinyDKL(X, index, closure_sets(index))
    randomize_q(model)
    model.train()
    s = model.variational_strategy
    batch = torch.tensor([13, 2, 7, 9, 0, 5])
    s.cache_bytes = 0  # no index maps: entries located per minibatch
    direct = _terms_and_grads(model, batch)
    assert s._block_plan() is None
    s.cache_bytes, s._plan = 2**28, None
    for a, b in zip(_terms_and_grads(model, batch), direct):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert s._block_plan() is not None


def test_inverse_cholesky_last_column_value_and_gradient():
    from gpkit.variational.sparse_inverse_cholesky import inverse_cholesky_last_column

    g = torch.Generator().manual_seed(0)
    A = torch.randn(3, 5, 5, generator=g, dtype=torch.float64)
    K = A @ A.mT + 5 * torch.eye(5, dtype=torch.float64)
    u = inverse_cholesky_last_column(K)
    Kinv_e = torch.linalg.solve(K, torch.eye(5, dtype=torch.float64)[:, -1].expand(3, 5).unsqueeze(-1))
    torch.testing.assert_close(u, (Kinv_e / Kinv_e[:, -1:].sqrt()).squeeze(-1))
    sym = lambda M: inverse_cholesky_last_column(0.5 * (M + M.mT))
    assert torch.autograd.gradcheck(sym, (K.clone().requires_grad_(True),))


# ------------------------------------------------------------------------- GPyTorch's VariationalTestCase
def _strategy(model, inducing_points, variational_distribution, learn_inducing_locations=True):
    # the inducing points are the (fixed) training inputs
    return DKLVariationalStrategy(model, inducing_points, variational_distribution, rho=2.0)


class TestDKLVariationalStrategyContract(VariationalTestCase, unittest.TestCase):
    """GPyTorch's strategy/distribution contract: lazy initialisation, training through
    ``VariationalELBO`` (gradients reach every parameter), evaluation shapes. DKL has no batch shapes."""

    batch_shape = torch.Size([])
    distribution_cls = SparseCholeskyVariationalDistribution
    mll_cls = gpytorch.mlls.VariationalELBO
    strategy_cls = staticmethod(_strategy)

    def _make_model_and_likelihood(self, num_inducing=32, **kwargs):
        torch.manual_seed(0)
        kwargs.setdefault("distribution_cls", self.distribution_cls)
        kwargs.setdefault("strategy_cls", self.strategy_cls)
        return super()._make_model_and_likelihood(num_inducing=32, **kwargs)

    def _training_iter(self, model, likelihood, batch_shape=None, mll_cls=None, cuda=False):
        n = model.variational_strategy.num_data
        train_y = torch.linspace(-1, 1, n)
        mll = (mll_cls or self.mll_cls)(likelihood, model, num_data=n)
        model.train()
        likelihood.train()
        output = model(None, index=torch.arange(n))  # all columns, in the strategy's ordering
        loss = -mll(output, train_y)
        loss.sum().backward()
        for _, param in [*model.named_parameters(), *likelihood.named_parameters()]:
            self.assertTrue(param.grad is not None)
            self.assertGreater(param.grad.norm().item(), 0)
        return output, loss

    def test_eval_mode_kl_is_the_full_sum(self):
        model, likelihood = self._make_model_and_likelihood()
        self._training_iter(model, likelihood)
        randomize_q(model)  # away from q = p, where every KL term is 0
        s = model.variational_strategy
        model.train()
        model(None, index=torch.tensor([0, 1]))
        batch_kl = s.kl_divergence()
        model.eval()
        with torch.no_grad():
            full = s.column_terms(torch.arange(s.num_data))[2].sum()
            torch.testing.assert_close(s.kl_divergence(), full)
        assert not torch.allclose(batch_kl.detach(), full)

    def test_fantasy_call(self, *args, **kwargs):
        model, _ = self._make_model_and_likelihood()
        with self.assertRaisesRegex(NotImplementedError, "condition_on_observations"):
            model.variational_strategy.get_fantasy_model(torch.randn(3, 2), torch.randn(3))

    # DKL models have no batch shape
    def _no_batch(self, *args, **kwargs):
        self.skipTest("DKLVariationalStrategy has no batch shapes")

    test_eval_smaller_pred_batch = test_eval_larger_pred_batch = _no_batch
    test_training_iteration_batch_inducing = test_training_iteration_batch_data = _no_batch
    test_training_iteration_batch_model = test_training_all_batch_zero_mean = _no_batch
    test_fantasy_call_batch_inducing = test_fantasy_call_batch_data = test_fantasy_call_batch_model = (
        _no_batch
    )
