"""Gaussian Cox processes: :class:`GaussianCoxProcess` (Laplace posterior of the latent intensity), a
window-revealing Bayesian-optimisation loop (:func:`reveal_windows`), Poisson-process simulation and the
window geometry of point patterns.

Names are imported on first use (``gpkit.datasets`` uses the simulation helpers without loading BoTorch).
"""

from importlib import import_module

_EXPORTS = {
    "GaussianCoxProcess": "model",
    "ExpectedCount": "model",
    "reveal_windows": "loop",
    "WindowSearch": "loop",
    "HermiteIntensity": "simulation",
    "INTENSITIES": "simulation",
    "bumps_intensity": "simulation",
    "hermite_functions": "simulation",
    "integrate": "simulation",
    "poisson_process": "simulation",
    "sine_intensity": "simulation",
    "synthetic_point_process": "simulation",
    "box_nodes": "geometry",
    "polygon_contains": "geometry",
    "window_contains": "geometry",
}
__all__ = [
    "INTENSITIES",
    "ExpectedCount",
    "GaussianCoxProcess",
    "HermiteIntensity",
    "WindowSearch",
    "box_nodes",
    "bumps_intensity",
    "hermite_functions",
    "integrate",
    "poisson_process",
    "polygon_contains",
    "reveal_windows",
    "sine_intensity",
    "synthetic_point_process",
    "window_contains",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"gpkit.cox.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'gpkit.cox' has no attribute {name!r}")


def __dir__():
    return __all__
