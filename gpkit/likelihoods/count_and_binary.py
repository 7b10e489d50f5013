"""Poisson (log link) and Bernoulli (logit link) likelihoods.

GPyTorch's ``BernoulliLikelihood`` uses the probit link and its ``PoissonLikelihood`` the softplus link;
the DKLGP experiments use the logit and log links. Expected log likelihoods use GPyTorch's Gauss-Hermite
quadrature, except the log-link Poisson one, which has a closed form.
"""

from __future__ import annotations

import torch
from gpytorch.distributions import MultivariateNormal
from gpytorch.likelihoods import _OneDimensionalLikelihood
from torch import Tensor


class ExpLinkPoissonLikelihood(_OneDimensionalLikelihood):
    r""":math:`y \mid f \sim \mathrm{Poisson}(e^{f})` for counts :math:`y \in \{0, 1, 2, \dots\}`.

    The log link (rate :math:`e^f`); GPyTorch's ``gpytorch.likelihoods.PoissonLikelihood`` uses the softplus
    link instead.

    The expected log likelihood under :math:`f \sim \mathcal N(m, s^2)` is exact:
    :math:`y m - e^{m + s^2/2} - \log y!`.
    """

    def forward(self, function_samples: Tensor, *args, **kwargs) -> torch.distributions.Poisson:
        return torch.distributions.Poisson(rate=function_samples.exp())

    def expected_log_prob(self, observations: Tensor, function_dist: MultivariateNormal, *args, **kwargs) -> Tensor:
        mean, variance = function_dist.mean, function_dist.variance
        return observations * mean - (mean + variance / 2).exp() - torch.lgamma(observations + 1)


class BernoulliLogitLikelihood(_OneDimensionalLikelihood):
    r""":math:`y \mid f \sim \mathrm{Bernoulli}(\sigma(f))` with the logistic link, labels :math:`y \in \{0, 1\}`."""

    def forward(self, function_samples: Tensor, *args, **kwargs) -> torch.distributions.Bernoulli:
        return torch.distributions.Bernoulli(logits=function_samples)

    def marginal(self, function_dist: MultivariateNormal, *args, **kwargs) -> torch.distributions.Bernoulli:
        r"""Predictive :math:`p(y=1) = E[\sigma(f)]` by Gauss-Hermite quadrature."""
        return torch.distributions.Bernoulli(probs=self.quadrature(torch.sigmoid, function_dist))
