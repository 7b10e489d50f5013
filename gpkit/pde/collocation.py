"""Collocation solves on tensor grids: the residual-only finish of :class:`~gpkit.pde.KroneckerPDESolver`.

The unknowns are the interior grid values of ``U`` (shape ``(N_1, ..., N_D)``); boundary values stay fixed.
Newton's method drives the PDE residual at every interior grid point to zero. Each linearised system is
solved by GMRES, preconditioned with the exact inverse of its constant-coefficient part
:math:`\\bigoplus_i B_i + c_0 I` (a Kronecker sum, diagonalised mode by mode in :math:`O(\\sum_i N_i^3)`);
for a linear PDE with constant coefficients that preconditioner is the inverse itself, so one step solves it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse.linalg
import torch
from torch import Tensor

from ..operators.kronecker_grid import mode_product

__all__ = ["KroneckerSumSolver", "newton_collocation"]


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
    return as_tensor(x)


@torch.no_grad()
def newton_collocation(
    equations: Callable[[Tensor], Tensor],
    U0: Tensor,
    preconditioner: Callable[[Tensor], Callable[[Tensor], Tensor]],
    max_steps: int = 30,
    tol: float = 1e-10,
    gmres_iter: int = 200,
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
    :return: ``(U, info)`` with ``info = {"steps", "residual", "converged"}`` (the largest equation at the end;
        whether it is below ``100 * tol``).
    """
    U = U0.clone()
    E = equations(U)
    stop = tol * max(1.0, E.abs().max().item())
    steps = 0
    for _ in range(max_steps):
        if E.abs().max() <= stop:
            break

        def jvp(direction: Tensor, U=U) -> Tensor:
            return torch.func.jvp(equations, (U,), (direction,))[1]

        delta = _gmres(jvp, preconditioner(U), -E, gmres_iter, rtol=1e-13)
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
    return U, {"steps": steps, "residual": residual, "converged": residual <= 100 * stop}
