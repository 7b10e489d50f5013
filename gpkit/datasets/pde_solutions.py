"""Manufactured PDE solutions of the GP-HM benchmarks (Fang et al., ICLR 2024)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .dataset import Dataset

TWO_PI = 2 * math.pi


@dataclass(frozen=True)
class PDESolution:
    """A manufactured solution ``u`` with its domain and the reference solver settings.

    :param name: key in :data:`PDE_SOLUTIONS`.
    :param u: callable ``X (n x d) -> (n,)`` built from torch ops (differentiable by autograd).
    :param bounds: ``2 x d`` domain box (lower row, upper row).
    :param pde: ``"poisson"`` (u_xx (+ u_yy) = f), ``"allen-cahn"`` (Laplacian u + u(u^2 - 1) = f)
        or ``"advection"`` (200 u_x + u_y = 0).
    :param grid_size: collocation points per dimension in the reference.
    :param max_frequency: upper end F of the spectral-mixture frequency initialisation (cycles per unit).
    :param formula: the solution as text.
    """

    name: str
    u: Callable[[Tensor], Tensor]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    pde: str
    grid_size: int
    max_frequency: float
    formula: str

    @property
    def dim(self) -> int:
        return len(self.lower)

    def bounds(self, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
        return torch.tensor([self.lower, self.upper], dtype=dtype, device=device)

    def grid(self, grid_size: int | None = None, dtype: torch.dtype = torch.float64) -> Tensor:
        """Uniform grid (boundary included) of ``grid_size`` points per dimension, ``N^d x d``."""
        m = grid_size or self.grid_size
        axes = [torch.linspace(lo, hi, m, dtype=dtype) for lo, hi in zip(self.lower, self.upper)]
        return torch.cartesian_prod(*axes).reshape(-1, self.dim)


def _multiscale(z: Tensor) -> Tensor:
    return torch.sin(z) + 0.1 * torch.sin(20 * z) + torch.cos(100 * z)


_S = PDESolution
#: The test problems of the GP-HM paper (table in shared/specs/gphm_pde.md) plus two low-frequency ones.
PDE_SOLUTIONS: dict[str, PDESolution] = {
    s.name: s
    for s in [
        _S(
            "poisson1d-sin100",
            lambda X: torch.sin(100 * X[:, 0]),
            (0.0,),
            (TWO_PI,),
            "poisson",
            400,
            20.0,
            "sin(100x)",
        ),
        _S(
            "poisson1d-multiscale",
            lambda X: torch.sin(X[:, 0]) + 0.1 * torch.sin(20 * X[:, 0]) + 0.05 * torch.sin(100 * X[:, 0]),
            (0.0,),
            (1.0,),
            "poisson",
            900,
            30.0,
            "sin x + 0.1 sin 20x + 0.05 sin 100x",
        ),
        _S(
            "poisson1d-sin6cos100",
            lambda X: torch.sin(6 * X[:, 0]) * torch.cos(100 * X[:, 0]),
            (0.0,),
            (TWO_PI,),
            "poisson",
            400,
            20.0,
            "sin(6x) cos(100x)",
        ),
        _S(
            "poisson1d-xsin200",
            lambda X: X[:, 0] * torch.sin(200 * X[:, 0]),
            (0.0,),
            (TWO_PI,),
            "poisson",
            900,
            50.0,
            "x sin(200x)",
        ),
        _S(
            "poisson1d-sin500",
            lambda X: torch.sin(500 * X[:, 0]) - 2 * (X[:, 0] - 0.5) ** 2,
            (0.0,),
            (1.0,),
            "poisson",
            400,
            100.0,
            "sin(500x) - 2(x - 0.5)^2",
        ),
        _S(
            "allencahn1d-sin100",
            lambda X: torch.sin(100 * X[:, 0]),
            (0.0,),
            (TWO_PI,),
            "allen-cahn",
            400,
            20.0,
            "sin(100x)",
        ),
        _S(
            "allencahn1d-sin6cos100",
            lambda X: torch.sin(6 * X[:, 0]) * torch.cos(100 * X[:, 0]),
            (0.0,),
            (TWO_PI,),
            "allen-cahn",
            400,
            20.0,
            "sin(6x) cos(100x)",
        ),
        _S(
            "poisson2d-sin100",
            lambda X: torch.sin(100 * X[:, 0]) * torch.sin(100 * X[:, 1]),
            (0.0, 0.0),
            (TWO_PI, TWO_PI),
            "poisson",
            400,
            20.0,
            "sin(100x) sin(100y)",
        ),
        _S(
            "poisson2d-sin6cos20",
            lambda X: (
                torch.sin(6 * X[:, 0]) * torch.cos(20 * X[:, 0])
                + torch.sin(6 * X[:, 1]) * torch.cos(20 * X[:, 1])
            ),
            (0.0, 0.0),
            (TWO_PI, TWO_PI),
            "poisson",
            200,
            20.0,
            "sin(6x) cos(20x) + sin(6y) cos(20y)",
        ),
        _S(
            "allencahn2d-multiscale",
            lambda X: _multiscale(X[:, 0]) * _multiscale(X[:, 1]),
            (0.0, 0.0),
            (1.0, 1.0),
            "allen-cahn",
            400,
            30.0,
            "prod_z (sin z + 0.1 sin 20z + cos 100z)",
        ),
        _S(
            "advection-sin",
            lambda X: torch.sin(X[:, 0] - 200 * X[:, 1]),
            (0.0, 0.0),
            (1.0, 1.0),
            "advection",
            200,
            40.0,
            "sin(x - 200y)",
        ),
        # low-frequency problems for quick tests (not in the paper)
        _S(
            "poisson1d-lowfreq",
            lambda X: torch.sin(2 * math.pi * X[:, 0]),
            (0.0,),
            (1.0,),
            "poisson",
            64,
            4.0,
            "sin(2 pi x)",
        ),
        _S(
            "poisson2d-lowfreq",
            lambda X: torch.sin(math.pi * X[:, 0]) * torch.sin(2 * math.pi * X[:, 1]),
            (0.0, 0.0),
            (1.0, 1.0),
            "poisson",
            32,
            4.0,
            "sin(pi x) sin(2 pi y)",
        ),
    ]
}


def pde_solution(name: str) -> PDESolution:
    """The manufactured solution ``name`` (see :data:`PDE_SOLUTIONS`)."""
    if name not in PDE_SOLUTIONS:
        raise ValueError(f"unknown PDE solution {name!r}; choose from {sorted(PDE_SOLUTIONS)}")
    return PDE_SOLUTIONS[name]


def load_pde(
    name: str, split: int = 0, dtype: torch.dtype = torch.float64, grid_size: int | None = None
) -> Dataset:
    """A manufactured solution evaluated on its reference grid.

    ``X`` is the uniform grid (``grid_size`` per dimension, boundary included), ``y = u(X)``.
    ``extras``: ``solution`` (:class:`PDESolution`), ``u``, ``bounds`` (``2 x d``), ``pde``,
    ``grid_size``, ``max_frequency``. Build the problem with ``gpkit.pde.<PDE>.from_solution(u, bounds)``.
    """
    sol = pde_solution(name)
    X = sol.grid(grid_size, dtype)
    with torch.no_grad():
        y = sol.u(X)
    extras = {
        "solution": sol,
        "u": sol.u,
        "bounds": sol.bounds(dtype),
        "pde": sol.pde,
        "grid_size": grid_size or sol.grid_size,
        "max_frequency": sol.max_frequency,
    }
    desc = f"Manufactured {sol.pde} solution u = {sol.formula} on {sol.lower}..{sol.upper} (GP-HM benchmark)."
    return Dataset(f"pde-{name}", X, y, {}, extras, desc)
