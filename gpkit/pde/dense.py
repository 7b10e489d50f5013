"""Dense (non-Kronecker) evaluation of the GP-HM loss: the exact reference for tests and scaling benchmarks."""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from .solver import KroneckerPDESolver


def _kron(mats: list[Tensor]) -> Tensor:
    return functools.reduce(torch.kron, mats)


def dense_negative_log_joint(solver: KroneckerPDESolver) -> tuple[Tensor, dict]:
    r"""
    The negative log joint of :meth:`KroneckerPDESolver.loss` with the full :math:`N \times N`
    covariance :math:`K = K_1 \otimes \cdots \otimes K_D` formed and factorised densely
    (:math:`O(N^3)` time, :math:`O(N^2)` memory).

    :param solver: The solver whose parameters are used.
    :return: ``(loss, fields)`` with the value (key ``()``) and derivative fields on the grid.
    """
    sizes, N = solver.sizes, solver.W.numel()
    grams = [k.grid_covariance(n, h, 0) for k, n, h in zip(solver.kernels, sizes, solver.spacings)]
    eye = [torch.eye(n, dtype=solver.W.dtype, device=solver.W.device) for n in sizes]
    K = _kron([G + solver.jitter * I for G, I in zip(grams, eye)])  # shape: (N, N)
    L = torch.linalg.cholesky(K)
    # the whitened parameters are defined through the per-factor Cholesky factors; L_1 ⊗ L_2 = chol(K_1 ⊗ K_2)
    u = L @ solver.W.reshape(N)
    alpha = torch.cholesky_solve(u.unsqueeze(-1), L).squeeze(-1)
    prior = L.diagonal().log().sum() + 0.5 * (u * alpha).sum()
    factors = [G + solver.jitter * I for G, I in zip(grams, eye)]
    derivs = {(): solver.u_scale * u.reshape(sizes)}
    for key in solver.problem.derivatives:
        if key == ():
            continue
        mats = [
            k.grid_covariance(n, h, key.count(i)) / w ** key.count(i) if key.count(i) else F
            for i, (k, n, h, w, F) in enumerate(zip(solver.kernels, sizes, solver.spacings, solver.widths, factors))
        ]
        derivs[key] = solver.u_scale * (_kron(mats) @ alpha).reshape(sizes)
    r = solver.problem.residual(derivs, solver.grid_points, solver.source_values) / solver.r_scale
    # boundary faces: the conditional mean along each face's normal mode (corners from the first mode)
    field = u.reshape(sizes).clone()
    for i in reversed(range(len(sizes))):
        mats = [G[[0, -1]] if j == i else F for j, (G, F) in enumerate(zip(grams, factors))]
        faces = (_kron(mats) @ alpha).reshape(*sizes[:i], 2, *sizes[i + 1 :])
        index = [slice(None)] * len(sizes)
        index[i] = [0, sizes[i] - 1]
        field[tuple(index)] = faces
    b = field[solver.boundary_mask] - solver.boundary_values / solver.u_scale
    tau, v = solver.log_tau.exp(), solver.log_v.exp()
    boundary = -solver.problem.boundary_weight * (
        0.5 * b.numel() * solver.log_tau - 0.5 * tau * b.pow(2).sum()
    )
    residual = -(0.5 * r.numel() * solver.log_v - 0.5 * v * r.pow(2).sum())
    return prior + boundary + residual, derivs
