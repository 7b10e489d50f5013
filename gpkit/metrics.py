"""Test metrics shared by benchmarks, demos and tutorials: RMSE, full Gaussian NLL (incl. 0.5 log 2 pi), and for
Gaussian predictives the CRPS and the interval score of the central 95% interval (both proper scores, in the
target's units, lower is better)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["crps_gaussian", "gaussian_metrics", "interval_score_gaussian", "latent_metrics", "predict_latent"]


def crps_gaussian(mean: Tensor, var: Tensor, y: Tensor) -> Tensor:
    """Continuous ranked probability score of ``N(mean, var)`` at ``y``, elementwise (closed form,
    Gneiting and Raftery 2007): ``sigma * (z (2 Phi(z) - 1) + 2 phi(z) - 1 / sqrt(pi))``, ``z = (y - mean) / sigma``.
    """
    sigma = var.clamp_min(1e-20).sqrt()
    z = (y - mean) / sigma
    normal = torch.distributions.Normal(torch.zeros_like(z), torch.ones_like(z))
    return sigma * (z * (2 * normal.cdf(z) - 1) + 2 * normal.log_prob(z).exp() - 1 / math.sqrt(math.pi))


def interval_score_gaussian(mean: Tensor, var: Tensor, y: Tensor, alpha: float = 0.05) -> Tensor:
    """Interval score of the central ``1 - alpha`` interval ``[l, u]`` of ``N(mean, var)`` at ``y``, elementwise:
    ``(u - l) + (2 / alpha) (l - y)_+ + (2 / alpha) (y - u)_+`` (Gneiting and Raftery 2007, eq. 43).

    :param alpha: miscoverage level in (0, 1); 0.05 scores the 95% interval.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    half = var.clamp_min(0).sqrt() * math.sqrt(2) * torch.special.erfinv(torch.tensor(1 - alpha, dtype=mean.dtype))
    lower, upper = mean - half, mean + half
    return (upper - lower) + (2 / alpha) * ((lower - y).clamp_min(0) + (y - upper).clamp_min(0))


@torch.no_grad()
def gaussian_metrics(model, likelihood, X: Tensor, y: Tensor, y_std: float = 1.0, chunk: int = 1024) -> dict:
    """Test RMSE and mean full Gaussian NLL (incl. 0.5 log 2π) on the original target scale.

    :param model: trained GPyTorch model (eval mode is set here).
    :param likelihood: its Gaussian likelihood.
    :param X: test inputs ``m x d`` (standardised like the training inputs).
    :param y: test targets ``m`` on the standardised scale.
    :param y_std: standard deviation used to standardise the targets.
    :param chunk: test inputs per call (each gets its marginal).
    :return: ``{"rmse", "nll", "crps", "interval_score"}`` (95% interval), all on the original scale.
    """
    model.eval(), likelihood.eval()
    means, variances = [], []
    for xb in X.split(chunk):
        pred = likelihood(model(xb))
        means.append(pred.mean), variances.append(pred.variance)
    mean, var = torch.cat(means), torch.cat(variances)
    rmse = (mean - y).pow(2).mean().sqrt().item() * y_std
    nll = (0.5 * torch.log(2 * math.pi * var) + 0.5 * (y - mean).pow(2) / var).mean().item() + math.log(y_std)
    crps = crps_gaussian(mean, var, y).mean().item() * y_std
    interval = interval_score_gaussian(mean, var, y).mean().item() * y_std
    return {"rmse": rmse, "nll": nll, "crps": crps, "interval_score": interval}


@torch.no_grad()
def predict_latent(model, X: Tensor, chunk: int = 1024) -> tuple[Tensor, Tensor]:
    """Latent predictive means and variances of ``model`` at ``X`` (independent marginals, chunked)."""
    model.eval()
    outs = [model(xb) for xb in X.split(chunk)]
    return torch.cat([o.mean for o in outs]), torch.cat([o.variance for o in outs])


def latent_metrics(mean: Tensor, var: Tensor, f: Tensor) -> dict:
    """RMSE, mean full Gaussian NLL (incl. 0.5 log 2π), mean CRPS and mean 95% interval score of the true
    latent values ``f`` under the latent predictive ``N(mean, var)``."""
    var = var.clamp_min(1e-10)
    nll = 0.5 * torch.log(2 * math.pi * var) + 0.5 * (f - mean).pow(2) / var
    return {
        "rmse": (mean - f).pow(2).mean().sqrt().item(),
        "nll": nll.mean().item(),
        "crps": crps_gaussian(mean, var, f).mean().item(),
        "interval_score": interval_score_gaussian(mean, var, f).mean().item(),
    }
