"""gpkit: Gaussian-process models beyond plain SVGP and exact GPs, on GPyTorch, linear_operator and BoTorch."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["FitState", "__version__", "fit", "make_optimizer"]

# The trainer imports torch and gpytorch; it is loaded on first use so that ``gpkit --help`` stays fast.
_LAZY = {"FitState": "gpkit.training", "fit": "gpkit.training", "make_optimizer": "gpkit.training"}

if TYPE_CHECKING:
    from gpkit.training import FitState, fit, make_optimizer


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gpkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
