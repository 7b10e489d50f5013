"""Input checks and small helpers shared by the neighbour-search functions.

All geometry runs on the CPU in float64 NumPy arrays; results go back to the device of the input.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
from torch import Tensor


def as_points(X: Tensor | np.ndarray, name: str) -> tuple[np.ndarray, torch.device, torch.dtype]:
    """Check an ``n x d`` point set and return it as a float64 C-contiguous array.

    :param X: points, shape ``(n, d)``, a tensor (any device) or an array.
    :param name: argument name used in error messages.
    :return: ``(array (n, d) float64, device of X, floating dtype of X)``.
    """
    if isinstance(X, Tensor):
        device = X.device
        dtype = X.dtype if X.is_floating_point() else torch.get_default_dtype()
        arr = X.detach().to("cpu", torch.float64).numpy()
    elif isinstance(X, np.ndarray):
        device, dtype = torch.device("cpu"), torch.float64
        if not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)):
            raise TypeError(f"{name} must hold real numbers, got dtype {X.dtype}")
        arr = X.astype(np.float64)
    else:
        raise TypeError(f"{name} must be a torch.Tensor of shape (n, d), got {type(X).__name__}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (n, d), got shape {tuple(arr.shape)}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(arr.shape)}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf")
    return np.ascontiguousarray(arr), device, dtype


def scale_points(arr: np.ndarray, lengthscale: Tensor | np.ndarray | float | None) -> np.ndarray:
    """Divide the columns of ``arr`` by ``lengthscale`` (one scalar or one value per dimension).

    Accepts any shape with ``d`` or 1 elements, e.g. a GPyTorch ``kernel.lengthscale`` of shape ``(1, d)``.
    """
    if lengthscale is None:
        return arr
    if isinstance(lengthscale, Tensor):
        ls = lengthscale.detach().to("cpu", torch.float64).numpy().reshape(-1)
    else:
        ls = np.asarray(lengthscale, dtype=np.float64).reshape(-1)
    d = arr.shape[1]
    if ls.size not in (1, d):
        raise ValueError(f"lengthscale must have 1 or d={d} elements, got {ls.size}")
    if not (np.isfinite(ls).all() and (ls > 0).all()):
        raise ValueError("lengthscale must be positive and finite")
    return np.ascontiguousarray(arr / ls)


def check_int(value: int, name: str, low: int, high: int | None = None) -> int:
    """Check ``low <= value <= high`` for an integer argument."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if value < low or (high is not None and value > high):
        upper = "" if high is None else f" and <= {high}"
        raise ValueError(f"{name} must be >= {low}{upper}, got {value}")
    return value


def check_rho(rho: float) -> float:
    if isinstance(rho, bool) or not isinstance(rho, numbers.Real) or not np.isfinite(rho) or rho <= 0:
        raise ValueError(f"rho must be a positive finite number, got {rho!r}")
    return float(rho)


def check_max_size(max_size: int | None) -> int | None:
    return None if max_size is None else check_int(max_size, "max_size", 1)


def as_dist(dist: Tensor | np.ndarray, n: int, name: str) -> np.ndarray:
    """Check a vector of ``n`` maximin distances (``inf`` allowed, NaN and negatives not)."""
    if isinstance(dist, Tensor):
        arr = dist.detach().to("cpu", torch.float64).numpy()
    elif isinstance(dist, np.ndarray):
        arr = dist.astype(np.float64)
    else:
        raise TypeError(f"{name} must be a torch.Tensor of shape (n,), got {type(dist).__name__}")
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match the points, got {tuple(arr.shape)}")
    if np.isnan(arr).any() or (arr < 0).any():
        raise ValueError(f"{name} must be non-negative (inf allowed), found NaN or a negative value")
    return arr


def sq_dist(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared distances from the rows of ``A`` to the point ``b`` (or row-wise to ``b`` of A's shape).

    This one formula is used for every decision (ordering, set membership) so ties are exact.
    """
    diff = A - b
    return (diff * diff).sum(-1)
