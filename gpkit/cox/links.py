"""Link functions ``lambda = kappa(g)`` of a Gaussian Cox process and the Gaussian expectations the model and
the acquisitions need (all on the intensity scale)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torch.nn.functional import softplus

LINKS = ("quadratic", "exp", "softplus")

# Gauss-Hermite (probabilists') nodes/weights for E[h(g)], g ~ N(mu, s^2), links without closed forms
_GH_NODES, _GH_WEIGHTS = (torch.tensor(v, dtype=torch.float64) for v in np.polynomial.hermite_e.hermegauss(40))
_GH_WEIGHTS = _GH_WEIGHTS / math.sqrt(2 * math.pi)


def check_link(link: str) -> str:
    if link not in LINKS:
        raise ValueError(f"link must be one of {LINKS}, got {link!r}")
    return link


def kappa(link: str, g: Tensor, scale: float = 1.0) -> Tensor:
    """The intensity ``scale * kappa(g)``: ``scale * g**2``, ``scale * exp(g)`` or ``scale * softplus(g)``."""
    if link == "quadratic":
        return scale * g**2
    if link == "exp":
        return scale * g.exp()
    return scale * softplus(g)


def log_kappa_derivatives(link: str, g: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``log kappa(g)`` and its first two derivatives (without the quadratic link's ``log scale``)."""
    if link == "quadratic":
        return 2 * g.abs().log(), 2 / g, -2 / g**2
    if link == "exp":
        return g, torch.ones_like(g), torch.zeros_like(g)
    s, sig = softplus(g), torch.sigmoid(g)
    d1 = sig / s
    return s.log(), d1, sig * (1 - sig) / s - d1**2


def kappa_derivatives(link: str, g: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``kappa(g)`` and its first two derivatives (exp and softplus)."""
    if link == "exp":
        e = g.exp()
        return e, e, e
    sig = torch.sigmoid(g)
    return softplus(g), sig, sig * (1 - sig)


def _gauss_hermite(fn, mean: Tensor, std: Tensor) -> Tensor:
    nodes, weights = _GH_NODES.to(mean), _GH_WEIGHTS.to(mean)
    return (fn(mean.unsqueeze(-1) + std.unsqueeze(-1) * nodes) * weights).sum(-1)


def intensity_moments(link: str, mean: Tensor, var: Tensor, scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """Mean and variance of ``lambda = kappa(g)`` for ``g ~ N(mean, var)`` (elementwise)."""
    if link == "quadratic":
        m = scale * (mean**2 + var)
        return m, scale**2 * (2 * var**2 + 4 * mean**2 * var)
    if link == "exp":
        m = (mean + 0.5 * var).exp()
        return scale * m, scale**2 * m**2 * torch.expm1(var)
    std = var.clamp_min(0).sqrt()
    m = _gauss_hermite(softplus, mean, std)
    m2 = _gauss_hermite(lambda z: softplus(z) ** 2, mean, std)
    return scale * m, scale**2 * (m2 - m**2).clamp_min(0)


def inverse_kappa(link: str, lam: Tensor, scale: float = 1.0) -> Tensor:
    """The ``g`` (non-negative for the quadratic link) with ``scale * kappa(g) = lam`` (``lam > 0``)."""
    lam = lam / scale
    if link == "quadratic":
        return lam.sqrt()
    if link == "exp":
        return lam.log()
    return lam + torch.log(-torch.expm1(-lam))


def _normal_cdf(z: Tensor) -> Tensor:
    return 0.5 * torch.erfc(-z / math.sqrt(2))


def _normal_pdf(z: Tensor) -> Tensor:
    return torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)


def exceedance_probability(link: str, mean: Tensor, std: Tensor, best: Tensor, scale: float = 1.0) -> Tensor:
    """``P(kappa(g) > best)`` for ``g ~ N(mean, std^2)``."""
    c = inverse_kappa(link, best.clamp_min(torch.finfo(mean.dtype).tiny), scale)
    up = _normal_cdf((mean - c) / std)
    if link == "quadratic":  # |g| > c
        return up + _normal_cdf((-mean - c) / std)
    return up


def expected_improvement(link: str, mean: Tensor, std: Tensor, best: Tensor, scale: float = 1.0) -> Tensor:
    """``E[(kappa(g) - best)_+]`` for ``g ~ N(mean, std^2)`` (closed forms; Gauss-Legendre for softplus)."""
    best = torch.as_tensor(best).to(mean).clamp_min(torch.finfo(mean.dtype).tiny)
    c = inverse_kappa(link, best, scale)
    if link == "quadratic":
        out = torch.zeros_like(mean)
        for mu in (mean, -mean):  # the tails g > c and g < -c
            z = (c - mu) / std
            q, p = _normal_cdf(-z), _normal_pdf(z)
            second = mu**2 * q + 2 * mu * std * p + std**2 * (z * p + q)  # E[g^2; g > c]
            out = out + scale * second - best * q
        return out.clamp_min(0)
    if link == "exp":
        z = (mean - c) / std
        return (scale * (mean + 0.5 * std**2).exp() * _normal_cdf(z + std) - best * _normal_cdf(z)).clamp_min(0)
    # softplus: integrate (softplus(mean + std t) - best) phi(t) over t > z by 64-point Gauss-Legendre
    z = (c - mean) / std
    upper = torch.maximum(z, torch.zeros_like(z)) + 9.0
    x, w = (torch.tensor(v, dtype=mean.dtype, device=mean.device) for v in np.polynomial.legendre.leggauss(64))
    half = 0.5 * (upper - z)
    t = z.unsqueeze(-1) + half.unsqueeze(-1) * (x + 1)
    f = (scale * softplus(mean.unsqueeze(-1) + std.unsqueeze(-1) * t) - best.unsqueeze(-1)).clamp_min(0) * _normal_pdf(t)
    return (half * (f * w).sum(-1)).clamp_min(0)
