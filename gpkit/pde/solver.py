"""GP-HM: a Gaussian-process PDE solver with Kronecker structure on a grid (Fang et al., ICLR 2024)."""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Sequence

import torch
from linear_operator.utils.errors import NotPSDError
from torch import Tensor

from ..kernels import (
    Matern52DerivativeKernel,
    RBFDerivativeKernel,
    SpectralMixtureDerivativeKernel,
    StationaryDerivativeKernel,
    StudentTMixtureDerivativeKernel,
)
from ..operators.kronecker_grid import KroneckerCholesky, mode_product
from .collocation import KroneckerSumSolver, gauss_newton_collocation, newton_collocation
from .problems import PDEProblem

_KERNELS = ("gm", "student-t", "se", "matern")


def _per_dim(value, d: int, name: str) -> list:
    values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value] * d
    if len(values) != d:
        raise ValueError(f"{name} must be a scalar or have {d} entries (one per dimension), got {len(values)}.")
    return values


def _rms(x: Tensor) -> float:
    return float(x.pow(2).mean().sqrt()) if x.numel() else 0.0


class KroneckerPDESolver(torch.nn.Module):
    r"""
    Solve a PDE with a GP prior on a grid: the grid values :math:`U` are free parameters with prior
    :math:`\operatorname{vec}(U) \sim \mathcal{N}(0, K_1 \otimes \cdots \otimes K_D)`, derivatives are GP
    conditional means (:math:`u_{x_i x_i} = U \times_i K_i'' K_i^{-1}`), and training minimises the negative
    log joint (:meth:`loss`) over :math:`U`, the kernel parameters and the precisions :math:`\tau, v`.

    ``gpkit.fit(solver)`` runs the whole method: Adam on the joint (lr 1e-2, cosine schedule, 1000 iterations),
    then the residual-only finish :meth:`finish` (collocation with the learned kernel: the
    :math:`\tau, v \to \infty` limit of the joint with the kernel fixed), which ``fit`` calls as the
    ``finish`` hook of :class:`~gpkit.training.FitHooks` once Adam ends.

    Internally the box is mapped to :math:`[0, 1]^D` and ``U`` is stored in units of a solution scale, so the
    defaults behave the same on problems of any size; the kernels live on the unit box
    (``kernels[i]`` frequencies are cycles per domain width).

    Example:
        >>> problem = Poisson.from_solution(lambda X: torch.sin(100 * X[:, 0]), torch.tensor([[0.0], [2 * math.pi]]))
        >>> solver = gpkit.fit(KroneckerPDESolver(problem, 400, max_frequency=20.0))
        >>> u, std = solver.predict(torch.rand(100, 1) * 2 * math.pi, return_std=True)

    All algebra is per Kronecker factor: an iteration costs :math:`O(\sum_i N_i^3 + N \sum_i N_i)` for
    :math:`N = \prod_i N_i` grid points, never :math:`O(N^3)`.

    :param problem: A :class:`~gpkit.pde.PDEProblem` (``Poisson``, ``AllenCahn``, ``Advection``, ...).
    :param grid_size: Points per dimension (int or one per dimension), at least 3.
    :param num_components: Mixture components ``Q`` per dimension (``"gm"``/``"student-t"``).
    :param max_frequency: Highest initial frequency in cycles per unit of the problem's coordinates (scalar or
        per dimension); must exceed the solution's top frequency. Default: half the grid's Nyquist frequency.
    :param kernel: ``"gm"`` (spectral mixture), ``"student-t"`` (Matérn-5/2 × cosine mixture), ``"se"``,
        ``"matern"``, or a :class:`~gpkit.kernels.StationaryDerivativeKernel` (copied per dimension; it acts
        on coordinates scaled to [0, 1]).
    :param jitter: Added to each factor's diagonal (default 1e-9 in float64, 1e-5 in float32).
    :param residual_tol: :meth:`should_stop` stops Adam once the relative residual falls below this.
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
        if not isinstance(num_components, int) or isinstance(num_components, bool) or num_components < 1:
            raise ValueError(f"num_components must be a positive int, got {num_components!r}.")
        if not (isinstance(kernel, StationaryDerivativeKernel) or kernel in _KERNELS):
            raise ValueError(f"kernel must be one of {_KERNELS} or a StationaryDerivativeKernel, got {kernel!r}.")
        self.problem = problem
        d = problem.dim
        bounds = problem.bounds.to(dtype)
        sizes = _per_dim(grid_size, d, "grid_size")
        if not all(isinstance(n, int) and n >= 3 for n in sizes):
            raise ValueError(f"grid_size must be integers >= 3, got {sizes}.")
        self.sizes = tuple(sizes)
        self.widths = (bounds[1] - bounds[0]).tolist()
        self.spacings = [1.0 / (n - 1) for n in sizes]  # on the unit box
        nyquist = [(n - 1) / (2 * w) for w, n in zip(self.widths, sizes)]
        if max_frequency is None:
            max_frequency = [0.5 * f for f in nyquist]
        freqs = _per_dim(max_frequency, d, "max_frequency")
        if not all(isinstance(f, int | float) and f > 0 and math.isfinite(f) for f in freqs):
            raise ValueError(f"max_frequency must be positive and finite, got {freqs}.")
        for i, (f, fn) in enumerate(zip(freqs, nyquist)):
            if f >= fn:
                warnings.warn(
                    f"grid too coarse for max_frequency in dimension {i}: max_frequency={f:g} cycles per unit is "
                    f"at or above the grid's Nyquist frequency (grid_size - 1) / (2 * width) = {fn:g}; "
                    f"frequencies above Nyquist alias on the grid. Use grid_size >= "
                    f"{math.ceil(2 * f * self.widths[i]) + 2}.",
                    UserWarning,
                    stacklevel=2,
                )
        self.max_frequency = [float(f) for f in freqs]
        if jitter is None:
            jitter = 1e-9 if dtype == torch.float64 else 1e-5
        self.jitter, self.residual_tol, self.patience = float(jitter), float(residual_tol), patience
        self.kernels = torch.nn.ModuleList(
            [self._make_kernel(kernel, num_components, f * w).to(dtype) for f, w in zip(freqs, self.widths)]
        )

        grids = [torch.linspace(lo, hi, n, dtype=dtype) for lo, hi, n in zip(bounds[0], bounds[1], sizes)]
        for i, g in enumerate(grids):
            self.register_buffer(f"grid_{i}", g)
        X = torch.stack(torch.meshgrid(*grids, indexing="ij"), dim=-1)  # shape: (N_1, ..., N_D, d)
        self.register_buffer("grid_points", X)
        self.register_buffer("lower", bounds[0].clone())
        with torch.no_grad():
            self.register_buffer("source_values", problem.source(X.reshape(-1, d)).reshape(self.sizes).to(dtype))
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
        # whitened grid values in solution units: U = u_scale * (L_1 ⊗ ... ⊗ L_D) W, prior quadratic form ||W||^2
        self.W = torch.nn.Parameter(torch.zeros(self.sizes, dtype=dtype))
        self.log_tau = torch.nn.Parameter(torch.zeros((), dtype=dtype))
        self.log_v = torch.nn.Parameter(torch.zeros((), dtype=dtype))
        self.u_scale, self.r_scale = 1.0, 1.0
        self._set_scales()
        self._best = (math.inf, 0)
        self.finish_info: dict = {}

    @staticmethod
    def _make_kernel(kernel, num_components: int, max_frequency: float) -> StationaryDerivativeKernel:
        """A kernel on the unit interval; ``max_frequency`` in cycles per domain width."""
        if isinstance(kernel, StationaryDerivativeKernel):
            return copy.deepcopy(kernel)
        if kernel in ("gm", "student-t"):
            # envelopes as in the reference code on [0, 2 pi]: s = 1 there, i.e. (2 pi)^2 (GM) or 2 pi (Student-t)
            # on the unit box
            if kernel == "gm":
                k, s = SpectralMixtureDerivativeKernel(num_components, max_frequency), (2 * math.pi) ** 2
            else:
                k, s = StudentTMixtureDerivativeKernel(num_components, max_frequency), 2 * math.pi
            with torch.no_grad():
                k.log_scales.fill_(math.log(s))
            return k
        k = RBFDerivativeKernel() if kernel == "se" else Matern52DerivativeKernel()
        k.lengthscale = 1.0 / (2 * math.pi * max_frequency)  # resolves the top frequency
        return k

    @torch.no_grad()
    def _set_scales(self) -> None:
        """Solution and residual scales from the boundary data and the linearised collocation solve at U = 0
        with the initial kernel (only the scales are kept; the grid values start at zero)."""
        g = _rms(self.boundary_values)
        try:
            U, _ = self._collocation(max_steps=1)
            estimate = _rms(U)
            fields = self.grid_derivatives(U)  # u_scale is still 1 here
        except (RuntimeError, ValueError, NotPSDError):  # no usable estimate: fall back to the data
            estimate, fields = 0.0, {}
        self.u_scale = max(g, estimate) or 1.0
        terms = [_rms(f) for k, f in fields.items() if k in self.problem.derivatives]
        self.r_scale = max([_rms(self.source_values)] + terms) or 1.0

    @property
    def fit_defaults(self) -> dict:
        return {"max_iter": 1000, "lr": 1e-2, "schedule": "cosine", "tol": 0.0}

    # ------------------------------------------------------------------------------------- algebra
    def factorization(self) -> KroneckerCholesky:
        """Cholesky factors of the grid covariance :math:`K_1 \\otimes \\cdots \\otimes K_D` (with jitter)."""
        factors = [k.grid_covariance(n, h, 0) for k, n, h in zip(self.kernels, self.sizes, self.spacings)]
        return KroneckerCholesky(factors, jitter=self.jitter)

    def _chains(self) -> dict:
        """``{key: [(mode, order), ...]}``: the modes each field acts on (the value: every mode, order 0)."""
        keys = ((),) + tuple(k for k in self.problem.derivatives if k != ())
        return {key: [(i, key.count(i)) for i in sorted(set(key))] for key in keys}

    def derivative_operators(self, chol: KroneckerCholesky | None = None) -> dict:
        r"""
        Per-mode operators of the value and of every derivative the problem needs, at the grid points:
        ``{key: [(mode, A), ...]}`` with :math:`A = k_i^{(o)} K_i^{-1} / w_i^{o}` (cross covariance without
        jitter) along the modes the derivative acts on (order :math:`o`) and identity along the others, as in the
        paper (:math:`(K_1'' \otimes K_2)(K_1 \otimes K_2)^{-1} = K_1'' K_1^{-1} \otimes I`); the value (key
        ``()``) is ``U``. Boundary data are matched by :meth:`boundary_field`.
        """
        chol = self.factorization() if chol is None else chol
        mats: dict[tuple[int, int], Tensor] = {}
        ops = {}
        for key, chain in self._chains().items():
            for i, order in chain:
                if (i, order) not in mats:
                    cross = self.kernels[i].grid_covariance(self.sizes[i], self.spacings[i], order)
                    mats[(i, order)] = chol.conditional_operator(cross, i) / self.widths[i] ** order
            ops[key] = [(i, mats[(i, order)]) for i, order in chain]
        return ops

    def grid_derivatives(self, U: Tensor | None = None, chol: KroneckerCholesky | None = None, ops=None) -> dict:
        """
        The value (key ``()``) and the derivatives the problem needs, at the grid points, in the problem's units
        (see :meth:`derivative_operators`).

        :param U: Grid values in solution units (default: the current ones).
        :param ops: Precomputed :meth:`derivative_operators` (otherwise solves along each mode, cheaper once).
        :return: ``{key: tensor of shape grid_size}`` (keys as in :func:`gpkit.pde.problems.autodiff_derivatives`).
        """
        chol = self.factorization() if chol is None else chol
        U = chol.unwhiten(self.W) if U is None else U
        out = {}
        if ops is not None:
            for key, chain in ops.items():
                field = U
                for i, A in chain:
                    field = mode_product(field, A, i)
                out[key] = self.u_scale * field
            return out
        crosses: dict[tuple[int, int], Tensor] = {}
        for key, chain in self._chains().items():
            field = U
            for i, order in chain:
                if (i, order) not in crosses:
                    crosses[(i, order)] = self.kernels[i].grid_covariance(self.sizes[i], self.spacings[i], order)
                field = chol.apply_conditional(field, crosses[(i, order)], i) / self.widths[i] ** order
            out[key] = self.u_scale * field
        return out

    @property
    def U(self) -> Tensor:
        """Grid values of the solution, shape ``grid_size``."""
        with torch.no_grad():
            return self.u_scale * self.factorization().unwhiten(self.W)

    def boundary_field(self, U: Tensor, chol: KroneckerCholesky) -> Tensor:
        r"""
        ``U`` with each boundary face replaced by the GP conditional mean there along the face's normal mode,
        :math:`U \times_i (K_i K_{i,\text{jitter}}^{-1})_{\{0, N_i - 1\}}` (the value :meth:`predict` gives in 1-D;
        corners from the first mode). Only its boundary entries are used.
        """
        out = U
        for i in reversed(range(self.problem.dim)):
            n = self.sizes[i]
            K = self.kernels[i].grid_covariance(n, self.spacings[i], 0)[[0, n - 1]]  # shape: (2, N_i)
            faces = chol.apply_conditional(U, K, i)  # shape: U with N_i -> 2
            index = [slice(None)] * self.problem.dim
            index[i] = [0, n - 1]
            out = out.clone()
            out[tuple(index)] = faces
        return out

    def _terms(self) -> tuple[Tensor, Tensor, KroneckerCholesky]:
        """Scaled residual, scaled boundary misfit and the factorisation."""
        chol = self.factorization()
        U = chol.unwhiten(self.W)
        fields = self.grid_derivatives(U, chol)
        r = self.problem.residual(fields, self.grid_points, self.source_values)
        b = self.boundary_field(U, chol)[self.boundary_mask] - self.boundary_values / self.u_scale
        return r / self.r_scale, b, chol

    def loss(self) -> Tensor:
        r"""
        Negative log joint (up to constants), in scaled units,

        .. math::
            \tfrac12 \log|K| + \tfrac12 \operatorname{vec}(U)^\top K^{-1} \operatorname{vec}(U)
            - \lambda_b \big[\tfrac{N_b}{2}\log\tau - \tfrac\tau2 \textstyle\sum_b (U_b - g_b)^2\big]
            - \big[\tfrac{N_c}{2}\log v - \tfrac v2 \textstyle\sum_c r_c^2\big],

        with the PDE residual :math:`r` at every grid point and :math:`\log|K| = \sum_i (N/N_i)\log|K_i|`.
        No side effects. NaN when a kernel factor is numerically not positive definite (``gpkit.fit`` then
        restores the last good parameters and raises ``FloatingPointError``).
        """
        try:
            r, b, chol = self._terms()
        except NotPSDError:
            return torch.full((), math.nan, dtype=self.W.dtype, device=self.W.device)
        prior = 0.5 * chol.logdet() + 0.5 * self.W.pow(2).sum()
        n_b, n_c = b.numel(), r.numel()
        tau, v = self.log_tau.exp(), self.log_v.exp()
        boundary = -self.problem.boundary_weight * (0.5 * n_b * self.log_tau - 0.5 * tau * b.pow(2).sum())
        residual = -(0.5 * n_c * self.log_v - 0.5 * v * r.pow(2).sum())
        return prior + boundary + residual

    @torch.no_grad()
    def relative_residuals(self) -> tuple[float, float]:
        """``(relative PDE residual on the grid, relative boundary misfit)`` of the current grid values."""
        chol = self.factorization()
        fields = self.grid_derivatives(chol.unwhiten(self.W), chol)
        r = self.problem.residual(fields, self.grid_points, self.source_values)
        b = self.u_scale * self.boundary_field(chol.unwhiten(self.W), chol)[self.boundary_mask] - self.boundary_values
        return _rms(r) / self._operator_scale(fields, self.source_values), _rms(b) / self.u_scale

    def _operator_scale(self, fields: dict, f: Tensor) -> float:
        """Scale of the PDE's terms: the source, each field, or the solution scale over the width^order."""
        order = max(len(k) for k in self.problem.derivatives)
        terms = [_rms(v) for k, v in fields.items() if k in self.problem.derivatives]
        return max(_rms(f), *terms, self.u_scale / min(self.widths) ** order)

    def should_stop(self, state) -> bool:
        """
        Residual-only stopping rule for Adam (never looks at the exact solution), checked every 25 iterations:
        stop once both the relative PDE residual and the relative boundary misfit are below ``residual_tol``, or
        when the larger of the two has not improved by 1% for ``patience`` iterations.
        """
        if state.iteration % 25:
            return False
        rel = max(self.relative_residuals())
        if rel < 0.99 * self._best[0]:
            self._best = (rel, state.iteration)
        if rel <= self.residual_tol:
            return True
        return self.patience is not None and state.iteration - self._best[1] >= self.patience

    # ------------------------------------------------------------------------------------- finish
    def _range_basis(self) -> list[Tensor]:
        """Per factor, the eigenvectors of :math:`K_i` (without jitter) whose eigenvalues exceed the jitter: the
        grid functions the kernel can represent (all of them for a well-conditioned factor)."""
        basis = []
        for k, n, h in zip(self.kernels, self.sizes, self.spacings):
            lam, Q = torch.linalg.eigh(k.grid_covariance(n, h, 0))
            basis.append(Q[:, lam > self.jitter])
        return basis

    def _collocation(self, max_steps: int = 30, max_jacobian: int = 30_000_000) -> tuple[Tensor, dict]:
        """Newton collocation from the current grid values (solution units); for a rank-deficient kernel also
        Gauss-Newton in the kernel's numerical range (when its dense Jacobian has at most ``max_jacobian``
        entries), the one with the lower midpoint residual kept; returns ``(U, info)``."""
        problem, X, d, mask = self.problem, self.grid_points, self.problem.dim, self.boundary_mask
        chol = self.factorization()
        ops = self.derivative_operators(chol)
        G = torch.zeros_like(self.source_values).masked_scatter(mask, self.boundary_values / self.u_scale)
        inner = (slice(1, -1),) * d

        def equations(U: Tensor) -> Tensor:
            fields = self.grid_derivatives(U, chol, ops)
            E = problem.residual(fields, X, self.source_values) / self.r_scale
            return torch.where(mask, self.boundary_field(U, chol) - G, E)

        # constant-coefficient part: the pure derivative terms (identity along the other modes) and the value
        pure = {key: chain[0] for key, chain in ops.items() if key and len(chain) == 1}  # key -> (mode, A)

        def preconditioner(U: Tensor):
            fields = self.grid_derivatives(U, chol, ops)
            coef = {}
            for key in [k for k in ops if k in pure or (k == () and () in problem.derivatives)]:
                # pointwise d operator / d fields[key], averaged over the interior
                tangent = {k: torch.zeros_like(v) for k, v in fields.items()}
                tangent[key] = torch.ones_like(fields[key])
                c = torch.func.jvp(lambda f: problem.operator(f, X), (fields,), (tangent,))[1][inner].mean()
                coef[key] = float(c) * self.u_scale / self.r_scale
            mats = [torch.zeros(n - 2, n - 2, dtype=U.dtype, device=U.device) for n in self.sizes]
            for key, (i, A) in pure.items():
                mats[i] = mats[i] + coef.get(key, 0.0) * A[1:-1, 1:-1]
            solver = KroneckerSumSolver(mats, coef.get((), 0.0))

            def apply(y: Tensor) -> Tensor:
                x = torch.where(mask, y, torch.zeros_like(y))  # boundary rows: value = misfit (P ~ I)
                coupling = coef.get((), 0.0) * x
                for key, (i, A) in pure.items():
                    coupling = coupling + coef.get(key, 0.0) * mode_product(x, A, i)
                x[inner] = solver((y - coupling)[inner])
                return x

            return apply

        U0 = chol.unwhiten(self.W).detach().clone()
        # Newton on the full grid; a step whose GMRES solve is far from exact ends it (an ill-posed system)
        U, info = newton_collocation(equations, U0, preconditioner, max_steps=max_steps, max_linear_residual=0.1)
        info["method"] = "newton"
        basis = self._range_basis()
        m = math.prod(Q.shape[1] for Q in basis)
        if m == U0.numel() or m * U0.numel() > max_jacobian:  # full rank, or a Jacobian too large to form
            if info["inexact"]:  # no alternative: Newton goes on with inexact directions
                U, more = newton_collocation(equations, U, preconditioner, max_steps=max_steps - info["steps"])
                more["steps"] += info["steps"]
                more["linear_residual"] = max(more["linear_residual"], info["linear_residual"])
                info = {**info, **more, "inexact": True}
            return U, info

        def expand(C: Tensor) -> Tensor:
            for i, Q in enumerate(basis):
                C = mode_product(C, Q, i)
            return C

        C0 = U0
        for i, Q in enumerate(basis):
            C0 = mode_product(C0, Q.mT, i)
        U_gn, info_gn = gauss_newton_collocation(equations, C0, expand, max_steps=max_steps)
        info_gn = {**info_gn, "method": "gauss-newton", "basis_size": m}
        # Gauss-Newton is a least-squares solve in a truncated range and can miss the grid equations (e.g. the
        # boundary data of a linear solution): it is kept when it meets them (largest scaled equation <= 1e-3, or
        # no worse than Newton) with the lower residual between grid points; neither check uses a solution
        mid, mid_gn = self.midpoint_residual(U), self.midpoint_residual(U_gn)
        info["midpoint_residual"], info_gn["midpoint_residual"] = mid, mid_gn
        meets_grid = info_gn["residual"] <= max(1e-3, info["residual"])
        if meets_grid and mid_gn < mid:
            return U_gn, {**info_gn, "newton": info}
        return U, {**info, "gauss_newton": info_gn}

    @torch.no_grad()
    def finish(self, max_steps: int = 30) -> KroneckerPDESolver:
        r"""
        Residual-only finish with the kernel fixed: set the grid values to the collocation solution (boundary
        values equal to the data, zero PDE residual at every interior grid point), the :math:`\tau, v \to \infty`
        limit of minimising the joint over :math:`U`. Newton's method; each linear system is solved by GMRES
        preconditioned with the Kronecker-sum inverse of its constant-coefficient part (exact for linear PDEs
        with constant coefficients, e.g. Poisson and advection). Then :math:`\tau, v` take their closed-form
        optima. ``gpkit.fit`` calls it after Adam (the ``finish`` hook).

        A learned kernel is often numerically rank deficient on the grid (its spectrum concentrates on a few
        frequencies: factor eigenvalues below the jitter). The square collocation system is then ill-posed on
        the grid functions the kernel cannot represent: GMRES cannot solve Newton's linear systems, or Newton
        meets the grid equations with wrong values (for Allen-Cahn those modes obey :math:`u^3 - u = f`, which has
        several roots). For such a kernel the finish also solves the same equations by Gauss-Newton in the
        least-squares sense over the kernel's numerical range (the tensor product of each factor's eigenvectors
        with eigenvalues above the jitter; dense Jacobian, at most 3e7 entries) from the same start, and keeps
        Gauss-Newton's solution if it meets the grid equations (largest scaled equation at most 1e-3, or no
        worse than Newton's) with the lower residual between grid points, else Newton's (Newton stops before a
        step whose GMRES solve leaves a relative residual above 0.1; its iterate there is the candidate). A
        full-rank kernel, or one whose reduced Jacobian would be larger, uses Newton alone (as before).
        ``finish_info["method"]`` says which was kept (``"newton"`` or ``"gauss-newton"``, with
        ``basis_size``), the other's info is under ``"gauss_newton"`` / ``"newton"``.

        Collocation with a kernel that does not resolve the solution can meet the grid equations with wrong
        values between (and even at) the grid points, so the finish checks the relative PDE residual between
        grid points (:meth:`midpoint_residual`, which uses no solution): when the collocation solution's is larger
        than the current grid values', the current values are kept and a warning says so. Sets ``finish_info``
        (``method``, its ``steps``, final grid ``residual`` (largest scaled equation), ``converged``, and for
        Newton its largest relative GMRES residual ``linear_residual`` and ``inexact``; ``midpoint_residual``,
        ``midpoint_residual_before``, ``kept``: ``"collocation"`` or ``"adam"``); also warns when the kept solution
        is not resolved between grid points.

        :param max_steps: Newton (and Gauss-Newton) steps at most.
        :return: ``self``.
        """
        before = self.midpoint_residual() if bool(self.W.any()) else math.inf
        U, info = self._collocation(max_steps)
        W_before = self.W.detach().clone()
        chol = self.factorization()
        self.W.copy_(chol.whiten(U))
        after = self.midpoint_residual()
        info["midpoint_residual_before"] = before
        if after > before:
            self.W.copy_(W_before)
            info["kept"] = "adam"
            warnings.warn(
                f"the collocation finish raised the PDE residual between grid points from {before:.2g} to "
                f"{after:.2g} (relative): it was not applied, the Adam iterate is kept. The kernel does not resolve "
                "the solution on this grid; use a finer grid or more Adam iterations.",
                UserWarning,
                stacklevel=3,
            )
        else:
            info["kept"] = "collocation"
        r, b, _ = self._terms()
        if info["kept"] == "collocation":  # closed-form precisions, floored so that an exact fit stays finite
            self.log_tau.fill_(-math.log(max(float(b.pow(2).mean()), 1e-20)))
            self.log_v.fill_(-math.log(max(float(r.pow(2).mean()), 1e-20)))
        info["midpoint_residual"] = min(before, after)
        self.finish_info = info
        if info["midpoint_residual"] > 0.1:
            warnings.warn(
                f"the PDE residual between grid points is {info['midpoint_residual']:.2g} (relative) after the "
                "collocation finish: the grid or the kernel does not resolve the solution; use a finer grid, a "
                "higher max_frequency or more Adam iterations.",
                UserWarning,
                stacklevel=3,
            )
        return self

    @torch.no_grad()
    def midpoint_residual(self, U: Tensor | None = None) -> float:
        """Relative PDE residual of the GP conditional mean at the midpoints between grid points (a check that
        uses only the residual: small on the grid but large here means the grid values are not resolved).

        :param U: Grid values in solution units (default: the current ones)."""
        d, chol = self.problem.dim, self.factorization()
        mids = [(g[1:] + g[:-1]) / 2 for g in (getattr(self, f"grid_{i}") for i in range(d))]
        U = chol.unwhiten(self.W) if U is None else U
        fields = {}
        for key in self.problem.derivatives:
            field = U  # mode by mode with C_i K_i^{-1} (not K^{-1} U first: see KroneckerCholesky.predict_points)
            for i in range(d):
                t = (mids[i] - self.lower[i]) / self.widths[i]
                grid_t = torch.linspace(0, 1, self.sizes[i], dtype=t.dtype, device=t.device)
                order = key.count(i)
                cross = self.kernels[i].derivative_covariance(t, grid_t, order1=order)
                field = mode_product(field, chol.conditional_operator(cross / self.widths[i] ** order, i), i)
            fields[key] = self.u_scale * field
        Xm = torch.stack(torch.meshgrid(*mids, indexing="ij"), dim=-1)
        f = self.problem.source(Xm.reshape(-1, d)).reshape(Xm.shape[:-1]).to(U)
        r = self.problem.residual(fields, Xm, f)
        return _rms(r) / self._operator_scale(fields, f)

    # ------------------------------------------------------------------------------------- prediction
    def _crosses(self, X: Tensor) -> list[Tensor]:
        out = []
        for i, k in enumerate(self.kernels):
            t = (X[:, i] - self.lower[i]) / self.widths[i]
            grid_t = torch.linspace(0, 1, self.sizes[i], dtype=t.dtype, device=t.device)
            out.append(k.derivative_covariance(t, grid_t))  # shape: (n, N_i)
        return out

    @torch.no_grad()
    def predict(self, X: Tensor, return_std: bool = False, max_dense: int = 2500):
        r"""
        Off-grid prediction :math:`u(X) = \sum_a \prod_i k_i(x_i, \text{grid}_i) [K^{-1}U]_a`.

        :param X: Points, shape ``(n, d)``.
        :param return_std: Also return the posterior standard deviation of :math:`u(X)` under the Laplace
            (Gauss–Newton) approximation of the joint at the current parameters: the GP prior on the grid,
            the boundary likelihood (precision :math:`\lambda_b\tau`) and the residual likelihood (precision
            :math:`v`), plus the interpolation variance between grid points. Dense in the grid size; grids with
            more than ``max_dense`` points raise ``ValueError``.
        :return: Mean, shape ``(n,)`` (and the standard deviation, shape ``(n,)``).
        """
        d = self.problem.dim
        if not torch.is_tensor(X) or X.dim() != 2 or X.shape[-1] != d:
            raise ValueError(f"X must be an n x {d} tensor, got {getattr(X, 'shape', type(X))}.")
        if not torch.isfinite(X).all():
            raise ValueError("X contains NaN/inf.")
        X = X.to(self.W)
        chol = self.factorization()
        crosses = self._crosses(X)
        mean = self.u_scale * chol.predict_points(chol.unwhiten(self.W), crosses)
        if not return_std:
            return mean
        N = self.W.numel()
        if N > max_dense:
            raise ValueError(f"return_std=True forms dense N x N matrices; the grid has {N} > max_dense={max_dense} points.")
        # a[:, j] = L^{-1} k(x*, grid) (whitened cross-covariance), built mode by mode
        n = X.shape[0]
        A = torch.ones(n, 1, dtype=X.dtype, device=X.device)
        for c, L in zip(crosses, chol.cholesky):
            w = torch.linalg.solve_triangular(L, c.mT, upper=False).mT  # shape: (n, N_i)
            A = (A.unsqueeze(-1) * w.unsqueeze(1)).reshape(n, -1)
        zero = torch.zeros(1, dtype=X.dtype, device=X.device)
        prior_var = math.prod(float(k.derivative_covariance(zero, zero)) for k in self.kernels)  # stationary

        def stacked(W: Tensor) -> Tensor:
            U = chol.unwhiten(W)
            r = self.problem.residual(self.grid_derivatives(U, chol), self.grid_points, self.source_values)
            b = self.boundary_field(U, chol)[self.boundary_mask] - self.boundary_values / self.u_scale
            return torch.cat([b * (self.problem.boundary_weight * self.log_tau.exp()).sqrt(),
                              (r / self.r_scale).reshape(-1) * self.log_v.exp().sqrt()])

        J = torch.func.jacrev(stacked)(self.W.detach()).reshape(-1, N)
        # posterior covariance of W: (I + J^T J)^{-1} = V diag(1 / (1 + s^2)) V^T from the SVD of J
        _, s, Vh = torch.linalg.svd(J, full_matrices=False)
        proj = A @ Vh.mT  # shape: (n, N)
        var = prior_var - A.pow(2).sum(-1) + (proj.pow(2) / (1 + s.pow(2))).sum(-1)
        return mean, self.u_scale * var.clamp_min(0).sqrt()
