"""Acquisition functions for a :class:`~gpkit.cox.GaussianCoxProcess`, all on the intensity scale (events per
unit volume of the model's ``bounds`` coordinates; never a mix of the intensity and the latent ``g``).

Inputs are ``b x q x d`` (a ``q x d`` input is one batch, as in BoTorch) and values ``b``. Pointwise acquisitions score
a q-batch by its best point; window acquisitions read the ``q`` points as window centres and score them together
(total arrivals; probability of no arrival in any of them), summing over the ``q`` windows, so where windows overlap
the overlap counts once per window. All are deterministic (seeded base samples), so
``botorch.optim.optimize_acqf`` and ``optimize_acqf_discrete`` can use them directly.
"""

from __future__ import annotations

import math

import torch
from botorch.acquisition.acquisition import AcquisitionFunction
from botorch.utils.transforms import t_batch_mode_transform
from torch import Tensor

from gpkit.cox import links

__all__ = [
    "ChangePointScore",
    "ExpectedArrivals",
    "IdleTime",
    "IntensityExpectedImprovement",
    "IntensityProbabilityOfImprovement",
    "IntensityUpperConfidenceBound",
]


def _check_model(model) -> None:
    from gpkit.cox.model import GaussianCoxProcess

    if not isinstance(model, GaussianCoxProcess):
        raise TypeError(f"model must be a gpkit.cox.GaussianCoxProcess, got {type(model).__name__}")


class _IntensityAcquisition(AcquisitionFunction):
    def __init__(self, model) -> None:
        _check_model(model)
        super().__init__(model=model)

    def _latent(self, X: Tensor) -> tuple[Tensor, Tensor]:
        mean, var, _ = self.model.latent_moments(X)
        return mean, var.clamp_min(1e-30).sqrt()


class IntensityUpperConfidenceBound(_IntensityAcquisition):
    r"""Upper confidence bound of the intensity: :math:`E[\lambda(x)] + \sqrt{\beta}\, \mathrm{sd}[\lambda(x)]`
    (BoTorch's ``beta`` convention), both moments of :math:`\lambda = \kappa(g)` under the Laplace posterior.

    :param model: a fitted :class:`~gpkit.cox.GaussianCoxProcess`.
    :param beta: non-negative trade-off (the reference's ``mean + 4 std`` is ``beta = 16``).
    """

    def __init__(self, model, beta: float = 4.0) -> None:
        super().__init__(model)
        if not (isinstance(beta, float | int) and beta >= 0):
            raise ValueError(f"beta must be a non-negative number, got {beta!r}")
        self.beta = float(beta)

    @t_batch_mode_transform()
    def forward(self, X: Tensor) -> Tensor:
        mean, var, _ = self.model.latent_moments(X)
        m, v = links.intensity_moments(self.model.link, mean, var, self.model.scale)
        value = (m + math.sqrt(self.beta) * v.clamp_min(0).sqrt()) / self.model.volume
        return value.amax(-1)


class _Improvement(_IntensityAcquisition):
    def __init__(self, model, best_f: float | Tensor | None = None) -> None:
        super().__init__(model)
        if best_f is None:  # incumbent: the largest posterior mean intensity on the model's grid
            with torch.no_grad():
                grid = model.bounds[0] + (model.bounds[1] - model.bounds[0]) * model.cells
                best_f = model.intensity(grid)[0].max()
        best_f = torch.as_tensor(best_f, dtype=model.events.dtype, device=model.events.device)
        if not torch.isfinite(best_f).all() or (best_f < 0).any():
            raise ValueError(f"best_f must be a finite non-negative intensity, got {best_f}")
        self.register_buffer("best_f", best_f)

    def _best(self) -> Tensor:
        return self.best_f * self.model.volume  # on the model's unit-cube scale


class IntensityExpectedImprovement(_Improvement):
    r"""Expected improvement of the intensity over ``best_f``: :math:`E[(\lambda(x) - \lambda^*)_+]`, in closed
    form for the quadratic and exp links (Gauss–Legendre for softplus).

    :param best_f: incumbent intensity (default: the largest posterior mean intensity on the model's grid).
    """

    @t_batch_mode_transform()
    def forward(self, X: Tensor) -> Tensor:
        mean, std = self._latent(X)
        ei = links.expected_improvement(self.model.link, mean, std, self._best(), self.model.scale)
        return ei.amax(-1) / self.model.volume


