"""SparseTriangularLinearOperator against dense matrices (linear_operator's rectangular test suite)."""

import unittest

import torch
from linear_operator.test.linear_operator_test_case import (
    LinearOperatorTestCase,
    RectangularLinearOperatorTestCase,
)
from linear_operator.utils.errors import NotPSDError

from gpkit.operators import SparseTriangularLinearOperator, canonical_pattern, dense_block, union_sets


def _pattern(n=7, m=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    idx = torch.zeros(n, m, dtype=torch.long)
    mask = torch.zeros(n, m, dtype=torch.bool)
    for j in range(n):
        prev = torch.randperm(j, generator=g)[: m - 1] if j else torch.zeros(0, dtype=torch.long)
        idx[j, -1], mask[j, -1] = j, True
        idx[j, m - 1 - len(prev) : m - 1], mask[j, m - 1 - len(prev) : m - 1] = prev, True
    return canonical_pattern(idx, mask)


class TestSparseTriangularLinearOperator(RectangularLinearOperatorTestCase, unittest.TestCase):
    seed = 0

    def create_linear_op(self):
        index = _pattern()
        values = torch.randn(*index.shape, dtype=torch.float64) * (index >= 0)
        return SparseTriangularLinearOperator(index, values.requires_grad_(True))

    def evaluate_linear_op(self, linear_op):
        n = linear_op.index.shape[0]
        dense = torch.zeros(n, n, dtype=linear_op.values.dtype)
        for j in range(n):
            for r, i in enumerate(linear_op.index[j].tolist()):
                if i >= 0:
                    dense = dense + torch.zeros_like(dense).index_put(
                        (torch.tensor([i]), torch.tensor([j])), linear_op.values[j, r : r + 1]
                    )
        return dense.mT if linear_op.transposed else dense


class TestSparseTriangularTransposed(TestSparseTriangularLinearOperator):
    def create_linear_op(self):
        return super().create_linear_op().mT


class TestSparseTriangularSquare(LinearOperatorTestCase, unittest.TestCase):
    """The square suite: solves, inv_quad_logdet, logdet ... with a well-conditioned triangular factor
    (positive diagonal). Decompositions that need a symmetric operator raise NotPSDError, as for
    linear_operator's ``TriangularLinearOperator``."""

    seed = 0
    should_test_sample = False
    should_call_cg = False
    should_call_lanczos = False
    should_call_lanczos_diagonalization = False

    def create_linear_op(self):
        index = _pattern()
        values = 0.3 * torch.randn(*index.shape, dtype=torch.float64) * (index >= 0)
        values[:, -1] = 1.0 + torch.rand(index.shape[0], dtype=torch.float64)  # positive diagonal
        return SparseTriangularLinearOperator(index, values.requires_grad_(True))

    def evaluate_linear_op(self, linear_op):
        return TestSparseTriangularLinearOperator.evaluate_linear_op(self, linear_op)

    def _ensure_symmetric_grad(self, grad):
        return grad  # the operator is not symmetric: the dense reference's gradient must stay as it is

    def test_solve_is_triangular_not_cg(self):
        op = self.create_linear_op()
        rhs = torch.randn(op.shape[-1], 3, dtype=torch.float64)
        torch.testing.assert_close(op @ op.solve(rhs), rhs)
        torch.testing.assert_close(op.mT @ op.mT.solve(rhs), rhs)

    # symmetric-only decompositions: not defined for a triangular operator
    def _raises(self, fn):
        with self.assertRaises(NotPSDError):
            fn(self.create_linear_op())

    def test_cholesky(self):
        self._raises(lambda op: op.cholesky())

    def test_root_decomposition(self, cholesky=False):
        self._raises(lambda op: op._root_decomposition())

    def test_root_decomposition_cholesky(self):
        self._raises(lambda op: op._cholesky())

    def test_root_inv_decomposition(self):
        self._raises(lambda op: op._root_inv_decomposition())

    def test_solve_triangular(self):  # supported here (the suite's default expects NotImplementedError)
        op = self.create_linear_op()
        rhs = torch.randn(op.shape[-1], 2, dtype=torch.float64)
        torch.testing.assert_close(
            op.solve_triangular(rhs, upper=True), torch.linalg.solve(op.to_dense(), rhs)
        )
        with self.assertRaisesRegex(ValueError, "upper"):
            op.solve_triangular(rhs, upper=False)

    # these assume a symmetric operator (eigendecompositions, symmetric square roots, symmetric updates)
    _symmetric_only = "assumes a symmetric operator"

    def test_add_low_rank(self):
        self.skipTest(self._symmetric_only)

    def test_cat_rows(self):
        self.skipTest(self._symmetric_only)

    def test_diagonalization(self, symeig=False):
        self.skipTest(self._symmetric_only)

    def test_diagonalization_symeig(self):
        self.skipTest(self._symmetric_only)

    def test_eigh(self):
        self.skipTest(self._symmetric_only)

    def test_eigvalsh(self):
        self.skipTest(self._symmetric_only)

    def test_sqrt_inv_matmul(self):
        self.skipTest(self._symmetric_only)

    def test_sqrt_inv_matmul_no_lhs(self):
        self.skipTest(self._symmetric_only)

    def test_svd(self):
        self.skipTest(self._symmetric_only)


def test_dense_block_and_triangular_solve():
    index = _pattern(9, 4)
    values = torch.randn(*index.shape, dtype=torch.float64)
    values[:, -1] = values[:, -1].abs() + 1.0
    op = SparseTriangularLinearOperator(index, values)
    F = op.to_dense()
    assert torch.equal(F, F.triu())
    cols = union_sets(torch.tensor([[2, 5, 5, 8, -1], [0, 1, 3, 3, 7]]))
    assert cols.tolist() == [[-1, 2, 5, 8], [0, 1, 3, 7]]
    blocks = dense_block(index, op.values, cols)
    for b in range(2):
        sel = cols[b][cols[b] >= 0]
        k = sel.numel()
        torch.testing.assert_close(blocks[b, -k:, -k:], F[sel][:, sel])
        torch.testing.assert_close(blocks[b, :-k, :-k], torch.eye(4 - k, dtype=F.dtype))
    rhs = torch.randn(9, 2, dtype=torch.float64)
    torch.testing.assert_close(F @ op.solve_triangular(rhs), rhs)
    torch.testing.assert_close(F.mT @ op.mT.solve_triangular(rhs), rhs)


def test_canonical_pattern_rejects_missing_diagonal():
    index = torch.tensor([[0, 0], [0, 0]])
    mask = torch.tensor([[False, True], [False, True]])
    try:
        canonical_pattern(index, mask)
    except ValueError as e:
        assert "pattern" in str(e)
    else:
        raise AssertionError("expected ValueError")


def test_block_solve_matches_dense_and_gradcheck():
    from gpkit.operators import block_solve

    index = _pattern(10, 4, seed=3)
    values = torch.randn(*index.shape, dtype=torch.float64) * (index >= 0)
    values[:, -1] = values[:, -1].abs() + 1.0
    cols = union_sets(torch.tensor([[1, 4, 6, 9], [0, 2, 3, 8], [5, 7, -1, -1]]))
    rhs = torch.randn(*cols.shape, 2, dtype=torch.float64)

    def solve(v, r):
        return block_solve(index, lambda c, s: v[c, s], cols, r)

    x = solve(values, rhs)
    dense = dense_block(index, values, cols)
    torch.testing.assert_close(dense @ x, rhs)
    v = values.clone().requires_grad_(True)
    r = rhs.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(solve, (v, r))


def test_gram_and_ic0_exact_on_full_pattern():
    from gpkit.operators import gram_on_pattern, incomplete_reverse_cholesky

    n = 9
    j = torch.arange(n)
    full = j.unsqueeze(0) - (n - 1) + j.unsqueeze(1)
    full = torch.where(full >= 0, full, torch.full_like(full, -1))
    F = torch.randn(n, n, dtype=torch.float64).triu() + 3 * torch.eye(n, dtype=torch.float64)
    values = torch.stack([F[full[c].clamp_min(0), c] * (full[c] >= 0) for c in range(n)])
    w = torch.rand(n, dtype=torch.float64)
    P = gram_on_pattern(full, values, w, chunk_size=4)
    P_dense = F @ F.T + torch.diag(w)
    torch.testing.assert_close(SparseTriangularLinearOperator(full, P).to_dense(), P_dense.triu())
    V = SparseTriangularLinearOperator(full, incomplete_reverse_cholesky(full, P, chunk_size=4)).to_dense()
    torch.testing.assert_close(V @ V.T, P_dense)  # no fill-in dropped: the exact factor


def test_ic0_matches_pattern_entries_on_sparse_pattern():
    from gpkit.operators import gram_on_pattern, incomplete_reverse_cholesky

    index = _pattern(12, 4, seed=1)
    values = torch.randn(*index.shape, dtype=torch.float64) * (index >= 0)
    values[:, -1] = values[:, -1].abs() + 2.0
    P = gram_on_pattern(index, values, torch.ones(12, dtype=torch.float64))
    V = incomplete_reverse_cholesky(index, P)
    VVt = (
        SparseTriangularLinearOperator(index, V).to_dense()
        @ SparseTriangularLinearOperator(index, V).to_dense().T
    )
    # IC(0) reproduces P exactly on the pattern (where it has no breakdown)
    onpat = SparseTriangularLinearOperator(index, torch.ones_like(V)).to_dense() != 0
    torch.testing.assert_close(VVt[onpat], SparseTriangularLinearOperator(index, P).to_dense()[onpat])
