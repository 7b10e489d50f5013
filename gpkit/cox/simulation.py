"""Point patterns with a known intensity: inhomogeneous Poisson processes simulated by thinning, Hermite and
bump intensities, midpoint-rule integrals."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from gpkit.datasets.dataset import Dataset


def hermite_functions(z: Tensor, num: int) -> Tensor:
    """Orthonormal Hermite functions ``h_k(z) = H_k(z) exp(-z^2/2) / sqrt(2^k k! sqrt(pi))``, ``k < num``.

    :return: ``n x num``; computed by the stable three-term recurrence.
    """
    out = [math.pi**-0.25 * torch.exp(-0.5 * z**2)]
    if num > 1:
        out.append(math.sqrt(2.0) * z * out[0])
    for k in range(1, num - 1):
        out.append(math.sqrt(2.0 / (k + 1)) * z * out[k] - math.sqrt(k / (k + 1)) * out[k - 1])
    return torch.stack(out[:num], -1)


class HermiteIntensity:
    """``lambda(t) = scale * (sum_{k<K} alpha_k sqrt(eta_k) psi_k(t))^2`` on ``[lower, upper]``.

    ``psi_k`` are Hermite functions of ``z = (t - centre) / width`` (``width`` = a sixth of the
    domain), ``eta_k = decay^k`` and ``alpha_k ~ N(0, 1)`` (seeded): the synthetic intensity of the
    Gaussian Cox process BO paper (Mei et al. 2024; ``scale = 1.6``, ``K = 64`` on ``[0, 100]``).
    """

    def __init__(
        self,
        seed: int = 0,
        num_terms: int = 64,
        scale: float = 1.6,
        decay: float = 0.9,
        lower: float = 0.0,
        upper: float = 100.0,
    ):
        gen = torch.Generator().manual_seed(seed)
        self.alpha = torch.randn(num_terms, generator=gen, dtype=torch.float64)
        self.eta = decay ** torch.arange(num_terms, dtype=torch.float64)
        self.scale, self.lower, self.upper = scale, lower, upper
        self.centre, self.width = 0.5 * (lower + upper), (upper - lower) / 6.0

    def __call__(self, X: Tensor) -> Tensor:
        z = (X[..., 0].to(torch.float64) - self.centre) / self.width
        g = hermite_functions(z, len(self.alpha)) @ (self.alpha * self.eta.sqrt())
        return (self.scale * g**2).to(X.dtype)


def bumps_intensity(X: Tensor) -> Tensor:
    """A 2-D intensity on the unit square: a floor of 50 plus two Gaussian bumps (peak ~450)."""
    c1 = torch.tensor([0.3, 0.7], dtype=X.dtype, device=X.device)
    c2 = torch.tensor([0.7, 0.3], dtype=X.dtype, device=X.device)
    r1, r2 = ((X - c1) ** 2).sum(-1), ((X - c2) ** 2).sum(-1)
    return 50.0 + 400.0 * torch.exp(-r1 / (2 * 0.1**2)) + 250.0 * torch.exp(-r2 / (2 * 0.15**2))


def sine_intensity(X: Tensor) -> Tensor:
    """A 1-D intensity on ``[0, 100]``: ``2 + 1.5 sin(2 pi t / 25) + exp(-(t - 70)^2 / 20)``."""
    t = X[..., 0]
    return 2.0 + 1.5 * torch.sin(2 * math.pi * t / 25.0) + torch.exp(-((t - 70.0) ** 2) / 20.0)


#: named intensities -> (callable factory(seed), bounds)
INTENSITIES: dict[str, tuple[Callable[[int], Callable[[Tensor], Tensor]], list[list[float]]]] = {
    "hermite1d": (lambda seed: HermiteIntensity(seed), [[0.0], [100.0]]),
    "sine1d": (lambda seed: sine_intensity, [[0.0], [100.0]]),
    "bumps2d": (lambda seed: bumps_intensity, [[0.0, 0.0], [1.0, 1.0]]),
}


def _grid(bounds: Tensor, size: int) -> Tensor:
    axes = [
        torch.linspace(lo, hi, size, dtype=bounds.dtype)
        for lo, hi in zip(bounds[0].tolist(), bounds[1].tolist())
    ]
    return torch.cartesian_prod(*axes).reshape(-1, bounds.shape[1])


def integrate(intensity: Callable[[Tensor], Tensor], bounds: Tensor, size: int | None = None) -> float:
    """Integral of ``intensity`` over the box ``bounds`` (``2 x d``) by the midpoint rule."""
    d = bounds.shape[1]
    size = size or {1: 20000, 2: 400}.get(d, 40)
    width = (bounds[1] - bounds[0]) / size
    axes = [bounds[0, j] + width[j] * (torch.arange(size, dtype=bounds.dtype) + 0.5) for j in range(d)]
    mid = torch.cartesian_prod(*axes).reshape(-1, d)
    return float(intensity(mid).sum() * width.prod())


def poisson_process(
    intensity: Callable[[Tensor], Tensor], bounds: Tensor, seed: int = 0, max_intensity: float | None = None
) -> Tensor:
    """Events of an inhomogeneous Poisson process on a box, by thinning (Lewis & Shedler).

    :param intensity: ``X (n x d) -> (n,)`` non-negative.
    :param bounds: ``2 x d``, lower < upper.
    :param max_intensity: an upper bound of ``intensity`` on the box; default: 1.5 x the maximum on a
        grid. If a proposal exceeds the bound, the bound is doubled and the draw repeated.
    :return: events ``n x d`` (sorted by the first coordinate).
    """
    bounds = torch.as_tensor(bounds, dtype=torch.float64)
    if bounds.dim() != 2 or bounds.shape[0] != 2 or not (bounds[1] > bounds[0]).all():
        raise ValueError(f"bounds must be 2 x d with lower < upper, got {bounds.tolist()}")
    if max_intensity is None:
        max_intensity = 1.5 * float(
            intensity(_grid(bounds, {1: 2000, 2: 100}.get(bounds.shape[1], 12))).max()
        )
    volume = float((bounds[1] - bounds[0]).prod())
    rng = np.random.default_rng(seed)
    for _ in range(20):
        num = rng.poisson(max_intensity * volume)
        prop = bounds[0] + (bounds[1] - bounds[0]) * torch.tensor(rng.random((num, bounds.shape[1])))
        lam = intensity(prop)
        if (lam < 0).any():
            raise ValueError("intensity must be non-negative")
        if (lam <= max_intensity).all():
            keep = torch.tensor(rng.random(num)) * max_intensity < lam
            events = prop[keep]
            return events[events[:, 0].argsort()]
        max_intensity *= 2.0
    raise RuntimeError("could not bound the intensity; pass max_intensity")


def synthetic_point_process(
    intensity: str = "hermite1d", seed: int = 0, dtype: torch.dtype = torch.float64
) -> Dataset:
    """A simulated point pattern with its true intensity.

    :param intensity: ``"hermite1d"`` (random Hermite expansion on [0, 100], Cox-BO synthetic,
        ``seed`` also draws the intensity), ``"sine1d"`` (on [0, 100]) or ``"bumps2d"`` (unit square).
    :return: :class:`Dataset` with ``X`` the events, ``extras``: ``intensity`` (callable
        ``n x d -> n``), ``bounds`` (``2 x d``), ``expected_count`` (integral of the intensity).
    """
    from gpkit.datasets.dataset import Dataset

    if intensity not in INTENSITIES:
        raise ValueError(f"intensity must be one of {sorted(INTENSITIES)}, got {intensity!r}")
    factory, box = INTENSITIES[intensity]
    fn = factory(seed)
    bounds = torch.tensor(box, dtype=torch.float64)
    events = poisson_process(fn, bounds, seed=seed)
    extras = {
        "intensity": fn,
        "bounds": bounds.to(dtype),
        "expected_count": integrate(fn, bounds),
        "seed": seed,
    }
    desc = f"Inhomogeneous Poisson process with the known intensity {intensity!r} (thinning, seed {seed})."
    return Dataset(f"synthetic-{intensity}", events.to(dtype), None, {}, extras, desc)
