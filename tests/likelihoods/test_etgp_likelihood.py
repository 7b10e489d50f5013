"""ETGPLikelihood: GPyTorch likelihood contract, quadrature against Monte Carlo, exact limits, MC dropout."""

import math
import unittest

import pytest
import torch
from gpytorch.distributions import MultivariateNormal
from gpytorch.test.base_likelihood_test_case import BaseLikelihoodTestCase

from gpkit.flows import AffineFlow, InputDependentFlow, sinh_arcsinh_affine
from gpkit.likelihoods import BernoulliLogitLikelihood, ETGPLikelihood

C = 4


def _random_flow(num_classes=C, seed=0):
    flow = sinh_arcsinh_affine(num_classes)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g))
    return flow


def _input_dependent(d=3, dropout=0.0, seed=0):
    torch.manual_seed(seed)
    flow = InputDependentFlow(_random_flow(), d, hidden=(8,), dropout=dropout)
    with torch.no_grad():
        flow.network[-1].weight.normal_(0, 0.5)
    return flow


def _marginal(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(n, generator=g)
    return MultivariateNormal(mean, torch.diag_embed(0.2 + torch.rand(n, generator=g)))


class TestETGPLikelihood(BaseLikelihoodTestCase, unittest.TestCase):
    seed = 0

    def create_likelihood(self):
        return ETGPLikelihood(_random_flow())

    def _create_targets(self, batch_shape=torch.Size()):  # noqa: B008 (the base class signature)
        return torch.randint(0, C, (*batch_shape, 5))

    def _test_marginal(self, batch_shape):
        likelihood = self.create_likelihood()
        likelihood.max_plate_nesting += len(batch_shape)
        input = self._create_marginal_input(batch_shape)
        output = likelihood(input)
        self.assertEqual(output.probs.shape, (*batch_shape, 5, C))
        f = input.mean + input.variance.sqrt() * torch.randn(40000, *input.mean.shape)
        mc = torch.softmax(likelihood.logits(f), -1).mean(0)
        self.assertAllClose(output.probs, mc, atol=0.02, rtol=0)


@pytest.mark.parametrize("num_quadrature", [None, 30])  # None: the default Q (10)
def test_quadrature_matches_monte_carlo_with_input_dependent_flows(num_quadrature):
    kwargs = {} if num_quadrature is None else {"num_quadrature": num_quadrature}
    likelihood = ETGPLikelihood(_input_dependent(), **kwargs)
    assert likelihood._fused_sal  # expected_log_prob runs the fused kernel; the MC reference below does not
    q, x = _marginal(), torch.randn(6, 3)
    y = torch.tensor([0, 1, 2, 3, 1, 2])
    elp = likelihood.expected_log_prob(y, q, x=x)
    torch.manual_seed(1)
    f = q.mean + q.variance.sqrt() * torch.randn(200000, 6)
    logp = likelihood.forward(f, x=x).log_prob(y)
    mc, err = logp.mean(0), logp.std(0) / math.sqrt(f.size(0))
    assert ((elp - mc).abs() < 4 * err + 1e-6).all()
    probs = likelihood(q, x=x).probs
    mc_probs = torch.softmax(likelihood.logits(f, likelihood.flow_parameters(x)), -1).mean(0)
    assert torch.allclose(probs, mc_probs, atol=5e-3)
    assert torch.allclose(probs.sum(-1), torch.ones(6))
    assert torch.allclose(likelihood.log_marginal(y, q, x=x), probs.gather(-1, y[:, None]).squeeze(-1).log())


@pytest.mark.parametrize("input_dependent", [True, False])
def test_fused_training_path_equals_the_plain_path(input_dependent):
    """expected_log_prob through the fused kernel (nodes summed inside it) equals the plain autograd path
    (GaussHermiteQuadrature1D over the flows' logits), for values and for every gradient: the GP's mean and
    variance, the flow network and the flows' constant parameters."""
    flow = _input_dependent() if input_dependent else _random_flow()
    likelihood = ETGPLikelihood(flow)
    assert likelihood._fused_sal
    mean, var = torch.randn(6).requires_grad_(True), (0.2 + torch.rand(6)).requires_grad_(True)
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 3, 1, 2])
    kwargs = {"x": x} if input_dependent else {}
    results = []
    for fused in (True, False):
        likelihood.fused = fused
        elp = likelihood.expected_log_prob(y, MultivariateNormal(mean, torch.diag_embed(var)), **kwargs)
        weights = torch.linspace(0.5, 1.5, 6)  # a gradient that differs across inputs
        results.append((elp, torch.autograd.grad((elp * weights).sum(), [mean, var, *likelihood.parameters()])))
    (fused_elp, fused_grads), (plain_elp, plain_grads) = results
    torch.testing.assert_close(fused_elp, plain_elp, rtol=1e-12, atol=1e-12)
    for a, b in zip(fused_grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_two_classes_identity_flows_give_logits_f_f():
    """With identity flows and C = 2 both logits are f: p(y) = 1/2 whatever q(f), so E log p = -log 2."""
    likelihood = ETGPLikelihood(sinh_arcsinh_affine(2))
    q = _marginal()
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    f = torch.randn(7, 6)
    assert torch.allclose(likelihood.logits(f), torch.stack([f, f], -1))
    assert torch.allclose(likelihood.expected_log_prob(y, q), torch.full((6,), -math.log(2)))
    assert torch.allclose(likelihood(q).probs, torch.full((6, 2), 0.5))
    # Monte Carlo agrees (exactly: the integrand is constant)
    assert torch.allclose(likelihood.forward(q.rsample(torch.Size([100]))).log_prob(y), torch.tensor(-math.log(2)))


def test_two_classes_affine_flows_reduce_to_a_logit_gp_classifier():
    """G_1(f) = 2f, G_2(f) = f: softmax gives sigmoid(f), the one-GP Bernoulli-logit classifier."""
    flow = AffineFlow(2)
    with torch.no_grad():
        flow.raw_parameters[:, 0] = torch.tensor([2.0, 1.0]).expm1().log()  # alpha = (2, 1)
    likelihood = ETGPLikelihood(flow, num_quadrature=20)
    bernoulli = BernoulliLogitLikelihood()
    q = _marginal()
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    assert torch.allclose(likelihood.expected_log_prob(y, q), bernoulli.expected_log_prob((y == 0).double(), q))
    assert torch.allclose(likelihood(q).probs[:, 0], bernoulli(q).probs)


def test_mc_dropout():
    likelihood = ETGPLikelihood(_input_dependent(dropout=0.5))
    likelihood.eval()
    q, x = _marginal(), torch.randn(6, 3)
    point = likelihood(q, x=x).probs
    assert torch.allclose(point, likelihood(q, x=x).probs)  # dropout off: deterministic
    mc = likelihood(q, x=x, num_dropout_samples=20).probs
    assert not torch.allclose(point, mc)
    assert torch.allclose(mc.sum(-1), torch.ones(6))
    assert not likelihood.flow.network.training  # restored
    # without dropout the MC average is the point estimate
    deterministic = ETGPLikelihood(_input_dependent(dropout=0.0))
    assert torch.allclose(deterministic(q, x=x, num_dropout_samples=5).probs, deterministic(q, x=x).probs)


def test_bad_arguments():
    import pytest

    with pytest.raises(TypeError, match="flow"):
        ETGPLikelihood(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="num_flows"):
        ETGPLikelihood(AffineFlow(1))
    with pytest.raises(ValueError, match="num_quadrature"):
        ETGPLikelihood(AffineFlow(2), num_quadrature=0)
    with pytest.raises(ValueError, match="pass x="):
        ETGPLikelihood(_input_dependent())(_marginal())
