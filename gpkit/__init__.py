"""gpkit: Gaussian-process models beyond plain SVGP and exact GPs, on GPyTorch, linear_operator and BoTorch."""

from gpkit.training import FitState, fit

__version__ = "0.1.0"
__all__ = ["fit", "FitState", "__version__"]
