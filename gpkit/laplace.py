"""Shared Laplace machinery: a damped Newton minimiser and the stable Laplace covariance.

:func:`newton_minimize` is the deterministic mode finder for any smooth, strictly convex objective (the
negative log posterior of a latent GP in weight space, for instance); :func:`laplace_covariance` is the
dense reference formula ``K - K W^1/2 B^-1 W^1/2 K`` with ``B = I + W^1/2 K W^1/2`` (Rasmussen & Williams,
Alg. 3.2), stable for any ``W >= 0``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["NewtonResult", "laplace_covariance", "newton_minimize"]


@dataclass
class NewtonResult:
    """The minimiser ``x``, its objective ``value``, gradient ``grad``, Hessian Cholesky factor ``chol`` and
    the number of Newton ``iterations`` taken (``converged`` when the Newton decrement met ``tol``)."""

    x: Tensor
    value: Tensor
    grad: Tensor
    chol: Tensor
    iterations: int
    converged: bool


def newton_minimize(
    objective: Callable[[Tensor, bool], tuple[Tensor, Tensor | None, Tensor | None]],
    x0: Tensor,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> NewtonResult:
    """Minimise a smooth strictly convex function by Newton steps with backtracking (Armijo) line search.

    The objective may return ``inf`` outside its domain (e.g. where a log argument turns negative): the line
    search then shortens the step, so every iterate stays feasible when ``x0`` is feasible. Deterministic.

    :param objective: ``objective(x, derivatives) -> (value, grad, hess)``; ``grad`` (``r``) and ``hess``
        (``r x r``) are needed only when ``derivatives`` is True (otherwise return ``None`` for them).
    :param x0: feasible starting point, ``r``.
    :param max_iter: most Newton steps.
    :param tol: stop when half the squared Newton decrement ``g^T H^-1 g / 2`` is below
        ``tol * (1 + |value|)``.
    :return: :class:`NewtonResult`.
    """
    x = x0
    value, grad, hess = objective(x, True)
    if not torch.isfinite(value):
        raise ValueError("newton_minimize: the objective is not finite at the starting point x0")
    chol = _cholesky(hess)
    converged = False
    iterations = 0
    for iterations in range(1, max_iter + 1):
        step = -torch.cholesky_solve(grad.unsqueeze(-1), chol).squeeze(-1)
        slope = grad @ step  # = -(Newton decrement)^2 <= 0
        if -0.5 * slope <= tol * (1 + value.abs()):
            converged = True
            break
        t = 1.0
        while True:
            trial = x + t * step
            trial_value = objective(trial, False)[0]
            if torch.isfinite(trial_value) and trial_value <= value + 1e-4 * t * slope:
                break
            t *= 0.5
            if t < 1e-12:
                return NewtonResult(x, value, grad, chol, iterations, False)
        x = trial
        value, grad, hess = objective(x, True)
        chol = _cholesky(hess)
    return NewtonResult(x, value, grad, chol, iterations, converged)


def _cholesky(hess: Tensor) -> Tensor:
    chol, info = torch.linalg.cholesky_ex(hess)
    if info.item() != 0:  # round-off only: the Hessians passed here are I + (PSD)
        eye = torch.eye(hess.shape[-1], dtype=hess.dtype, device=hess.device)
        chol = torch.linalg.cholesky(hess + 1e-8 * hess.diagonal().abs().max() * eye)
    return chol


def laplace_covariance(K: Tensor, W: Tensor) -> Tensor:
    """Posterior covariance ``(K^-1 + W)^-1`` of a Laplace approximation, in the stable form
    ``K - K W^1/2 B^-1 W^1/2 K`` with ``B = I + W^1/2 K W^1/2`` (never inverts ``K``).

    :param K: prior covariance, ``n x n``.
    :param W: non-negative diagonal of the negative log-likelihood Hessian, ``n``.
    :return: ``n x n``.
    """
    if (W < 0).any():
        raise ValueError("W must be non-negative (the negative Hessian of a log-concave likelihood)")
    sw = W.sqrt()
    B = torch.eye(K.shape[-1], dtype=K.dtype, device=K.device) + sw[:, None] * K * sw[None, :]
    L = torch.linalg.cholesky(B)
    V = torch.linalg.solve_triangular(L, sw[:, None] * K, upper=False)
    return K - V.mT @ V
