"""Test metrics shared by benchmarks, demos and tutorials (full Gaussian NLL, incl. 0.5 log 2 pi)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["gaussian_metrics", "latent_metrics", "predict_latent"]


@torch.no_grad()
def gaussian_metrics(model, likelihood, X: Tensor, y: Tensor, y_std: float = 1.0, chunk: int = 1024) -> dict:
    """Test RMSE and mean full Gaussian NLL (incl. 0.5 log 2π) on the original target scale.

    :param model: trained GPyTorch model (eval mode is set here).
    :param likelihood: its Gaussian likelihood.
    :param X: test inputs ``m x d`` (standardised like the training inputs).
    :param y: test targets ``m`` on the standardised scale.
    :param y_std: standard deviation used to standardise the targets.
    :param chunk: test inputs per call (each gets its marginal).
    :return: ``{"rmse": ..., "nll": ...}``.
    """
    model.eval(), likelihood.eval()
    means, variances = [], []
    for xb in X.split(chunk):
        pred = likelihood(model(xb))
        means.append(pred.mean), variances.append(pred.variance)
    mean, var = torch.cat(means), torch.cat(variances)
    rmse = (mean - y).pow(2).mean().sqrt().item() * y_std
    nll = (0.5 * torch.log(2 * math.pi * var) + 0.5 * (y - mean).pow(2) / var).mean().item() + math.log(y_std)
    return {"rmse": rmse, "nll": nll}


@torch.no_grad()
def predict_latent(model, X: Tensor, chunk: int = 1024) -> tuple[Tensor, Tensor]:
    """Latent predictive means and variances of ``model`` at ``X`` (independent marginals, chunked)."""
    model.eval()
    outs = [model(xb) for xb in X.split(chunk)]
    return torch.cat([o.mean for o in outs]), torch.cat([o.variance for o in outs])


def latent_metrics(mean: Tensor, var: Tensor, f: Tensor) -> dict:
    """RMSE and mean full Gaussian NLL (incl. 0.5 log 2π) of the true latent values ``f``."""
    var = var.clamp_min(1e-10)
    nll = 0.5 * torch.log(2 * math.pi * var) + 0.5 * (f - mean).pow(2) / var
    return {"rmse": (mean - f).pow(2).mean().sqrt().item(), "nll": nll.mean().item()}
