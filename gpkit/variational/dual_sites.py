r"""Site parameters (E-steps) for :class:`~gpkit.variational.DualVariationalStrategy`.

For :math:`q(f_i) = \mathcal N(m_i, v_i)` and :math:`\ell_i = \mathbb E_q[\log p(y_i | f_i)]`, with
:math:`g_m = \partial\ell_i/\partial m_i` and :math:`g_v = \partial\ell_i/\partial v_i \le -10^{-8}`, the site of
the centred function :math:`f - \mu` is :math:`\tilde\lambda_{1,i} = g_m - 2 g_v (m_i - \mu_i)`,
:math:`\beta_i = -2 g_v`. A Gaussian likelihood gives :math:`(y_i - \mu_i)/\sigma^2` and :math:`1/\sigma^2`
whatever :math:`q`, so one undamped step is exact.
"""

from __future__ import annotations

import torch
from gpytorch.distributions import MultivariateNormal
from gpytorch.likelihoods import Likelihood
from linear_operator.operators import DiagLinearOperator
from torch import Tensor

__all__ = ["damped_site_step", "site_parameters", "softmax_site_parameters"]

MIN_CURVATURE = 1e-8


def site_parameters(
    likelihood: Likelihood, mean: Tensor, variance: Tensor, prior_mean: Tensor, target: Tensor, **kwargs
) -> tuple[Tensor, Tensor]:
    r"""Sites of any one-dimensional GPyTorch likelihood, by autograd of its ``expected_log_prob``.

    :param likelihood: e.g. ``GaussianLikelihood``, ``BernoulliLikelihood``, ``StudentTLikelihood``.
    :param mean: :math:`m_i`, ``*batch x n``.
    :param variance: :math:`v_i`, ``*batch x n``.
    :param prior_mean: :math:`\mu(\mathbf x_i)`, ``*batch x n``.
    :param target: :math:`y_i`, ``n`` (broadcast against the batch).
    :param kwargs: passed to ``expected_log_prob`` (e.g. noise).
    :return: ``(site1, beta)``, each ``*batch x n``.
    """
    with torch.enable_grad():
        m = mean.detach().clone().requires_grad_(True)
        v = variance.detach().clamp_min(1e-12).requires_grad_(True)
        ell = likelihood.expected_log_prob(target, MultivariateNormal(m, DiagLinearOperator(v)), **kwargs)
        g_m, g_v = torch.autograd.grad(ell.sum(), (m, v))
    g_v = g_v.clamp(max=-MIN_CURVATURE)
    return g_m - 2 * g_v * (mean - prior_mean), -2 * g_v


def softmax_site_parameters(
    mean: Tensor, variance: Tensor, prior_mean: Tensor, labels: Tensor, num_samples: int = 64,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Mean-field sites of a softmax likelihood over ``C`` independent latent GPs.

    :math:`g_m = \mathbb E_q[\mathbb 1_{y=c} - p_c]` and, by Price's theorem,
    :math:`g_v = \tfrac12\mathbb E_q[\partial^2\log p/\partial f_c^2] = -\tfrac12\mathbb E_q[p_c(1-p_c)]`,
    both by Monte Carlo over ``num_samples`` draws (the second is always negative, unlike the
    reparameterisation gradient of ``SoftmaxLikelihood.expected_log_prob``).

    :param mean: ``C x n`` (the batch layout of a batch of ``C`` GPs).
    :param variance: ``C x n``.
    :param prior_mean: ``C x n``.
    :param labels: ``n`` integer labels in ``0..C-1``.
    :return: ``(site1, beta)``, each ``C x n``.
    """
    c, n = mean.shape[-2:]
    eps = torch.randn(num_samples, c, n, dtype=mean.dtype, generator=generator).to(mean.device)
    p = torch.softmax(mean + variance.clamp_min(0).sqrt() * eps, dim=-2)  # shape: (S, C, n)
    onehot = torch.nn.functional.one_hot(labels.long(), c).mT.to(mean)  # shape: (C, n)
    g_m = (onehot - p).mean(0)
    g_v = (-0.5 * (p * (1 - p)).mean(0)).clamp(max=-MIN_CURVATURE)
    return g_m - 2 * g_v * (mean - prior_mean), -2 * g_v


def damped_site_step(old: tuple[Tensor, Tensor], new: tuple[Tensor, Tensor], rho: float) -> tuple[Tensor, Tensor]:
    r""":math:`\boldsymbol\lambda \leftarrow (1-\rho)\boldsymbol\lambda + \rho\,\boldsymbol\lambda_{\mathrm{new}}`
    for both duals."""
    if not 0 < rho <= 1:
        raise ValueError(f"rho must be in (0, 1], got {rho}")
    return (1 - rho) * old[0] + rho * new[0], (1 - rho) * old[1] + rho * new[1]
