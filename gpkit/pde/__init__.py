"""GP-HM: Gaussian-process PDE solvers with Kronecker structure on grids (high-frequency and multi-scale)."""

from .dense import dense_negative_log_joint
from .problems import Advection, AllenCahn, PDEProblem, Poisson, autodiff_derivatives
from .solver import KroneckerPDESolver

__all__ = [
    "Advection",
    "AllenCahn",
    "KroneckerPDESolver",
    "PDEProblem",
    "Poisson",
    "autodiff_derivatives",
    "dense_negative_log_joint",
]
