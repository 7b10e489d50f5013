"""Per-factor Kronecker algebra against the dense matrices (1-D, 2-D and 3-D grids)."""

import functools

import pytest
import torch
from linear_operator.operators import DenseLinearOperator, KroneckerProductLinearOperator

from gpkit.kernels import StudentTMixtureDerivativeKernel
from gpkit.operators import KroneckerCholesky, mode_product


def _spd(n):
    A = torch.randn(n, n)
    return A @ A.T / n + 0.1 * torch.eye(n)


@pytest.mark.parametrize("sizes", [(7,), (5, 4), (3, 4, 5)])
def test_solve_logdet_quad_match_dense(sizes):
    factors = [_spd(n) for n in sizes]
    chol = KroneckerCholesky(factors, jitter=1e-6)
    K = functools.reduce(torch.kron, chol.factors)
    U = torch.randn(sizes)
    u = U.reshape(-1)
    torch.testing.assert_close(chol.solve(U).reshape(-1), torch.linalg.solve(K, u))
    torch.testing.assert_close(chol.logdet(), torch.logdet(K))
    torch.testing.assert_close(chol.inv_quad(U), u @ torch.linalg.solve(K, u))
    torch.testing.assert_close(chol.unwhiten(chol.whiten(U)), U)
    # the lazy operator agrees with torch.kron's row-major convention
    torch.testing.assert_close(chol.to_linear_operator().to_dense(), K)
    lazy = KroneckerProductLinearOperator(*[DenseLinearOperator(f) for f in chol.factors])
    torch.testing.assert_close(lazy @ u, K @ u)


@pytest.mark.parametrize("sizes", [(6,), (5, 4), (3, 4, 5)])
def test_derivative_operator_along_one_mode_matches_dense(sizes):
    """(K_1'' ⊗ K_2 ⊗ ...)(K_1 ⊗ K_2 ⊗ ...)^{-1} u == U ×_i K_i'' K_i^{-1}."""
    kernels = [StudentTMixtureDerivativeKernel(num_mixtures=3, max_frequency=1.0) for _ in sizes]
    K = [k.grid_covariance(n, 0.2, 0) for k, n in zip(kernels, sizes)]
    chol = KroneckerCholesky(K, jitter=1e-6)
    U = torch.randn(sizes)
    dense_K = functools.reduce(torch.kron, chol.factors)
    alpha = torch.linalg.solve(dense_K, U.reshape(-1))
    for mode, (k, n) in enumerate(zip(kernels, sizes)):
        cross = k.grid_covariance(n, 0.2, 2)
        mats = [cross if i == mode else f for i, f in enumerate(chol.factors)]
        expected = functools.reduce(torch.kron, mats) @ alpha
        torch.testing.assert_close(chol.apply_conditional(U, cross, mode).reshape(-1), expected)
        explicit = mode_product(U, chol.conditional_operator(cross, mode), mode)
        torch.testing.assert_close(explicit.reshape(-1), expected)


@pytest.mark.parametrize("sizes", [(6,), (5, 4), (3, 4, 5)])
def test_predict_points_matches_dense(sizes):
    kernels = [StudentTMixtureDerivativeKernel(num_mixtures=3, max_frequency=1.0) for _ in sizes]
    grids = [torch.linspace(0, 1, n).unsqueeze(-1) for n in sizes]
    chol = KroneckerCholesky([k(g, g).to_dense() for k, g in zip(kernels, grids)], jitter=1e-6)
    U = torch.randn(sizes)
    X = torch.rand(7, len(sizes))
    crosses = [k.derivative_covariance(X[:, i], g) for i, (k, g) in enumerate(zip(kernels, grids))]
    dense_cross = torch.stack([functools.reduce(torch.kron, [c[j] for c in crosses]) for j in range(7)])
    dense_K = functools.reduce(torch.kron, chol.factors)
    expected = dense_cross @ torch.linalg.solve(dense_K, U.reshape(-1))
    torch.testing.assert_close(chol.predict_points(U, crosses), expected)


def test_bad_factors():
    with pytest.raises(ValueError, match="factors"):
        KroneckerCholesky([])
    with pytest.raises(ValueError, match="square"):
        KroneckerCholesky([torch.ones(2, 3)])
    chol = KroneckerCholesky([_spd(3), _spd(2)])
    with pytest.raises(ValueError, match="shape"):
        chol.solve(torch.ones(2, 3))
