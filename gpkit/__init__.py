"""gpkit: Gaussian-process models beyond plain SVGP and exact GPs, on GPyTorch, linear_operator and BoTorch."""

from gpkit.training import FitState, fit, make_optimizer

__version__ = "0.1.0"
__all__ = ["FitState", "__version__", "fit", "make_optimizer"]
