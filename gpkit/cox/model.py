r"""Gaussian Cox process: events from a Poisson process with intensity :math:`\lambda(x) = \kappa(g(x))`,
:math:`g \sim GP(m, k)`, fitted by a deterministic Laplace approximation.

Inputs are mapped to the unit cube internally. The latent GP is represented by Nyström features on a
regular grid of landmarks :math:`u`: :math:`g(x) = m + k(x, u) T v` with :math:`v \sim N(0, I_r)` (``T`` from
the eigenpairs of :math:`K_{uu}`), so every Newton step costs :math:`O(n r^2)`.

* ``link="quadratic"`` (:math:`\lambda = a g^2`, Mei et al. 2024, Flaxman et al. 2017): the change of
  kernel absorbs the integral :math:`a\int g^2` (a Riemann sum over the observed grid cells) into the prior,
  :math:`\tilde k = \sum_i \eta_i / (2 a \eta_i + 1) \phi_i \phi_i` with Nyström eigenpairs; the remaining
  likelihood sits at the events only, and :math:`\tilde K_{XX}` is a ``LowRankRootLinearOperator``.
* ``link="exp"`` / ``"softplus"``: binned counts on the grid, :math:`\sum_j y_j \log\kappa(g_j) - \Delta
  \kappa(g_j)` over the observed cells.

The MAP of ``v`` is found by Newton's method (convex in ``v``: on the positive branch for the quadratic link);
the Laplace posterior covariance is :math:`\Phi H^{-1} \Phi^T` with :math:`H = I + \Phi^T W \Phi`, which equals
the stable form :math:`K - K W^{1/2} B^{-1} W^{1/2} K` by Woodbury. Kernel hyperparameters (and the mean)
maximise the Laplace marginal likelihood; :func:`gpkit.fit` runs L-BFGS on :meth:`loss`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import gpytorch
import torch
from botorch.models.model import Model
from botorch.posteriors.gpytorch import GPyTorchPosterior
from gpytorch.constraints import GreaterThan
from gpytorch.distributions import MultivariateNormal
from linear_operator.operators import (
    DiagLinearOperator,
    LowRankRootAddedDiagLinearOperator,
    LowRankRootLinearOperator,
)
from torch import Tensor

from gpkit.cox import links
from gpkit.cox.geometry import box_nodes, check_bounds, check_events, regular_grid
from gpkit.laplace import newton_minimize

__all__ = ["ExpectedCount", "GaussianCoxProcess"]

_DEFAULT_GRID = {1: 200, 2: 64, 3: 20}
_DEFAULT_LANDMARKS = {1: 128, 2: 16, 3: 6}


class ExpectedCount(NamedTuple):
    """Posterior mean and standard deviation of the number of events in a region."""

    mean: Tensor
    std: Tensor


class _State(NamedTuple):
    transform: Tensor  # r x r: features phi(x) = k(x, u) @ transform
    mean: Tensor  # scalar prior mean of g
    w: Tensor  # r, posterior mode of the weights
    chol: Tensor  # r x r, Cholesky factor of H = I + Phi^T W Phi


class GaussianCoxProcess(Model):
    r"""Gaussian Cox process with a Laplace posterior, a BoTorch model of the latent :math:`g`.

    :param events: ``n x d`` event locations (``d`` = 1, 2 or 3: time, space or space-time).
    :param bounds: ``2 x d`` observation box (lower row < upper row).
    :param grid_size: cells per dimension of the integration grid (int or ``d`` ints); default 200 / 64 / 20
        for d = 1 / 2 / 3.
    :param link: ``"quadratic"`` (change of kernel at the events), ``"exp"`` or ``"softplus"`` (binned counts).
    :param num_landmarks: Nyström landmarks per dimension (default ``min(grid_size, 128 / 16 / 6)``); equal to
        ``grid_size`` it is the exact grid model.
    :param covar_module: kernel of ``g`` on the unit cube (default scaled RBF with ARD lengthscales >= one
        landmark spacing).
    :param windows: ``k x 2 x d`` boxes where events were observed (default: all of ``bounds``); the intensity
        integral runs over grid cells whose centre lies in a window.
    :param observed: optional ``points (m x d) -> bool (m)``: grid cells (by their centre, ``bounds``
        coordinates) outside it are unobserved, e.g. a polygonal window.
    :param scale: ``a`` in ``lambda = a kappa(g)`` (per unit-cube volume; default: the mean rate of the events
        over the observed windows, so that ``g`` is of order one for every link).
    """

    num_outputs = 1
    _num_outputs = 1

    def __init__(
        self,
        events: Tensor,
        bounds: Tensor,
        grid_size: int | tuple[int, ...] | None = None,
        link: str = "quadratic",
        num_landmarks: int | tuple[int, ...] | None = None,
        covar_module: gpytorch.kernels.Kernel | None = None,
        windows: Tensor | None = None,
        observed: Callable[[Tensor], Tensor] | None = None,
        scale: float | None = None,
    ) -> None:
        super().__init__()
        self.link = links.check_link(link)
        events, bounds = check_events(events, bounds)
        n, d = events.shape
        grid = self._sizes(grid_size, d, _DEFAULT_GRID[d], "grid_size")
        default_marks = tuple(min(g, _DEFAULT_LANDMARKS[d]) for g in grid)
        marks = self._sizes(num_landmarks, d, default_marks, "num_landmarks")
        if any(m > g for m, g in zip(marks, grid)):
            raise ValueError(f"num_landmarks {marks} must not exceed grid_size {grid}")
        if scale is not None and (isinstance(scale, bool) or not (isinstance(scale, float | int) and scale > 0)):
            raise ValueError(f"scale must be a positive number, got {scale!r}")
        self.grid_size, self.num_landmarks = grid, marks
        tkw = {"dtype": events.dtype, "device": events.device}
        self.register_buffer("events", events)
        self.register_buffer("bounds", bounds)
        self.register_buffer("cells", regular_grid(grid, **tkw))  # m x d, unit-cube cell centres
        self.register_buffer("landmarks", regular_grid(marks, **tkw))  # r x d
        unit = self.to_unit(events)
        observed_fn = observed
        observed = torch.ones(self.cells.shape[0], dtype=torch.bool, device=events.device)
        if windows is not None:
            windows = torch.as_tensor(windows, **tkw)
            if windows.dim() == 2:
                windows = windows.unsqueeze(0)
            if windows.dim() != 3 or windows.shape[-2:] != (2, d):
                raise ValueError(f"windows must be k x 2 x {d} boxes, got shape {tuple(windows.shape)}")
            if not torch.isfinite(windows).all():
                raise ValueError("windows contains NaN or inf")
            if (windows[:, 0] > windows[:, 1]).any():
                raise ValueError("windows must have lower <= upper in every box and column (row 0 lower, row 1 upper)")
            lo, hi = self.to_unit(windows[:, 0]), self.to_unit(windows[:, 1])  # k x d
            c = self.cells.unsqueeze(1)
            observed = ((c >= lo) & (c <= hi)).all(-1).any(-1)
            ev = unit.unsqueeze(1)
            if not ((ev >= lo - 1e-9) & (ev <= hi + 1e-9)).all(-1).any(-1).all():
                raise ValueError("events: every event must lie in one of the observed windows")
            if not observed.any():
                raise ValueError("windows cover no grid cell; use a finer grid_size or larger windows")
        if observed_fn is not None:  # e.g. a polygonal window: gpkit.cox.polygon_contains
            inside = observed_fn(self.bounds[0] + (self.bounds[1] - self.bounds[0]) * self.cells)
            if not isinstance(inside, Tensor) or inside.shape != observed.shape:
                raise ValueError(f"observed must map m x {d} points to m booleans, got {type(inside).__name__}")
            observed = observed & inside.to(torch.bool)
            if not observed.any():
                raise ValueError("observed excludes every grid cell")
        self.register_buffer("observed", observed)
        self.cell_volume = 1.0 / self.cells.shape[0]
        self.register_buffer("counts", self._bin(unit))  # m
        observed_volume = self.cell_volume * float(observed.sum())
        if covar_module is None:
            spacing = 1.0 / max(marks)  # below the landmark spacing the Nyström features ripple
            base = gpytorch.kernels.RBFKernel(ard_num_dims=d, lengthscale_constraint=GreaterThan(spacing)).to(**tkw)
            base.lengthscale = max(0.1, 2 * spacing)  # set in the events' dtype: the same start whatever the default
            covar_module = gpytorch.kernels.ScaleKernel(base)
        self.covar_module = covar_module.to(**tkw)
        # a: the mean rate (events per unit-cube volume), so that g is O(1) for every link
        self.scale = float(scale) if scale is not None else n / observed_volume
        if self.link == "quadratic":
            self.mean_module = None
        else:
            self.mean_module = gpytorch.means.ConstantMean().to(**tkw)
            init = links.inverse_kappa(self.link, torch.tensor(1.0, **tkw))
            self.mean_module.constant.data.fill_(float(init))
        self.fit_defaults = {"optimizer": "lbfgs", "lr": 1.0, "max_iter": 100, "tol": 1e-7, "patience": 3}
        self._cache: tuple[tuple, _State] | None = None
        self._warm: Tensor | None = None  # r, last mode as landmark coefficients (basis independent)

    # ------------------------------------------------------------------------------------------ helpers
    @staticmethod
    def _sizes(value, d: int, default, name: str) -> tuple[int, ...]:
        if value is None:
            value = default
        if isinstance(value, int):
            sizes = (value,) * d
        elif isinstance(value, tuple | list):
            sizes = tuple(value)
        else:
            raise ValueError(f"{name} must be an int >= 2 or {d} such ints, got {value!r}")
        if len(sizes) != d or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 2 for s in sizes):
            raise ValueError(f"{name} must be an int >= 2 or {d} such ints, got {value!r}")
        return sizes

    def to_unit(self, X: Tensor) -> Tensor:
        """Map points from the ``bounds`` box to the unit cube."""
        return (X - self.bounds[0]) / (self.bounds[1] - self.bounds[0])

    @property
    def volume(self) -> float:
        """Volume of the ``bounds`` box (the unit-cube intensity divided by it is the intensity)."""
        return float((self.bounds[1] - self.bounds[0]).prod())

    def _bin(self, unit: Tensor) -> Tensor:
        sizes = torch.tensor(self.grid_size, device=unit.device)
        idx = (unit * sizes).long().clamp_max(sizes - 1)  # n x d
        flat = torch.zeros(unit.shape[0], dtype=torch.long, device=unit.device)
        for j in range(unit.shape[1]):  # row-major, as cartesian_prod orders the cells
            flat = flat * self.grid_size[j] + idx[:, j]
        return torch.bincount(flat, minlength=self.cells.shape[0]).to(unit.dtype)

    @property
    def batch_shape(self) -> torch.Size:
        return torch.Size()

    def _prior_mean(self) -> Tensor:
        if self.mean_module is None:
            return torch.zeros((), dtype=self.events.dtype, device=self.events.device)
        return self.mean_module.constant.reshape(())

    def _transform(self) -> tuple[Tensor, Tensor]:
        """``T`` (``r x r``, features ``k(x, u) T``) and the log normaliser the change of kernel moves out.

        Nyström: ``T = L^-T`` with ``K_uu + jitter = L L^T``. Quadratic link: the integral ``a int g^2`` over the
        observed cells is ``v^T G v`` with ``G = Delta Phi_g^T Phi_g``; absorbing it gives the prior precision
        ``P = I + 2 a G = M M^T`` and ``T = L^-T M^-T`` (the changed kernel; with landmarks = grid it is
        ``sum_i eta_i / (2 a eta_i + 1) phi_i phi_i``), normaliser ``-1/2 log det P``. Cholesky factors keep the
        hyperparameter gradients finite (an eigendecomposition's are not at clustered eigenvalues).
        """
        Kuu = self.covar_module(self.landmarks).to_dense()
        eye = torch.eye(Kuu.shape[-1], dtype=Kuu.dtype, device=Kuu.device)
        jitter = (1e-8 if Kuu.dtype == torch.float64 else 1e-5) * Kuu.diagonal().mean()
        L = torch.linalg.cholesky(Kuu + jitter * eye)
        T = torch.linalg.solve_triangular(L, eye, upper=False).mT  # L^-T
        lognorm = torch.zeros((), dtype=Kuu.dtype, device=Kuu.device)
        if self.link == "quadratic":
            Phi = self.covar_module(self.cells[self.observed], self.landmarks).to_dense() @ T
            P = eye + 2 * self.scale * self.cell_volume * (Phi.mT @ Phi)
            M = torch.linalg.cholesky(P)
            T = torch.linalg.solve_triangular(M, T.mT, upper=False).mT  # L^-T M^-T
            lognorm = -M.diagonal().log().sum()
        return T, lognorm

    def _observations(self) -> Tensor:
        """Points where the likelihood has terms: the events (quadratic) or the observed grid cells."""
        if self.link == "quadratic":
            return self.to_unit(self.events)
        return self.cells[self.observed]

    def _objective(self, Phi: Tensor, c: Tensor):
        """Negative log posterior of the weights ``v`` (up to constants) with derivatives. For the quadratic
        link it is taken on the branch ``g > 0`` at every event (convex there, infinite outside): the posterior
        is symmetric under ``g -> -g``, and this branch gives one deterministic mode."""
        link, y, dv, a = self.link, self.counts[self.observed], self.cell_volume, self.scale

        def objective(v: Tensor, derivatives: bool):
            g = c + Phi @ v
            if link == "quadratic":
                if (g <= 0).any():
                    return torch.tensor(math.inf, dtype=g.dtype, device=g.device), None, None
                lk, d1, d2 = links.log_kappa_derivatives(link, g)
                value, grad_g, w = -lk.sum(), -d1, -d2
            else:
                lk, l1, l2 = links.log_kappa_derivatives(link, g)
                k0, k1, k2 = links.kappa_derivatives(link, g)
                value = -(y * lk).sum() + a * dv * k0.sum()
                grad_g, w = -y * l1 + a * dv * k1, -y * l2 + a * dv * k2
            value = value + 0.5 * v @ v
            if not derivatives:
                return value, None, None
            grad = Phi.mT @ grad_g + v
            hess = Phi.mT @ (w.unsqueeze(-1) * Phi)
            hess.diagonal().add_(1.0)
            return value, grad, hess

        return objective

    def _start(self, Phi: Tensor, T: Tensor, c: Tensor) -> Tensor:
        r = T.shape[0]
        if self._warm is not None:
            v = torch.linalg.solve(T, self._warm)
            if self.link != "quadratic" or bool((Phi @ v > 0).all()):
                return v
        if self.link != "quadratic":
            return torch.zeros(r, dtype=T.dtype, device=T.device)
        # ridge fits of g to the constant 1 (the mean rate), positive wherever the features can follow it
        target = torch.ones(Phi.shape[0], dtype=T.dtype, device=T.device)
        gram = Phi.mT @ Phi
        eye = torch.eye(r, dtype=T.dtype, device=T.device)
        for ridge in (1e-6, 1e-4, 1e-2, 1.0, 100.0):
            v = torch.linalg.solve(gram + ridge * float(gram.diagonal().mean()) * eye, Phi.mT @ target)
            if bool((Phi @ v > 0).all()):
                return v
        raise RuntimeError(
            "GaussianCoxProcess: no start with g > 0 at every event for the quadratic link at these "
            "hyperparameters; use more num_landmarks or a longer lengthscale"
        )

    def _solve(self, T: Tensor, c: Tensor, Phi: Tensor | None = None):
        """Newton MAP of ``v`` (no autograd) given the features ``Phi`` of the observation points."""
        with torch.no_grad():
            if Phi is None:
                Phi = self.covar_module(self._observations(), self.landmarks).to_dense() @ T
            tol = 1e-14 if T.dtype == torch.float64 else 1e-7
            result = newton_minimize(self._objective(Phi, c), self._start(Phi, T, c), max_iter=200, tol=tol)
            self._warm = T @ result.x
        return result

    # ------------------------------------------------------------------------------- training objective
    def log_marginal_likelihood(self) -> Tensor:
        """Laplace approximation of the log marginal likelihood of the events (unit-cube coordinates, up to
        ``n log volume``); differentiable in the hyperparameters (implicit gradient through the mode)."""
        T, lognorm = self._transform()
        c = self._prior_mean()
        Phi = self.covar_module(self._observations(), self.landmarks).to_dense() @ T
        result = self._solve(T.detach(), c.detach(), Phi.detach())
        objective = self._objective(Phi, c)
        _, grad, _ = objective(result.x, True)
        # one Newton step from the (detached) mode: value unchanged, gradient = total derivative
        v = result.x - torch.cholesky_solve(grad.unsqueeze(-1), result.chol).squeeze(-1)
        value, _, hess = objective(v, True)
        logdet = 2 * torch.linalg.cholesky(hess).diagonal().log().sum()
        const = self.events.shape[0] * math.log(self.scale)
        if self.link == "quadratic":
            const += math.log(2.0)  # the two sign-symmetric modes
        return -value - 0.5 * logdet + lognorm + const

    def loss(self) -> Tensor:
        """Negative Laplace log marginal likelihood per event (what :func:`gpkit.fit` minimises)."""
        self._cache = None
        try:
            return -self.log_marginal_likelihood() / self.events.shape[0]
        except (torch.linalg.LinAlgError, RuntimeError, ValueError):
            # a line-search trial at extreme hyperparameters (overflowing kernel, no feasible start): a large
            # finite loss with zero gradient makes L-BFGS shorten the step instead of aborting the fit
            self._warm = None
            return 1e10 + sum(0.0 * p.sum() for p in self.parameters())

    def train(self, mode: bool = True):
        self._cache = None
        return super().train(mode)

    # ---------------------------------------------------------------------------------------- posterior
    def _fingerprint(self) -> tuple:
        return tuple((p.data_ptr(), p._version) for p in self.parameters())

    def state(self) -> _State:
        """The Laplace posterior at the current hyperparameters (cached until they change)."""
        key = self._fingerprint()
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                T, _ = self._transform()
                c = self._prior_mean()
                result = self._solve(T, c)
            if not result.converged:
                raise RuntimeError("the Newton solve for the MAP did not converge")
            self._cache = (key, _State(T, c, result.x, result.chol))
        return self._cache[1]

    def features(self, X: Tensor) -> Tensor:
        """Feature matrix ``phi(X)`` (``... x q x r``) of ``X`` in the ``bounds`` coordinates."""
        s = self.state()
        return self.covar_module(self.to_unit(X), self.landmarks).to_dense() @ s.transform

    def latent_moments(self, X: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Posterior mean (``... x q``), variance and covariance root (``... x q x r``) of ``g`` at ``X``."""
        self._check_X(X)
        X = X.to(self.events)
        s = self.state()
        Phi = self.features(X)
        mean = s.mean + Phi @ s.w
        root = torch.linalg.solve_triangular(s.chol, Phi.mT, upper=False).mT  # Phi L^-T
        return mean, root.pow(2).sum(-1), root

    def _check_X(self, X: Tensor) -> None:
        if not isinstance(X, Tensor):
            raise TypeError(f"X must be a tensor, got {type(X).__name__}")
        if X.dim() < 2 or X.shape[-1] != self.events.shape[-1]:
            raise ValueError(f"X must be ... x q x {self.events.shape[-1]}, got shape {tuple(X.shape)}")
        if not torch.isfinite(X).all():
            raise ValueError("X contains NaN or inf")

    def posterior(self, X: Tensor, output_indices=None, observation_noise=False, posterior_transform=None, **kwargs):
        """BoTorch posterior of the latent ``g`` at ``X`` (``... x q x d``, ``bounds`` coordinates)."""
        mean, var, root = self.latent_moments(X)
        jitter = DiagLinearOperator(torch.full_like(mean, 1e-10 * float(var.max().clamp_min(1e-30)) if var.numel() else 1e-10))
        covar = LowRankRootAddedDiagLinearOperator(LowRankRootLinearOperator(root), jitter)
        posterior = GPyTorchPosterior(MultivariateNormal(mean, covar))
        if posterior_transform is not None:
            return posterior_transform(posterior)
        return posterior

    def change_of_kernel(self, X: Tensor) -> LowRankRootLinearOperator:
        """The prior covariance of ``g`` at ``X`` as a ``LowRankRootLinearOperator`` (for the quadratic link the
        changed kernel :math:`\\tilde K_{XX}`)."""
        return LowRankRootLinearOperator(self.features(X))

    @torch.no_grad()
    def intensity(self, X: Tensor, level: float = 0.95) -> tuple[Tensor, Tensor, Tensor]:
        """Posterior mean and equal-tailed ``level`` credible band of the intensity (events per unit volume of
        the ``bounds`` coordinates) at ``X`` (``... x d``)."""
        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1), got {level!r}")
        if not isinstance(X, Tensor):
            raise TypeError(f"X must be a tensor, got {type(X).__name__}")
        X2 = X if X.dim() >= 2 else X.unsqueeze(-1)
        mean, var, _ = self.latent_moments(X2)
        std = var.clamp_min(1e-30).sqrt()
        lam, _ = links.intensity_moments(self.link, mean, var, self.scale)
        tail = (1 - level) / 2
        if self.link == "quadratic":
            from scipy.stats import ncx2

            nc = (mean**2 / std**2).detach().cpu().numpy()
            lo = ncx2.ppf(tail, 1, nc) * (self.scale * var).detach().cpu().numpy()
            hi = ncx2.ppf(1 - tail, 1, nc) * (self.scale * var).detach().cpu().numpy()
            lower, upper = torch.as_tensor(lo).to(mean), torch.as_tensor(hi).to(mean)
        else:
            z = math.sqrt(2) * torch.erfinv(torch.tensor(1 - 2 * tail, dtype=mean.dtype)).item()
            lower = links.kappa(self.link, mean - z * std, self.scale)
            upper = links.kappa(self.link, mean + z * std, self.scale)
        v = self.volume
        return lam / v, lower / v, upper / v

    def window_integral(self, region: Tensor, nodes_per_dim: int | None = None):
        """Quadrature of ``Lambda_R``: nodes (``... x p x d``) and weights (``... x p``, volumes in the
        ``bounds`` coordinates) for boxes ``region`` (``... x 2 x d``), clipped to ``bounds``."""
        return box_nodes(region, self.bounds, nodes_per_dim)

    @torch.no_grad()
    def expected_count(self, region_bounds: Tensor | None = None, num_samples: int = 2048) -> ExpectedCount:
        """Posterior mean and standard deviation of the number of events in the box ``region_bounds``
        (``2 x d``, default ``bounds``). Exact moments for the quadratic link, seeded Monte Carlo otherwise."""
        region = self.bounds if region_bounds is None else torch.as_tensor(region_bounds).to(self.bounds)
        check_bounds(region, self.events.shape[1], "region_bounds")
        d = self.events.shape[1]
        share = ((region[1] - region[0]) / (self.bounds[1] - self.bounds[0])).clamp(max=1.0)
        k = max(math.ceil(2 * g * float(f)) for g, f in zip(self.grid_size, share))  # twice the grid density
        k = max(min(k, int(20000 ** (1 / d))), 8)
        nodes, weights = self.window_integral(region, k)
        mean, var, root = self.latent_moments(nodes)
        dens_mean, _ = links.intensity_moments(self.link, mean, var, self.scale)
        w = weights / self.volume  # the unit-cube intensity times the box volume
        total = (w * dens_mean).sum()
        if self.link == "quadratic":
            A = root.mT @ (w.unsqueeze(-1) * root)  # sum_ij w_i w_j C_ij^2 = ||R^T diag(w) R||_F^2
            b = root.mT @ (w * mean)
            variance = self.scale**2 * (2 * A.pow(2).sum() + 4 * b.pow(2).sum())
        else:
            gen = torch.Generator(device="cpu").manual_seed(0)
            z = torch.randn(num_samples, root.shape[-1], generator=gen, dtype=mean.dtype).to(mean.device)
            draws = (links.kappa(self.link, mean + z @ root.mT, self.scale) * w).sum(-1)
            variance = draws.var()
        return ExpectedCount(total, variance.clamp_min(0).sqrt())
