import unittest

import gpytorch
import torch
from gpytorch.distributions import MultivariateNormal
from gpytorch.test.base_likelihood_test_case import BaseLikelihoodTestCase

from gpkit.likelihoods import BernoulliLogitLikelihood, ExpLinkPoissonLikelihood


class TestPoissonLikelihood(BaseLikelihoodTestCase, unittest.TestCase):
    seed = 0

    def create_likelihood(self):
        return ExpLinkPoissonLikelihood()

    def _create_marginal_input(self, batch_shape=torch.Size([])):
        # log-rates with moderate variance: Monte Carlo references of E[exp(f)] are too noisy otherwise
        mat = 0.3 * torch.randn(*batch_shape, 5, 5)
        cov = mat @ mat.transpose(-1, -2) + 0.1 * torch.eye(5)
        return MultivariateNormal(0.5 * torch.randn(*batch_shape, 5), cov)

    def _create_targets(self, batch_shape=torch.Size([])):
        return torch.poisson(torch.full(torch.Size([*batch_shape, 5]), 2.0))

    def _test_marginal(self, batch_shape):
        # The predictive is a Poisson-lognormal mixture (Monte Carlo, a sample dimension first): compare its
        # mean with the closed form E[exp(f)] = exp(m + s^2 / 2).
        likelihood = self.create_likelihood()
        input = self._create_marginal_input(batch_shape)
        with gpytorch.settings.num_likelihood_samples(20000):
            mean = likelihood(input).mean.mean(0)
        self.assertAllClose(mean, (input.mean + input.variance / 2).exp(), rtol=0.05, atol=0.05)

    def test_closed_form_matches_quadrature(self):
        likelihood = self.create_likelihood()
        dist = MultivariateNormal(torch.tensor([0.3, -1.0, 1.2]), torch.diag(torch.tensor([0.2, 1.5, 0.05])))
        y = torch.tensor([1.0, 0.0, 4.0])
        quadrature = likelihood.quadrature(lambda f: likelihood.forward(f).log_prob(y), dist)
        self.assertTrue(torch.allclose(likelihood.expected_log_prob(y, dist), quadrature, atol=1e-4))


class TestBernoulliLogitLikelihood(BaseLikelihoodTestCase, unittest.TestCase):
    seed = 0

    def create_likelihood(self):
        return BernoulliLogitLikelihood()

    def _create_targets(self, batch_shape=torch.Size([])):
        return torch.randint(0, 2, torch.Size([*batch_shape, 5])).to(torch.get_default_dtype())

    def test_logit_link(self):
        probs = self.create_likelihood()(torch.tensor([0.0, 2.0])).probs
        self.assertTrue(torch.allclose(probs, torch.sigmoid(torch.tensor([0.0, 2.0]))))
