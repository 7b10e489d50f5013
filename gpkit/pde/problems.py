"""PDE problems on boxes with Dirichlet boundary data: Poisson, Allen–Cahn, advection, or any residual."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

Derivatives = dict[tuple[int, ...], Tensor]


def _check_bounds(bounds) -> Tensor:
    bounds = torch.as_tensor(bounds, dtype=torch.float64) if not torch.is_tensor(bounds) else bounds
    if bounds.dim() != 2 or bounds.shape[0] != 2 or bounds.shape[1] < 1:
        raise ValueError(f"bounds must be a 2 x d tensor (lower; upper), got shape {tuple(bounds.shape)}.")
    if not torch.isfinite(bounds).all():
        raise ValueError("bounds must be finite.")
    if not (bounds[0] < bounds[1]).all():
        raise ValueError(f"bounds must have lower < upper in every dimension, got {bounds.tolist()}.")
    return bounds


def autodiff_derivatives(
    u: Callable[[Tensor], Tensor], X: Tensor, keys: Sequence[tuple[int, ...]]
) -> Derivatives:
    """
    Derivatives of a differentiable function by autodiff (for manufactured solutions).

    :param u: Function mapping ``n x d`` inputs to ``n`` values.
    :param X: Inputs, shape ``(n, d)``.
    :param keys: Derivatives to return, as tuples of dimension indices (``()`` is ``u``, ``(0, 0)`` is
        :math:`u_{x_0 x_0}`, ``(1,)`` is :math:`u_{x_1}`); at most second order.
    :return: ``{key: tensor of shape (n,)}``.
    """
    X = X.detach().requires_grad_(True)
    out: Derivatives = {}

    def grad(y: Tensor, **kw) -> Tensor:  # zero where y does not depend on X (linear or constant u)
        if not y.requires_grad:
            return torch.zeros_like(X)
        g = torch.autograd.grad(y.sum(), X, allow_unused=True, **kw)[0]
        return torch.zeros_like(X) if g is None else g

    with torch.enable_grad():
        value = u(X)
        if not torch.is_tensor(value) or value.shape != X.shape[:-1]:
            raise ValueError(f"u must map an n x d tensor to n values, got shape {getattr(value, 'shape', None)}.")
        first = None
        for key in keys:
            if len(key) > 2:
                raise ValueError(f"derivatives up to second order are supported, got {key}.")
            if len(key) == 0:
                out[key] = value.detach()
                continue
            if first is None:
                first = grad(value, create_graph=True)
            if len(key) == 1:
                out[key] = first[:, key[0]].detach()
            else:
                out[key] = grad(first[:, key[0]], retain_graph=True)[:, key[1]].detach()
    return out


class PDEProblem:
    r"""
    A PDE :math:`\mathcal{L}[u](x) = f(x)` on the box ``bounds`` with :math:`u = g` on its boundary.

    The operator is written pointwise from :math:`u` and its derivatives, so the same code serves the
    grid solver (tensors of grid values) and :meth:`from_solution` (autodiff of a known solution).

    :param operator: ``operator(derivs, X) -> Tensor`` with ``derivs[key]`` the field of the derivative
        ``key`` (a tuple of dimension indices, see :func:`autodiff_derivatives`) and ``X`` the points,
        shape ``(*points, d)``; returns :math:`\mathcal{L}[u]` with shape ``points``.
    :param derivatives: Keys that ``operator`` reads.
    :param source: :math:`f`, maps ``n x d`` points to ``n`` values.
    :param boundary: :math:`g`, maps ``n x d`` boundary points to ``n`` values.
    :param bounds: ``2 x d`` box, lower row then upper row.
    :param solution: Optional exact solution (for evaluation only; never used by the solver).
    :param boundary_weight: :math:`\lambda_b`, weight of the boundary likelihood in the solver.
    """

    boundary_weight: float = 200.0

    def __init__(
        self,
        operator: Callable[[Derivatives, Tensor], Tensor],
        derivatives: Sequence[tuple[int, ...]],
        source: Callable[[Tensor], Tensor],
        boundary: Callable[[Tensor], Tensor],
        bounds,
        solution: Callable[[Tensor], Tensor] | None = None,
        boundary_weight: float | None = None,
    ):
        self.bounds = _check_bounds(bounds)
        for name, fn in (("operator", operator), ("source", source), ("boundary", boundary)):
            if not callable(fn):
                raise TypeError(f"{name} must be callable, got {type(fn).__name__}.")
        self._operator = operator
        self.derivatives = tuple(tuple(int(i) for i in k) for k in derivatives)
        for key in self.derivatives:
            if any(i < 0 or i >= self.dim for i in key) or len(key) > 2:
                raise ValueError(f"derivative key {key} is invalid for a {self.dim}-D problem.")
        self.source, self.boundary, self.solution = source, boundary, solution
        if boundary_weight is not None:
            self.boundary_weight = float(boundary_weight)

    @property
    def dim(self) -> int:
        return self.bounds.shape[-1]

    def operator(self, derivs: Derivatives, X: Tensor) -> Tensor:
        r""":math:`\mathcal{L}[u]` from the fields in ``derivs``."""
        return self._operator(derivs, X)

    def residual(self, derivs: Derivatives, X: Tensor, f: Tensor) -> Tensor:
        r"""PDE residual :math:`\mathcal{L}[u] - f`."""
        return self.operator(derivs, X) - f

    @classmethod
    def from_solution(cls, u: Callable[[Tensor], Tensor], bounds, operator=None, derivatives=(), **kwargs):
        r"""
        Manufactured problem from a known solution ``u``: the source is :math:`\mathcal{L}[u]` by autodiff and
        the boundary data is ``u`` itself. The generic class also needs ``operator`` and ``derivatives``.
        """
        return cls._manufacture(cls(operator, derivatives, u, u, bounds, **kwargs), u)

    @classmethod
    def _manufacture(cls, problem: PDEProblem, u: Callable[[Tensor], Tensor]) -> PDEProblem:
        def source(X: Tensor) -> Tensor:
            return problem.operator(autodiff_derivatives(u, X, problem.derivatives), X)

        problem.source, problem.boundary, problem.solution = source, u, u
        return problem

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim}, bounds={self.bounds.tolist()})"


def _laplacian(derivs: Derivatives, dim: int) -> Tensor:
    return sum(derivs[(i, i)] for i in range(dim))


class Poisson(PDEProblem):
    r"""
    Poisson equation :math:`\sum_i u_{x_i x_i} = f` with Dirichlet data :math:`g`.

    Example:
        >>> problem = Poisson.from_solution(lambda X: torch.sin(100 * X[:, 0]), bounds=[[0.0], [6.2832]])
    """

    def __init__(self, source, boundary, bounds, solution=None, boundary_weight=None):
        d = _check_bounds(bounds).shape[-1]
        super().__init__(
            lambda derivs, X: _laplacian(derivs, d),
            [(i, i) for i in range(d)],
            source,
            boundary,
            bounds,
            solution,
            boundary_weight,
        )

    @classmethod
    def from_solution(cls, u: Callable[[Tensor], Tensor], bounds, **kwargs) -> Poisson:
        """Manufactured problem: :math:`f = \\Delta u` by autodiff, :math:`g = u`."""
        return cls._manufacture(cls(u, u, bounds, **kwargs), u)


class AllenCahn(PDEProblem):
    r"""Allen–Cahn equation :math:`\epsilon \sum_i u_{x_i x_i} + u(u^2 - 1) = f` (default :math:`\epsilon = 1`)."""

    def __init__(self, source, boundary, bounds, solution=None, diffusion: float = 1.0, boundary_weight=None):
        d = _check_bounds(bounds).shape[-1]
        self.diffusion = float(diffusion)
        super().__init__(
            lambda derivs, X: self.diffusion * _laplacian(derivs, d) + derivs[()] * (derivs[()] ** 2 - 1),
            [()] + [(i, i) for i in range(d)],
            source,
            boundary,
            bounds,
            solution,
            boundary_weight,
        )

    @classmethod
    def from_solution(cls, u: Callable[[Tensor], Tensor], bounds, **kwargs) -> AllenCahn:
        return cls._manufacture(cls(u, u, bounds, **kwargs), u)


class Advection(PDEProblem):
    r"""
    Linear advection :math:`\sum_i c_i u_{x_i} = f` (default :math:`200 u_x + u_y = 0`, with
    :math:`y` the time-like coordinate) with Dirichlet data on the boundary of the box.
    """

    boundary_weight = 500.0

    def __init__(
        self,
        source,
        boundary,
        bounds,
        solution=None,
        velocity: Sequence[float] = (200.0, 1.0),
        boundary_weight=None,
    ):
        d = _check_bounds(bounds).shape[-1]
        if len(velocity) != d:
            raise ValueError(f"velocity must have {d} entries (one per dimension), got {len(velocity)}.")
        self.velocity = tuple(float(c) for c in velocity)
        if source is None:
            source = lambda X: torch.zeros(X.shape[:-1], dtype=X.dtype, device=X.device)
        super().__init__(
            lambda derivs, X: sum(c * derivs[(i,)] for i, c in enumerate(self.velocity)),
            [(i,) for i in range(d)],
            source,
            boundary,
            bounds,
            solution,
            boundary_weight,
        )

    @classmethod
    def from_solution(cls, u: Callable[[Tensor], Tensor], bounds, **kwargs) -> Advection:
        return cls._manufacture(cls(u, u, bounds, **kwargs), u)