class IntensityProbabilityOfImprovement(_Improvement):
    r"""Probability that the intensity exceeds ``best_f``: :math:`P(\lambda(x) > \lambda^*)`.

    :param best_f: incumbent intensity (default: the largest posterior mean intensity on the model's grid).
    """

    @t_batch_mode_transform()
    def forward(self, X: Tensor) -> Tensor:
        mean, std = self._latent(X)
        return links.exceedance_probability(self.model.link, mean, std, self._best(), self.model.scale).amax(-1)


class _WindowAcquisition(_IntensityAcquisition):
    def __init__(self, model, window: float | Tensor, nodes_per_dim: int | None = None) -> None:
        super().__init__(model)
        d = model.events.shape[-1]
        half = torch.as_tensor(window, dtype=model.events.dtype, device=model.events.device).reshape(-1)
        if half.numel() not in (1, d) or not torch.isfinite(half).all() or (half <= 0).any():
            raise ValueError(f"window must be a positive half-width (a number or {d} numbers), got {window!r}")
        self.register_buffer("half_width", half.expand(d).clone())
        self.nodes_per_dim = nodes_per_dim

    def _window_terms(self, X: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Latent mean/root at the quadrature nodes of each window and the node weights (unit-cube scale).

        :return: mean ``b x q x p``, root ``b x q x p x r``, weights ``b x q x p``.
        """
        region = torch.stack([X - self.half_width, X + self.half_width], dim=-2)  # b x q x 2 x d
        nodes, weights = self.model.window_integral(region, self.nodes_per_dim)  # b x q x p x d, b x q x p
        mean, _, root = self.model.latent_moments(nodes.flatten(-3, -2))
        p = nodes.shape[-2]
        mean = mean.unflatten(-1, (X.shape[-2], p))
        root = root.unflatten(-2, (X.shape[-2], p))
        return mean, root, weights / self.model.volume


class ExpectedArrivals(_WindowAcquisition):
    r"""Expected number of arrivals :math:`E[\Lambda_W]` in the windows :math:`[x - r, x + r]` (clipped to the
    model's bounds), summed over the ``q`` windows.

    :param window: half-width ``r`` (a number or ``d`` numbers, ``bounds`` units).
    :param nodes_per_dim: midpoint-rule nodes per axis and window (default 16 / 8 / 5 for d = 1 / 2 / 3).
    """

    @t_batch_mode_transform()
    def forward(self, X: Tensor) -> Tensor:
        mean, root, weights = self._window_terms(X)
        m, _ = links.intensity_moments(self.model.link, mean, root.pow(2).sum(-1), self.model.scale)
        return (m * weights).sum((-1, -2))


class IdleTime(_WindowAcquisition):
    r"""Probability of no arrival in the windows, :math:`E[\exp(-\Lambda_W)]` over the Laplace posterior
    (seeded quasi-fixed Monte Carlo over the joint posterior of ``g`` at the quadrature nodes).

    :param window: half-width ``r`` (a number or ``d`` numbers, ``bounds`` units).
    :param num_samples: posterior draws (fixed base samples, so the function is deterministic and smooth).
    """

    def __init__(self, model, window, num_samples: int = 256, nodes_per_dim: int | None = None, seed: int = 0):
        super().__init__(model, window, nodes_per_dim)
        if isinstance(num_samples, bool) or not (isinstance(num_samples, int) and num_samples >= 1):
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        r = model.state().w.shape[0]
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("base_samples", torch.randn(num_samples, r, generator=gen, dtype=model.events.dtype).to(model.events.device))

    @t_batch_mode_transform()
    def forward(self, X: Tensor) -> Tensor:
        mean, root, weights = self._window_terms(X)  # b x q x p, b x q x p x r
        g = mean.unsqueeze(-3) + torch.einsum("bqpr,sr->bsqp", root, self.base_samples)  # b x s x q x p
        arrivals = (links.kappa(self.model.link, g, self.model.scale) * weights.unsqueeze(-3)).sum((-1, -2))
        return torch.exp(-arrivals).mean(-1)


class ChangePointScore(_IntensityAcquisition):
    r"""Bayesian online change-point detection (Adams & MacKay 2007) on posterior sample paths of the
    intensity along the model's time grid (``d = 1``): the score of a time ``t`` is the posterior probability,
    averaged over the paths, that a new segment starts at ``t`` given the path up to ``t + lag`` cells
    (Gaussian segments with unknown mean and variance, constant hazard). Interpolated linearly between cells.

    :param hazard: prior probability of a change at each cell (the reference's 1/250).
    :param lag: cells of look-ahead before a change at ``t`` is judged.
    :param num_samples: posterior sample paths (seeded).
    """

    def __init__(self, model, hazard: float = 1 / 250, lag: int = 5, num_samples: int = 32, seed: int = 0):
        super().__init__(model)
        if model.events.shape[-1] != 1:
            raise ValueError("ChangePointScore needs a 1-D (time) model: model has d = "
                             f"{model.events.shape[-1]}")
        if not 0 < hazard < 1:
            raise ValueError(f"hazard must be in (0, 1), got {hazard!r}")
        if not (isinstance(lag, int) and lag >= 0):
            raise ValueError(f"lag must be a non-negative integer, got {lag!r}")
        if isinstance(num_samples, bool) or not (isinstance(num_samples, int) and num_samples >= 1):
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        with torch.no_grad():
            times = model.bounds[0] + (model.bounds[1] - model.bounds[0]) * model.cells  # T x 1
            mean, _, root = model.latent_moments(times)
            gen = torch.Generator().manual_seed(seed)
            z = torch.randn(num_samples, root.shape[-1], generator=gen, dtype=mean.dtype).to(mean.device)
            paths = links.kappa(model.link, mean + z @ root.mT, model.scale)  # S x T
            score = bocpd_change_probability(paths, hazard, lag).mean(0)  # T
        self.register_buffer("times", times[:, 0])
        self.register_buffer("score", score)

    @t_batch_mode_transform()
    def forward(self, X: Tensor) -> Tensor:
        t = X[..., 0]
        pos = ((t - self.times[0]) / (self.times[1] - self.times[0])).clamp(0, len(self.times) - 1)
        lo = pos.floor().long().clamp_max(len(self.times) - 2)
        frac = pos - lo
        value = self.score[lo] * (1 - frac) + self.score[lo + 1] * frac
        return value.amax(-1)


def bocpd_change_probability(paths: Tensor, hazard: float, lag: int) -> Tensor:
    """Adams–MacKay run-length recursion for each row of ``paths`` (``S x T``, standardised per row), with a
    Normal-Gamma prior (mean 0, kappa 1, alpha 1, beta 1): ``out[s, t]`` is the probability that a segment
    starts at ``t`` given ``paths[s, :t + lag + 1]`` (the last ``lag`` cells use the data to the end; 0 at
    ``t = 0``, where the first segment starts).

    :return: ``S x T``.
    """
    S, T = paths.shape
    y = (paths - paths.mean(-1, keepdim=True)) / paths.std(-1, keepdim=True).clamp_min(1e-12)
    dtype, device = y.dtype, y.device
    log_r = torch.zeros(S, 1, dtype=dtype, device=device)  # log P(run length | data), run lengths 0..t
    mu = torch.zeros(S, 1, dtype=dtype, device=device)
    kappa = torch.ones(S, 1, dtype=dtype, device=device)
    alpha = torch.ones(S, 1, dtype=dtype, device=device)
    beta = torch.ones(S, 1, dtype=dtype, device=device)
    history = []
    for t in range(T):
        x = y[:, t : t + 1]
        nu = 2 * alpha
        scale2 = beta * (kappa + 1) / (alpha * kappa)
        log_pred = (
            torch.lgamma((nu + 1) / 2) - torch.lgamma(nu / 2) - 0.5 * torch.log(math.pi * nu * scale2)
            - (nu + 1) / 2 * torch.log1p((x - mu) ** 2 / (nu * scale2))
        )
        joint = log_r + log_pred
        grow = joint + math.log(1 - hazard)
        change = torch.logsumexp(joint, -1, keepdim=True) + math.log(hazard)
        log_r = torch.cat([change, grow], -1)
        log_r = log_r - torch.logsumexp(log_r, -1, keepdim=True)
        history.append(log_r)
        # run length r + 1 extends run length r by x; run length 0 restarts from the prior
        beta = torch.cat([torch.ones(S, 1, dtype=dtype, device=device), beta + kappa * (x - mu) ** 2 / (2 * (kappa + 1))], -1)
        mu = torch.cat([torch.zeros(S, 1, dtype=dtype, device=device), (kappa * mu + x) / (kappa + 1)], -1)
        kappa = torch.cat([torch.ones(S, 1, dtype=dtype, device=device), kappa + 1], -1)
        alpha = torch.cat([torch.ones(S, 1, dtype=dtype, device=device), alpha + 0.5], -1)
    out = torch.zeros(S, T, dtype=dtype, device=device)
    for s in range(1, T):  # the first cell starts the first segment: no change there
        t = min(s + lag, T - 1)
        k = t - s + 1  # after x_t, run length k covers x_s .. x_t
        out[:, s] = history[t][:, k].exp() if k < history[t].shape[-1] else 0.0
    return out
