"""Collocation solves on tensor grids: the residual-only finish of :class:`~gpkit.pde.KroneckerPDESolver`.

The unknowns are the interior grid values of ``U`` (shape ``(N_1, ..., N_D)``); boundary values stay fixed.
Newton's method drives the PDE residual at every interior grid point to zero. Each linearised system is
solved by GMRES, preconditioned with the exact inverse of its constant-coefficient part
:math:`\\bigoplus_i B_i + c_0 I` (a Kronecker sum, diagonalised mode by mode in :math:`O(\\sum_i N_i^3)`);
for a linear PDE with constant coefficients that preconditioner is the inverse itself, so one step solves it.

A kernel whose grid factors are numerically rank deficient (a learned spectrum concentrated on a few
frequencies) makes that square system ill-posed: on the modes the kernel cannot represent, the derivative
operators :math:`K_i^{(o)} K_i^{-1}` are close to zero, GMRES cannot meet its tolerance and Newton wanders
(for Allen-Cahn those modes obey the pointwise equation :math:`u^3 - u = f`, which has several roots).
:func:`gauss_newton_collocation` then solves the same equations in the least-squares sense over the kernel's
numerical range (the tensor product of each factor's eigenvectors with eigenvalues above the jitter).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse.linalg
import torch
from torch import Tensor

from ..operators.kronecker_grid import mode_product

__all__ = ["KroneckerSumSolver", "gauss_newton_collocation", "newton_collocation"]


class KroneckerSumSolver:
    r"""
    Solve :math:`(\bigoplus_i B_i + c_0 I)\, x = y` for a Kronecker sum of small square matrices: with
    :math:`B_i = V_i \Lambda_i V_i^{-1}`, :math:`x = (V_1 \otimes \cdots)\,[(V_1^{-1} \otimes \cdots) y] /
    (\lambda_{1a} + \lambda_{2b} + \cdots + c_0)`.

    :param mats: ``B_i``, shape ``(M_i, M_i)`` each.
    :param shift: :math:`c_0`.
    """

    def __init__(self, mats: Sequence[Tensor], shift: float = 0.0):
        self.vecs, self.inv_vecs, denom = [], [], None
        for i, B in enumerate(mats):
            lam, V = torch.linalg.eig(B)
            self.vecs.append(V)
            self.inv_vecs.append(torch.linalg.inv(V))
            shape = [1] * len(mats)
            shape[i] = -1
            lam = lam.reshape(shape)
            denom = lam if denom is None else denom + lam
        self.denominator = denom + shift  # shape: (M_1, ..., M_D), complex

    def __call__(self, y: Tensor) -> Tensor:
        z = y.to(self.denominator.dtype)
        for i, Vi in enumerate(self.inv_vecs):
            z = mode_product(z, Vi, i)
        z = z / self.denominator
        for i, V in enumerate(self.vecs):
            z = mode_product(z, V, i)
        return z.real.to(y.dtype)


def _gmres(matvec: Callable[[Tensor], Tensor], precond: Callable[[Tensor], Tensor], rhs: Tensor, max_iter: int, rtol: float):
    """Restarted-free GMRES (scipy) on tensors of ``rhs``'s shape; the preconditioner is applied on the right."""
    shape, like = rhs.shape, rhs

    def as_tensor(x):
        return torch.as_tensor(np.asarray(x), dtype=torch.float64).reshape(shape).to(like)

    def wrap(fn):
        return lambda x: fn(as_tensor(x)).reshape(-1).double().cpu().numpy()

    n = rhs.numel()
    op = scipy.sparse.linalg.LinearOperator((n, n), matvec=wrap(matvec), dtype=np.float64)
    pre = scipy.sparse.linalg.LinearOperator((n, n), matvec=wrap(precond), dtype=np.float64)
    b = rhs.reshape(-1).double().cpu().numpy()
    x, _ = scipy.sparse.linalg.gmres(op, b, M=pre, rtol=rtol, atol=0.0, restart=max_iter, maxiter=1)
    x = as_tensor(x)
    return x, float((matvec(x) - rhs).norm() / rhs.norm().clamp_min(1e-300))


