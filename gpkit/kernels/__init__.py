"""One-dimensional stationary kernels with closed-form derivative cross-covariances (GP-HM PDE solver)."""

from gpkit.kernels.connection_laplacian_kernel import ConnectionLaplacianKernel
from gpkit.kernels.mixture_derivative_kernels import SpectralMixtureDerivativeKernel, StudentTMixtureDerivativeKernel
from gpkit.kernels.rbf_matern_derivative_kernels import Matern52DerivativeKernel, RBFDerivativeKernel
from gpkit.kernels.stationary_derivative_kernel import StationaryDerivativeKernel

__all__ = [
    "ConnectionLaplacianKernel",
    "Matern52DerivativeKernel",
    "RBFDerivativeKernel",
    "SpectralMixtureDerivativeKernel",
    "StationaryDerivativeKernel",
    "StudentTMixtureDerivativeKernel",
]
