"""GP-HM: a Gaussian-process PDE solver with Kronecker structure on a grid (Fang et al., ICLR 2024)."""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from ..kernels import (
    Matern52DerivativeKernel,
    RBFDerivativeKernel,
    SpectralMixtureDerivativeKernel,
    StationaryDerivativeKernel,
    StudentTMixtureDerivativeKernel,
)
from ..operators.kronecker_grid import KroneckerCholesky
from .problems import PDEProblem
from .refine import ResidualFinishMixin

_KERNELS = ("gm", "student-t", "se", "matern")


def _per_dim(value, d: int, name: str) -> list:
    values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value] * d
    if len(values) != d:
        raise ValueError(
            f"{name} must be a scalar or have {d} entries (one per dimension), got {len(values)}."
        )
    return values


class KroneckerPDESolver(ResidualFinishMixin, torch.nn.Module):
    r"""
    Solve a PDE with a GP prior on a grid: the grid values :math:`U` are free parameters with prior
    :math:`\operatorname{vec}(U) \sim \mathcal{N}(0, K_1 \otimes \cdots \otimes K_D)`, derivatives are GP
    conditional means (:math:`u_{x_i x_i} = U \times_i K_i'' K_i^{-1}`), and training minimises the negative
    log joint (see :meth:`loss`) over :math:`U`, the kernel parameters and the precisions :math:`\tau, v`.

    The grid values are stored whitened, :math:`U = (L_1 \otimes \cdots \otimes L_D) W` with :math:`K_i = L_i L_i^\top`.
    After Adam (:func:`gpkit.fit`), a residual-only finish makes the final iterate accurate: :meth:`polish`
    (Gauss–Newton on :math:`W`, closed-form :math:`\tau, v`) or :meth:`solve_collocation`.

    Example:
        >>> problem = Poisson.from_solution(lambda X: torch.sin(100 * X[:, 0]), torch.tensor([[0.0], [2 * math.pi]]))
        >>> solver = KroneckerPDESolver(problem, 400, max_frequency=20.0)
        >>> gpkit.fit(solver, max_iter=800)  # Adam, lr 1e-2, cosine schedule
        >>> solver.polish(rounds=3)
        >>> u = solver.predict(torch.rand(100, 1) * 2 * math.pi)

    All algebra is per Kronecker factor: one iteration costs :math:`O(\sum_i N_i^3 + N \sum_i N_i)` for
    :math:`N = \prod_i N_i` grid points, never :math:`O(N^3)`.

    :param problem: A :class:`~gpkit.pde.PDEProblem` (``Poisson``, ``AllenCahn``, ``Advection``, ...).
    :param grid_size: Points per dimension (int or one per dimension), at least 3.
    :param num_components: Mixture components ``Q`` per dimension (``"gm"``/``"student-t"``).
    :param max_frequency: Highest initial frequency in cycles per unit (scalar or per dimension);
        must exceed the solution's top frequency. Default: half the grid's Nyquist frequency.
    :param kernel: ``"gm"`` (spectral mixture), ``"student-t"`` (Matérn-5/2 × cosine mixture), ``"se"``,
        ``"matern"``, or a :class:`~gpkit.kernels.StationaryDerivativeKernel` (copied per dimension).
    :param jitter: Added to each factor's diagonal (default 1e-9 in float64, 1e-5 in float32). Small jitter
        matters: it bounds the accuracy of the derivative operators :math:`K_i'' K_i^{-1}`.
    :param residual_tol: :meth:`should_stop` stops once the relative residual falls below this.
    :param patience: :meth:`should_stop` also stops when the best relative residual has not improved by
        1% for this many iterations (``None`` disables).
    :param dtype: Floating point type of the parameters (float64 is strongly recommended).
    """

    def __init__(
        self,
        problem: PDEProblem,
        grid_size: int | Sequence[int],
        num_components: int = 30,
        max_frequency: float | Sequence[float] | None = None,
        kernel: str | StationaryDerivativeKernel = "gm",
        jitter: float | None = None,
        residual_tol: float = 1e-9,
        patience: int | None = None,
        dtype: torch.dtype = torch.float64,
    ):
        super().__init__()
        if not isinstance(problem, PDEProblem):
            raise TypeError(f"problem must be a gpkit.pde.PDEProblem, got {type(problem).__name__}.")
        self.problem = problem
        d = problem.dim
        bounds = problem.bounds.to(dtype)
        sizes = _per_dim(grid_size, d, "grid_size")
        if not all(isinstance(n, int) and n >= 3 for n in sizes):
            raise ValueError(f"grid_size must be integers >= 3, got {sizes}.")
        self.sizes = tuple(sizes)
        widths = (bounds[1] - bounds[0]).tolist()
        self.spacings = [w / (n - 1) for w, n in zip(widths, sizes)]
        nyquist = [(n - 1) / (2 * w) for w, n in zip(widths, sizes)]
        if max_frequency is None:
            max_frequency = [0.5 * f for f in nyquist]
        freqs = [float(f) for f in _per_dim(max_frequency, d, "max_frequency")]
        if not all(f > 0 and math.isfinite(f) for f in freqs):
            raise ValueError(f"max_frequency must be positive and finite, got {freqs}.")
        for i, (f, fn) in enumerate(zip(freqs, nyquist)):
            if f >= fn:
                warnings.warn(
                    f"grid too coarse for max_frequency in dimension {i}: max_frequency={f:g} cycles per unit is "
                    f"at or above the grid's Nyquist frequency (grid_size - 1) / (2 * width) = {fn:g}; "
                    f"frequencies above Nyquist alias on the grid. Use grid_size >= {math.ceil(2 * f * widths[i]) + 2}.",
                    UserWarning,
                    stacklevel=2,
                )
        self.max_frequency = freqs
        if jitter is None:
            jitter = 1e-9 if dtype == torch.float64 else 1e-5
        self.jitter, self.residual_tol, self.patience = float(jitter), float(residual_tol), patience
        self.kernels = torch.nn.ModuleList(
            [self._make_kernel(kernel, num_components, f, h).to(dtype) for f, h in zip(freqs, self.spacings)]
        )

        grids = [torch.linspace(lo, hi, n, dtype=dtype) for lo, hi, n in zip(bounds[0], bounds[1], sizes)]
        for i, g in enumerate(grids):
            self.register_buffer(f"grid_{i}", g)
        X = torch.stack(torch.meshgrid(*grids, indexing="ij"), dim=-1)  # shape: (N_1, ..., N_D, d)
        self.register_buffer("grid_points", X)
        with torch.no_grad():
            flat = X.reshape(-1, d)
            self.register_buffer("source_values", problem.source(flat).reshape(self.sizes).to(dtype))
            edge = torch.zeros(self.sizes, dtype=torch.bool)
            for i, n in enumerate(sizes):
                index = [slice(None)] * d
                index[i] = [0, n - 1]
                edge[tuple(index)] = True
            self.register_buffer("boundary_mask", edge)
            self.register_buffer("boundary_values", problem.boundary(X[edge]).to(dtype))
        for name, value in (("source", self.source_values), ("boundary", self.boundary_values)):
            if not torch.isfinite(value).all():
                raise ValueError(f"problem.{name} returned NaN/inf on the grid.")
        # whitened grid values: U = (L_1 ⊗ ... ⊗ L_D) W, so the prior quadratic form is ||W||^2
        self.W = torch.nn.Parameter(torch.zeros(self.sizes, dtype=dtype))
        self.log_tau = torch.nn.Parameter(torch.zeros((), dtype=dtype))
        self.log_v = torch.nn.Parameter(torch.zeros((), dtype=dtype))
        self.relative_residual = self.relative_boundary_misfit = math.inf
        self._best = (math.inf, 0)

    @staticmethod
    def _make_kernel(
        kernel, num_components: int, max_frequency: float, spacing: float
    ) -> StationaryDerivativeKernel:
        if isinstance(kernel, StationaryDerivativeKernel):
            return copy.deepcopy(kernel)
        if kernel == "gm":
            return SpectralMixtureDerivativeKernel(num_components, max_frequency)
        if kernel == "student-t":
            return StudentTMixtureDerivativeKernel(num_components, max_frequency)
        if kernel in ("se", "matern"):
            k = RBFDerivativeKernel() if kernel == "se" else Matern52DerivativeKernel()
            k.lengthscale = 1.0 / (2 * math.pi * max_frequency)  # resolves the top frequency
            return k
        raise ValueError(f"kernel must be one of {_KERNELS} or a StationaryDerivativeKernel, got {kernel!r}.")

    @property
    def fit_defaults(self) -> dict:
        return {"max_iter": 1000, "lr": 1e-2, "schedule": "cosine", "tol": 0.0}

    def factorization(self) -> KroneckerCholesky:
        """Cholesky factors of the grid covariance :math:`K_1 \\otimes \\cdots \\otimes K_D` (with jitter)."""
        factors = [k.grid_covariance(n, h, 0) for k, n, h in zip(self.kernels, self.sizes, self.spacings)]
        return KroneckerCholesky(factors, jitter=self.jitter)

    def grid_derivatives(self, U: Tensor | None = None, chol: KroneckerCholesky | None = None) -> dict:
        """
        GP conditional means of the derivatives the problem needs, on the grid.

        :return: ``{key: tensor of shape grid_size}`` (keys as in :func:`gpkit.pde.problems.autodiff_derivatives`).
        """
        chol = self.factorization() if chol is None else chol
        U = chol.unwhiten(self.W) if U is None else U
        crosses: dict[tuple[int, int], Tensor] = {}
        out = {}
        for key in self.problem.derivatives:
            field = U
            for i in sorted(set(key)):
                order = key.count(i)
                if (i, order) not in crosses:
                    crosses[(i, order)] = self.kernels[i].grid_covariance(
                        self.sizes[i], self.spacings[i], order
                    )
                field = chol.apply_conditional(field, crosses[(i, order)], i)
            out[key] = field
        return out

    @property
    def U(self) -> Tensor:
        """Grid values of the solution, shape ``grid_size``."""
        return self.factorization().unwhiten(self.W)

    def loss(self) -> Tensor:
        r"""
        Negative log joint (up to constants),

        .. math::
            \tfrac12 \log|K| + \tfrac12 \operatorname{vec}(U)^\top K^{-1} \operatorname{vec}(U)
            - \lambda_b \big[\tfrac{N_b}{2}\log\tau - \tfrac\tau2 \textstyle\sum_b (U_b - g_b)^2\big]
            - \big[\tfrac{N_c}{2}\log v - \tfrac v2 \textstyle\sum_c r_c^2\big],

        with the PDE residual :math:`r` at every grid point and :math:`\log|K| = \sum_i (N/N_i)\log|K_i|`.
        """
        chol = self.factorization()
        U = chol.unwhiten(self.W)
        prior = 0.5 * chol.logdet() + 0.5 * self.W.pow(2).sum()
        derivs = self.grid_derivatives(U, chol)
        r = self.problem.residual(derivs, self.grid_points, self.source_values)
        b = U[self.boundary_mask] - self.boundary_values
        n_b, n_c = b.numel(), r.numel()
        tau, v = self.log_tau.exp(), self.log_v.exp()
        boundary = -self.problem.boundary_weight * (0.5 * n_b * self.log_tau - 0.5 * tau * b.pow(2).sum())
        residual = -(0.5 * n_c * self.log_v - 0.5 * v * r.pow(2).sum())
        with torch.no_grad():
            scale = max([self.source_values.norm()] + [f.norm() for f in derivs.values()])
            self.relative_residual = float(r.norm() / scale.clamp_min(1e-300))
            self.relative_boundary_misfit = float(b.norm() / self.boundary_values.norm().clamp_min(1e-300))
        return prior + boundary + residual

    def should_stop(self, state) -> bool:
        """
        Residual-only stopping rule (never looks at the exact solution): stop once both the relative PDE
        residual and the relative boundary misfit are below ``residual_tol``, or when the larger of the two has
        not improved by 1% for ``patience`` iterations.
        """
        rel = max(self.relative_residual, self.relative_boundary_misfit)
        if rel < 0.99 * self._best[0]:
            self._best = (rel, state.iteration)
        if rel <= self.residual_tol:
            return True
        return self.patience is not None and state.iteration - self._best[1] >= self.patience

    @torch.no_grad()
    def predict(self, X: Tensor) -> Tensor:
        r"""
        Off-grid prediction :math:`u(X) = \sum_a \prod_i k_i(x_i, \text{grid}_i) [K^{-1}U]_a`.

        :param X: Points, shape ``(n, d)``.
        :return: Predicted solution, shape ``(n,)``.
        """
        d = self.problem.dim
        if not torch.is_tensor(X) or X.dim() != 2 or X.shape[-1] != d:
            raise ValueError(f"X must be an n x {d} tensor, got {getattr(X, 'shape', type(X))}.")
        if not torch.isfinite(X).all():
            raise ValueError("X contains NaN/inf.")
        X = X.to(self.W)
        chol = self.factorization()
        crosses = [
            k.derivative_covariance(X[:, i], getattr(self, f"grid_{i}")) for i, k in enumerate(self.kernels)
        ]
        return chol.predict_points(chol.unwhiten(self.W), crosses)