@torch.no_grad()
def newton_collocation(
    equations: Callable[[Tensor], Tensor],
    U0: Tensor,
    preconditioner: Callable[[Tensor], Callable[[Tensor], Tensor]],
    max_steps: int = 30,
    tol: float = 1e-10,
    gmres_iter: int = 200,
    max_linear_residual: float | None = None,
) -> tuple[Tensor, dict]:
    r"""
    Newton's method for the square system :math:`E(U) = 0` on the grid (one equation per grid point).

    :param equations: ``E(U)``, same shape as ``U`` (scaled boundary misfits on the boundary, scaled PDE
        residuals inside).
    :param U0: Start, shape ``(N_1, ..., N_D)``.
    :param preconditioner: ``preconditioner(U)`` returns an approximate inverse of the Jacobian of ``E`` at ``U``.
    :param max_steps: Newton steps at most.
    :param tol: Stop when the largest equation is below ``tol`` (relative to its start, at least 1), once it
        is below ``100 * tol`` and a full step no longer halves it (round-off reached), or when a (damped) step
        reduces the equations' norm by less than 10% (no convergence: ``info["converged"]`` is ``False``).
    :param gmres_iter: GMRES iterations per step.
    :param max_linear_residual: Stop before a step whose GMRES solve leaves a relative linear residual above
        this (an inexact Newton direction: the Jacobian is ill-conditioned); ``info["inexact"]`` is then ``True``.
    :return: ``(U, info)`` with ``info = {"steps", "residual", "converged", "linear_residual", "inexact"}`` (the
        largest equation at the end; whether it is below ``100 * tol``; the largest relative GMRES residual).
    """
    U = U0.clone()
    E = equations(U)
    stop = tol * max(1.0, E.abs().max().item())
    steps, linear, inexact = 0, 0.0, False
    for _ in range(max_steps):
        if E.abs().max() <= stop:
            break

        def jvp(direction: Tensor, U=U) -> Tensor:
            return torch.func.jvp(equations, (U,), (direction,))[1]

        delta, rel = _gmres(jvp, preconditioner(U), -E, gmres_iter, rtol=1e-13)
        linear = max(linear, rel)
        if max_linear_residual is not None and rel > max_linear_residual:
            inexact = True
            break
        base = E.norm()
        for _ in range(30):  # damped step: halve until the equations' norm decreases
            trial = U + delta
            E_trial = equations(trial)
            if E_trial.norm() < base:
                break
            delta = 0.5 * delta
        else:
            break
        at_roundoff = E_trial.abs().max() > 0.5 * E.abs().max() and E.abs().max() <= 100 * stop
        stalled = at_roundoff or E_trial.norm() > 0.9 * base  # a step that removes < 10%: Newton is not converging
        U, E = trial, E_trial
        steps += 1
        if stalled:
            break
    residual = E.abs().max().item()
    info = {"steps": steps, "residual": residual, "converged": residual <= 100 * stop}
    return U, {**info, "linear_residual": linear, "inexact": inexact}


@torch.no_grad()
def gauss_newton_collocation(
    equations: Callable[[Tensor], Tensor],
    C0: Tensor,
    expand: Callable[[Tensor], Tensor],
    max_steps: int = 30,
    tol: float = 1e-10,
    chunk_size: int = 256,
) -> tuple[Tensor, dict]:
    r"""
    Gauss-Newton for the least-squares problem :math:`\min_C \lVert E(\operatorname{expand}(C)) \rVert` (more equations
    than unknowns), each step with the dense Jacobian (built by ``vmap`` of forward-mode products, ``chunk_size``
    directions at a time) and its normal equations. Damped and stopped as :func:`newton_collocation`.

    :param equations: ``E(U)``, same shape as ``U``.
    :param C0: Start in the reduced coordinates.
    :param expand: Linear map from reduced coordinates to ``U``.
    :return: ``(U, info)`` with ``info = {"steps", "residual", "converged"}``; ``converged``: the equations are
        below ``100 * tol`` or a full step no longer changes their norm by 10% (a least-squares stationary point).
    """

    def F(C: Tensor) -> Tensor:
        return equations(expand(C))

    C = C0.clone()
    E = F(C)
    stop = tol * max(1.0, E.abs().max().item())
    m, steps, converged = C.numel(), 0, False
    eye = torch.eye(m, dtype=C.dtype, device=C.device).reshape(m, *C.shape)
    for _ in range(max_steps):
        if E.abs().max() <= stop:
            converged = True
            break
        cols = torch.vmap(lambda d, C=C: torch.func.jvp(F, (C,), (d,))[1], chunk_size=chunk_size)(eye)
        J = cols.reshape(m, -1).mT  # shape: (N, m)
        gram, rhs = J.mT @ J, -(J.mT @ E.reshape(-1))
        L, fail = torch.linalg.cholesky_ex(gram)
        if fail:
            delta = torch.linalg.lstsq(J, -E.reshape(-1, 1)).solution.reshape(C.shape)
        else:
            delta = torch.cholesky_solve(rhs.unsqueeze(-1), L).reshape(C.shape)
        base, full = E.norm(), True
        for _ in range(30):
            trial = C + delta
            E_trial = F(trial)
            if E_trial.norm() < base:
                break
            delta, full = 0.5 * delta, False
        else:
            converged = True  # no descent along the Gauss-Newton direction: a stationary point
            break
        C, E = trial, E_trial
        steps += 1
        if E.norm() > 0.9 * base:
            converged = full
            break
    residual = E.abs().max().item()
    return expand(C), {"steps": steps, "residual": residual, "converged": converged or residual <= 100 * stop}
