import math

import pytest
import torch
from scipy import stats

from gpkit.metrics import crps_gaussian, gaussian_metrics, interval_score_gaussian, latent_metrics


def _cases():
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(6, generator=g, dtype=torch.float64)
    var = torch.rand(6, generator=g, dtype=torch.float64) * 2 + 0.05
    y = mean + torch.randn(6, generator=g, dtype=torch.float64) * 3
    return mean, var, y


def test_crps_matches_monte_carlo():
    # CRPS(F, y) = E|X - y| - 0.5 E|X - X'| for X, X' ~ F independent
    mean, var, y = _cases()
    g = torch.Generator().manual_seed(1)
    x = mean + var.sqrt() * torch.randn(400_000, 6, generator=g, dtype=torch.float64)
    x2 = mean + var.sqrt() * torch.randn(400_000, 6, generator=g, dtype=torch.float64)
    mc = (x - y).abs().mean(0) - 0.5 * (x - x2).abs().mean(0)
    torch.testing.assert_close(crps_gaussian(mean, var, y), mc, rtol=0, atol=6e-3 * var.sqrt().max().item())


def test_crps_limits():
    # a point mass at y scores 0; at y = mean the CRPS is sigma (sqrt(2) - 1) / sqrt(pi)
    y = torch.tensor([0.3], dtype=torch.float64)
    assert crps_gaussian(y, torch.tensor([1e-16], dtype=torch.float64), y).item() < 1e-7
    sigma = 1.7
    value = crps_gaussian(y, torch.tensor([sigma**2], dtype=torch.float64), y).item()
    assert value == pytest.approx(sigma * (math.sqrt(2) - 1) / math.sqrt(math.pi), rel=1e-12)


def test_interval_score_matches_scipy_interval_and_its_expectation():
    mean, var, y = _cases()
    lower, upper = stats.norm.interval(0.9, loc=mean.numpy(), scale=var.sqrt().numpy())
    lower, upper = torch.from_numpy(lower), torch.from_numpy(upper)
    direct = (upper - lower) + 20 * ((lower - y).clamp_min(0) + (y - upper).clamp_min(0))
    torch.testing.assert_close(interval_score_gaussian(mean, var, y, alpha=0.1), direct)
    # the expected score under the predictive itself: 2 z sigma + (4 / alpha) sigma (phi(z) - z (1 - Phi(z)))
    alpha, sigma = 0.05, 0.8
    z = stats.norm.ppf(1 - alpha / 2)
    expected = 2 * z * sigma + 4 / alpha * sigma * (stats.norm.pdf(z) - z * stats.norm.sf(z))
    g = torch.Generator().manual_seed(2)
    draws = sigma * torch.randn(1_000_000, generator=g, dtype=torch.float64)
    mc = interval_score_gaussian(torch.zeros(1, dtype=torch.float64), torch.full((1,), sigma**2, dtype=torch.float64),
                                 draws, alpha).mean().item()
    assert mc == pytest.approx(expected, rel=5e-3)
    with pytest.raises(ValueError, match="alpha"):
        interval_score_gaussian(mean, var, y, alpha=1.5)


def test_metric_dicts_report_crps_and_interval_score_on_the_original_scale():
    mean, var, y = _cases()
    out = latent_metrics(mean, var, y)
    assert out["crps"] == pytest.approx(crps_gaussian(mean, var, y).mean().item())
    assert out["interval_score"] == pytest.approx(interval_score_gaussian(mean, var, y).mean().item())

    class Fixed(torch.nn.Module):  # a "model" whose predictive is N(mean, var) at the test inputs
        def forward(self, x):
            from gpytorch.distributions import MultivariateNormal
            from linear_operator.operators import DiagLinearOperator

            return MultivariateNormal(mean[x.squeeze(-1).long()], DiagLinearOperator(var[x.squeeze(-1).long()]))

    X = torch.arange(6, dtype=torch.float64).unsqueeze(-1)
    scaled = gaussian_metrics(Fixed(), torch.nn.Identity(), X, y, y_std=2.0)
    assert scaled["crps"] == pytest.approx(2 * out["crps"])
    assert scaled["interval_score"] == pytest.approx(2 * out["interval_score"])
    assert scaled["rmse"] == pytest.approx(2 * out["rmse"])
