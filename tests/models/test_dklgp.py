"""DKLGP model: exact limit, every likelihood fits, BoTorch posterior/acquisition, re-ordering, bad inputs."""

import copy
import functools
import math
import warnings

import gpytorch
import pytest
import torch
from botorch.acquisition.knowledge_gradient import qKnowledgeGradient
from botorch.acquisition.logei import qLogExpectedImprovement
from botorch.acquisition.max_value_entropy_search import qMaxValueEntropy
from botorch.exceptions.warnings import InputDataWarning
from botorch.optim import optimize_acqf
from botorch.posteriors import GPyTorchPosterior
from botorch.sampling import SobolQMCNormalSampler
from botorch.utils.testing import BotorchTestCase
from gpytorch.distributions import MultivariateNormal

import gpkit
from gpkit.datasets import synthetic_gp
from gpkit.likelihoods import BernoulliLogitLikelihood
from gpkit.likelihoods import ExpLinkPoissonLikelihood as PoissonLikelihood
from gpkit.models import DKLGP

# the tests above the "small n" section exercise the sparse pattern: below exact_size inputs the
# default is the full (exact) pattern with BoTorch's priors, tested in that section
SparseDKLGP = functools.partial(DKLGP, exact_size=None)


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
    model = SparseDKLGP(
        X,
        Y,
        covar_module=fixed_kernel(),
        rho=1e6,
        max_size=None,
        ancestor_size=None,
        reorder_epoch=None,
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
    model = SparseDKLGP(X, Y, covar_module=fixed_kernel(), rho=1.5, reorder_epoch=None, refresh_epochs=None)
    model.likelihood.noise = 0.02
    before = model.elbo().item()
    gpkit.fit(model, epochs=6, batch_size=16, seed=0, progress=False)  # Adam on the ELBO alone
    assert model.elbo().item() > before
    assert len(model.fit_history) == 6


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
        # noise = scale^2; GPyTorch constrains deg_free > 2 (exactly 2 would make the raw value -inf)
        likelihood.noise, likelihood.deg_free = 0.01, 2.01
    model = SparseDKLGP(
        ds.train_X,
        ds.train_y.unsqueeze(-1),
        likelihood=likelihood,
        covar_module=ds.extras["covar_module"],
        rho=2.0,
        outcome_transform=None,  # hyperparameters fixed at the truth, in the data's units
        refresh_epochs=None,  # the hyperparameters are fixed: Adam on the ELBO alone
    )
    for p in [*model.covar_module.parameters(), *likelihood.parameters()]:
        p.requires_grad_(False)
    elbo_before = model.elbo().item()
    gpkit.fit(model, epochs=5, batch_size=60, lr=0.003, seed=0, progress=False)
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
    model = SparseDKLGP(X, Y, rho=1.5)
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
    model = SparseDKLGP(X, Y, rho=1.5, reorder_epoch=2)
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
    model = SparseDKLGP(
        X, Y, covar_module=fixed_kernel(), rho=1.5, reorder_epoch=None, refresh_epochs=None, sparse_grad=True
    )
    model.likelihood.noise = 0.02
    before = model.elbo().item()
    gpkit.fit(model, epochs=6, batch_size=16, seed=0, progress=False)
    q = model.variational_strategy._variational_distribution
    assert [p is q.raw_values or p is q.raw_mean for p in model.sparse_parameters()] == [True, True]
    assert model.elbo().item() > before


def test_dkl_d_variant_trains():
    X, Y = toy(60)
    model = SparseDKLGP(X, Y, rho=1.5, diagonal=True)
    gpkit.fit(model, epochs=3, batch_size=20, seed=0, progress=False)
    assert model.variational_strategy._variational_distribution.index.shape == (60, 1)
    assert torch.isfinite(model.posterior(X[:5]).variance).all()


def test_float32():
    X, Y = toy(40)
    model = SparseDKLGP(X.float(), Y.float(), rho=1.5)
    gpkit.fit(model, epochs=2, batch_size=20, seed=0, progress=False)
    assert model.posterior(X[:3].float()).mean.dtype == torch.float32


def test_bad_inputs():
    X, Y = toy(20)
    with pytest.raises(ValueError, match="train_Y"):
        SparseDKLGP(X, Y[:-1])
    with pytest.raises(ValueError, match="train_X"):
        SparseDKLGP(X[0], Y)
    with pytest.raises(ValueError, match="NaN"):
        SparseDKLGP(X.clone().index_fill_(0, torch.tensor([3]), float("nan")), Y)
    with pytest.raises(ValueError, match="rho"):
        SparseDKLGP(X, Y, rho=0.5)
    with pytest.raises(TypeError, match="train_X"):
        SparseDKLGP(X.numpy(), Y)


def test_plain_gpytorch_training_loop_matches_batch_loss():
    X, Y = toy(40)
    # no noise prior: GPyTorch's VariationalELBO counts a submodule likelihood's priors twice, batch_loss once
    model = SparseDKLGP(X, Y, likelihood=gpytorch.likelihoods.GaussianLikelihood(), rho=1.5)
    model.train()
    mll = gpytorch.mlls.VariationalELBO(model.likelihood, model, num_data=40)
    batch = torch.tensor([3, 17, 29, 5])
    plain = -mll(model(X[batch]), model.train_targets[batch])  # x given: mapped to the training columns
    pos = model.variational_strategy.training_positions(X[batch])
    torch.testing.assert_close(plain, model.batch_loss(pos))
    assert torch.equal(model.variational_strategy.inputs[pos], X[batch])
    with pytest.raises(ValueError, match="training inputs"):
        model(X[batch] + 0.5)


# ------------------------------------------------------------------------------------------- BoTorch use
class TestDKLGPBoTorch(BotorchTestCase):
    def _model(self, n=40, **kwargs):
        X, Y = toy(n)
        return X, Y, SparseDKLGP(X, Y, **kwargs)

    def test_repeated_inputs_merged_with_one_warning(self):
        X, Y = toy(30)
        Xr, Yr = torch.cat([X, X[:4], X[:1]]), torch.cat([Y, Y[:4] + 0.1, Y[:1] - 0.1])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = SparseDKLGP(Xr, Yr, outcome_transform=None)
        self.assertEqual(sum(issubclass(w.category, InputDataWarning) for w in caught), 1)
        self.assertEqual(model.num_data, 30)  # one latent value per distinct input
        self.assertEqual(model.num_observations, 35)
        # each latent keeps all its observations: the expected log-likelihood sums over them
        s = model.variational_strategy
        col = int((s.order == 0).nonzero())
        mean, var, _ = s.column_terms(torch.tensor([col]))
        lik = model.likelihood
        dist = MultivariateNormal(mean, torch.diag_embed(var))
        direct = sum(lik.expected_log_prob(y.reshape(1), dist) for y in (Y[0], Y[0] + 0.1, Y[0] - 0.1))
        self.assertAllClose(model._expected_log_lik(torch.tensor([col]), mean, var), direct)
        gpkit.fit(model, epochs=2, progress=False)
        self.assertTrue(torch.isfinite(model.posterior(Xr[-3:]).variance).all())

    def test_exact_conditioning_and_fantasies(self):
        # full pattern: the conditioned model is the exact GP posterior given old + new data
        X, Y = toy(25)
        model = SparseDKLGP(
            X,
            Y,
            covar_module=fixed_kernel(),
            rho=1e6,
            max_size=None,
            ancestor_size=None,
            reorder_epoch=None,
            outcome_transform=None,
        )
        model.likelihood.noise = 0.02
        model.initialize_variational()
        Xn = torch.rand(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
        Yn = torch.randn(3, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
        cond = model.condition_on_observations(Xn, Yn)
        Xt = torch.rand(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
        Xa, Ya = torch.cat([X, Xn]), torch.cat([Y, Yn]).squeeze(-1)
        with torch.no_grad():
            K = model.covar_module(Xa).to_dense() + model.variational_strategy.jitter_val * torch.eye(
                28, dtype=X.dtype
            )
            Ky = K + 0.02 * torch.eye(28, dtype=X.dtype)
            Kxt = model.covar_module(Xa, Xt).to_dense()
            mu = model.mean_module.constant
            mean = mu + Kxt.mT @ torch.linalg.solve(Ky, Ya - mu)
            post = cond.posterior(Xt)
        self.assertAllClose(post.mean.squeeze(-1), mean, rtol=1e-6, atol=1e-6)
        # fantasies: batch shapes as BoTorch expects
        fm = model.fantasize(Xn, sampler=SobolQMCNormalSampler(torch.Size([5])))
        self.assertEqual(fm.posterior(Xt.expand(5, 4, 2)).mean.shape, torch.Size([5, 4, 1]))

    def test_knowledge_gradient_and_max_value_entropy_q2(self):
        _X, _Y, model = self._model(30)
        gpkit.fit(model, epochs=3, progress=False)
        bounds = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
        kg = qKnowledgeGradient(model, num_fantasies=4)
        cand, _ = optimize_acqf(kg, bounds, q=2, num_restarts=2, raw_samples=8, options={"maxiter": 3})
        self.assertEqual(cand.shape, torch.Size([2, 2]))
        mes = qMaxValueEntropy(model, candidate_set=torch.rand(100, 2, dtype=torch.float64), num_fantasies=4)
        cand, _ = optimize_acqf(
            mes, bounds, q=2, num_restarts=2, raw_samples=8, sequential=True, options={"maxiter": 3}
        )
        self.assertEqual(cand.shape, torch.Size([2, 2]))

    def test_log_ei_optimisation_without_warnings(self):
        _X, Y, model = self._model(60)
        gpkit.fit(model, epochs=3, progress=False)
        bounds = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _cand, val = optimize_acqf(
                qLogExpectedImprovement(model, best_f=Y.max()), bounds, q=2, num_restarts=3, raw_samples=32
            )
        self.assertEqual([str(w.message) for w in caught if "ptimization" in str(w.message)], [])
        self.assertTrue(torch.isfinite(val))

    def test_posterior_mean_continuous_along_a_line(self):
        _X, _Y, model = self._model(150)
        t = torch.linspace(0, 1, 2001, dtype=torch.float64)
        line = lambda t: torch.stack([t, 0.2 + 0.5 * t], -1).unsqueeze(-2)
        with torch.no_grad():
            mean = model.posterior(line(t)).mean.squeeze()
            steps = mean.diff().abs()
            for i in steps.topk(3).indices.tolist():
                fine = model.posterior(line(torch.linspace(t[i], t[i + 1], 201, dtype=torch.float64))).mean
                # a jump stays a jump on a finer grid; a continuous mean splits the step into small pieces
                self.assertLess(fine.squeeze().diff().abs().max().item(), 0.05 * steps[i].item())

    def test_joint_posterior_at_large_q(self):
        _X, _Y, model = self._model(80)
        Xt = torch.rand(100, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            cov = model.posterior(Xt).distribution.covariance_matrix
            marg = model.posterior(Xt.unsqueeze(-2)).variance.squeeze()
        off = cov - torch.diag_embed(cov.diagonal())
        self.assertGreater(off.abs().max().item(), 0.1 * cov.diagonal().min().item())  # not independent
        self.assertTrue((torch.linalg.eigvalsh(cov) > -1e-8).all())
        ratio = (
            cov.diagonal() / marg
        )  # the joint conditions on more points: close to, not equal to, the marginals
        self.assertTrue(((ratio > 1 / 3) & (ratio < 3)).all())
        model.variational_strategy.max_joint = 5
        with self.assertRaisesRegex(ValueError, "max_joint"):
            model.posterior(Xt)

    def test_state_dict_round_trip_after_reordering_and_deepcopy(self):
        X, Y, model = self._model(50)
        with torch.no_grad():
            model.covar_module.base_kernel.lengthscale = torch.tensor([0.05, 2.0])
        model.reorder()
        gpkit.fit(model, epochs=2, progress=False)
        Xt = torch.rand(6, 2, dtype=torch.float64)
        with torch.no_grad():
            expected = model.posterior(Xt).mean
            fresh = SparseDKLGP(X, Y)
            fresh.load_state_dict(model.state_dict())
            self.assertAllClose(fresh.posterior(Xt).mean, expected, rtol=1e-10, atol=1e-10)
            self.assertAllClose(copy.deepcopy(model).posterior(Xt).mean, expected, rtol=1e-10, atol=1e-10)

    def test_requires_grad_inputs_and_eval_mode_kl(self):
        X, Y = toy(30)
        model = SparseDKLGP(X.clone().requires_grad_(True), Y.clone().requires_grad_(True))
        Xt = torch.rand(3, 2, dtype=torch.float64, requires_grad=True)
        model.posterior(Xt).mean.sum().backward()
        self.assertTrue(torch.isfinite(Xt.grad).all())
        # in eval mode the KL is the full column sum, not the last minibatch's estimate
        s = model.variational_strategy
        model.train()
        model.batch_loss(torch.tensor([0, 1]))
        model.eval()
        with torch.no_grad():
            full = s.column_terms(torch.arange(30))[2].sum()
            self.assertAllClose(s.kl_divergence(), full)

    def test_bad_options_rejected(self):
        X, Y = toy(20)
        for kwargs, match in [
            ({"max_size": 1}, "max_size"),
            ({"ancestor_size": 0}, "ancestor_size"),
            ({"reorder_epoch": -1}, "reorder_epoch"),
            ({"reorder_epoch": 0}, "reorder_epoch"),
            ({"rho": 0.5}, "rho"),
            ({"init": "zero"}, "init"),
        ]:
            with self.assertRaisesRegex(ValueError, match):
                SparseDKLGP(X, Y, **kwargs)
        with self.assertRaisesRegex(TypeError, "likelihood"):
            SparseDKLGP(X, Y, likelihood="gaussian")
        with self.assertRaisesRegex(TypeError, "covar_module"):
            SparseDKLGP(X, Y, covar_module="matern")


@pytest.mark.accuracy
def test_default_fit_learns_hyperparameters():
    # a rough GP draw (lengthscale 0.15, far from the default initial 0.69): default DKLGP + gpkit.fit must
    # learn it; without training (a no-op fit) the error is ~0.64 of the spread of f
    ds = synthetic_gp(400, 2, "matern15", lengthscale=0.15, seed=1)
    f = ds.extras["f"][ds.splits["test"]]
    model = SparseDKLGP(ds.train_X, ds.train_y.unsqueeze(-1))
    gpkit.fit(model, epochs=20, progress=False, seed=0)
    with torch.no_grad():
        mean = model.pointwise()(ds.test_X).mean
    assert (mean - f).pow(2).mean().sqrt() < 0.42 * f.std()  # 0.36 seen
    assert (model.covar_module.base_kernel.lengthscale < 0.5).all()  # from 0.69 towards the truth 0.15


# ----------------------------------------------------------------------------------- small n (BO regime)
def _branin(n=30, seed=0):
    from botorch.test_functions import Branin
    from botorch.utils.sampling import draw_sobol_samples

    f = Branin(negate=True).to(torch.float64)
    unit = torch.stack([torch.zeros(2), torch.ones(2)]).double()
    X = draw_sobol_samples(unit, n, 1, seed=seed).squeeze(1)
    return X, f(X * (f.bounds[1] - f.bounds[0]) + f.bounds[0]).unsqueeze(-1)


def _single_task_gp(X, Y):
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP

    reference = SingleTaskGP(X, Y)
    fit_gpytorch_mll(gpytorch.mlls.ExactMarginalLogLikelihood(reference.likelihood, reference))
    return reference.eval()


class TestDKLGPSmallN(BotorchTestCase):
    def test_default_pattern_is_exact_at_small_n(self):
        X, Y = _branin(30)
        model = DKLGP(X, Y)
        self.assertTrue(model.variational_strategy.structure.full)
        self.assertEqual(model.variational_strategy.index.shape, torch.Size([30, 30]))
        self.assertFalse(DKLGP(X, Y, exact_size=20).variational_strategy.structure.full)
        with self.assertRaisesRegex(ValueError, "exact_size"):
            DKLGP(X, Y, exact_size=-1)

    def test_posterior_matches_single_task_gp_with_its_hyperparameters(self):
        from botorch.models import SingleTaskGP

        X, Y = _branin(30)
        reference = SingleTaskGP(X, Y).eval()
        reference.likelihood.noise = 0.01
        reference.covar_module.lengthscale = torch.tensor([0.3, 0.6])
        reference.mean_module.constant.data.fill_(0.2)
        model = DKLGP(X, Y, nugget=1e-8)  # default: Standardize, as SingleTaskGP; full pattern
        model.likelihood.noise = 0.01
        model.covar_module.lengthscale = torch.tensor([0.3, 0.6])
        model.mean_module.constant.data.fill_(0.2)
        model.initialize_variational()  # q at the hyperparameters: the exact posterior
        model.eval()
        Xt = torch.rand(5, 2, dtype=torch.float64)
        for q in (1, 5):  # marginals and a joint
            a, b = model.posterior(Xt.reshape(-1, q, 2)), reference.posterior(Xt.reshape(-1, q, 2))
            self.assertAllClose(a.mean, b.mean, rtol=1e-4, atol=1e-4 * Y.std())
            self.assertAllClose(
                a.mvn.covariance_matrix, b.mvn.covariance_matrix, rtol=1e-3, atol=1e-6 * Y.var()
            )

    @pytest.mark.accuracy
    def test_fitted_noise_lengthscales_and_mean_close_to_single_task_gp(self):
        X, Y = _branin(30)
        model = DKLGP(X, Y)
        gpkit.fit(model, progress=False)
        reference = _single_task_gp(X, Y)
        noise, ref_noise = model.likelihood.noise.item(), reference.likelihood.noise.item()
        self.assertLess(abs(math.log(noise / ref_noise)), math.log(1.5))  # 0.00265 vs 0.00262 seen
        self.assertAllClose(model.covar_module.lengthscale, reference.covar_module.lengthscale, rtol=0.1)
        Xt = torch.rand(200, 1, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            diff = (model.posterior(Xt).mean - reference.posterior(Xt).mean).abs().max()
        self.assertLess(diff.item(), 0.05 * Y.std().item())  # 0.4 / 50 seen; untrained: ~0.5 std

    @pytest.mark.accuracy
    def test_noiseless_objective_predictive_std_matches_single_task_gp(self):
        # Branin is noiseless: at n = 60 both learned noises sit near the 1e-4 floor, where a 1e-4 kernel nugget
        # would double DKLGP's effective noise and inflate its predictive std (ratios 0.6-0.9 were seen)
        X, Y = _branin(60)
        model = DKLGP(X, Y)
        gpkit.fit(model, progress=False)
        reference = _single_task_gp(X, Y)
        Xt = torch.rand(200, 1, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            ratio = (reference.posterior(Xt).variance / model.posterior(Xt).variance).sqrt()
        self.assertGreater(ratio.min().item(), 0.85)
        self.assertLess(ratio.max().item(), 1.15)
