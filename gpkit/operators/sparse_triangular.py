"""Column-stored sparse upper-triangular factors (sparse inverse Cholesky factors and friends)."""

from __future__ import annotations

import torch
from linear_operator.operators import DenseLinearOperator, LinearOperator
from linear_operator.utils.errors import NotPSDError
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = [
    "SparseTriangularLinearOperator",
    "block_entries",
    "block_solve",
    "canonical_pattern",
    "dense_block",
    "pattern_positions",
    "trim_padding",
    "union_sets",
]


def canonical_pattern(index: Tensor, mask: Tensor) -> Tensor:
    """Sort each row of a right-aligned sparsity pattern ascending, with padding marked ``-1`` on the left.

    :param index: ``n x m`` row indices of each column's nonzeros (column ``j`` must contain ``j``).
    :param mask: ``n x m`` bool, which entries of ``index`` are real.
    :return: ``n x m`` LongTensor, row ``j`` ascending with ``j`` last and ``-1`` padding first.
    """
    index = torch.where(mask, index, torch.full_like(index, -1))
    index = index.sort(dim=-1).values
    j = torch.arange(index.shape[0], device=index.device)
    if not torch.equal(index[:, -1], j):
        raise ValueError("pattern: column j must contain j and only rows i <= j")
    return index


def pattern_positions(cols: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """Positions of ``rows`` inside the ascending index sets ``cols`` (``-1`` = padding).

    :param cols: ``b x a`` ascending indices (``-1`` padding first).
    :param rows: ``b x k`` indices to locate (``-1`` = padding).
    :return: ``(pos, found)``, both ``b x k``; ``pos`` is only meaningful where ``found``.
    """
    pos = torch.searchsorted(cols.contiguous(), rows.contiguous()).clamp_max(cols.shape[-1] - 1)
    found = (cols.gather(-1, pos) == rows) & (rows >= 0)
    return pos, found


def trim_padding(sets: Tensor) -> Tensor:
    """Drop the leading columns of a right-aligned ``-1``-padded layout that are padding in every row."""
    width = int((sets >= 0).sum(-1).max().clamp_min(1))
    return sets[..., sets.shape[-1] - width :]


def union_sets(sets: Tensor) -> Tensor:
    """Row-wise union of index sets, as ascending sets with ``-1`` padding first (trimmed to the widest row).

    :param sets: ``b x k`` indices (``-1`` = padding, repeats allowed).
    :return: ``b x a`` ascending unique indices, ``a <= k``.
    """
    s = sets.sort(dim=-1).values
    dup = torch.zeros_like(s, dtype=torch.bool)
    dup[:, 1:] = s[:, 1:] == s[:, :-1]
    s = torch.where(dup, torch.full_like(s, -1), s).sort(dim=-1).values
    width = int((s >= 0).sum(-1).max().clamp_min(1))
    return s[:, s.shape[-1] - width :]


def dense_block(index: Tensor, values: Tensor, cols: Tensor) -> Tensor:
    """Dense sub-blocks ``F[cols_b, cols_b]`` of a column-stored upper-triangular factor ``F``.

    Padding positions (``cols == -1``) get a unit diagonal, so triangular solves on the block are
    unaffected by them.

    :param index: ``n x m`` canonical pattern of ``F`` (see :func:`canonical_pattern`).
    :param values: ``n x m`` values of ``F`` aligned with ``index`` (padding entries ignored).
    :param cols: ``b x a`` ascending index sets (``-1`` padding first).
    :return: ``b x a x a`` upper-triangular blocks.
    """
    b, a = cols.shape
    m = index.shape[-1]
    safe = cols.clamp_min(0)
    rows = index[safe]  # shape: (b, a, m), rows of column cols[b, q]
    vals = values[safe] * (cols >= 0).unsqueeze(-1).to(values.dtype)
    pos, found = pattern_positions(cols, rows.reshape(b, a * m))
    q = torch.arange(a, device=cols.device).repeat_interleave(m).expand(b, -1)
    flat = torch.where(found, pos * a + q, torch.zeros_like(pos))
    src = torch.where(found, vals.reshape(b, a * m), torch.zeros_like(vals.reshape(b, a * m)))
    block = torch.zeros(b, a * a, dtype=values.dtype, device=values.device).scatter_add(1, flat, src)
    block = block.view(b, a, a)
    pad = (cols < 0).to(values.dtype)
    return block + torch.diag_embed(pad)


class _BlockSolve(torch.autograd.Function):
    """``x = F[A, A]^{-1} rhs`` per batch; the backward pass forms gradients only at the stored entries.

    ``flat`` holds each value's position in the ``b·a·a`` dense blocks; positions in a strictly lower
    triangle are never read by the solves (padding entries may point there)."""

    @staticmethod
    def forward(ctx, vals: Tensor, flat: Tensor, pad: Tensor, rhs: Tensor) -> Tensor:
        b, a = pad.shape
        block = torch.zeros(b * a * a, dtype=vals.dtype, device=vals.device).scatter_(0, flat, vals)
        block = block.view(b, a, a)
        block.diagonal(dim1=-2, dim2=-1).add_(pad.to(vals.dtype))
        x = torch.linalg.solve_triangular(block, rhs, upper=True)
        ctx.save_for_backward(block, x, flat)
        return x

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_x: Tensor):
        block, x, flat = ctx.saved_tensors
        w = torch.linalg.solve_triangular(block.mT, grad_x, upper=False)  # F^{-T} grad_x
        # d/dF_pq of <grad_x, F^{-1} rhs> = -(w x^T)_pq, read off at the stored entries only
        return -(w @ x.mT).reshape(-1).index_select(0, flat), None, None, w


def block_entries(index: Tensor, cols: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The nonzeros of the principal blocks ``F[A_b, A_b]`` of a column-stored upper-triangular ``F``.

    :param index: ``n x m`` canonical pattern of ``F``.
    :param cols: ``b x a`` ascending index sets (``-1`` padding first).
    :return: ``(batch, position, storage)``, each of length ``nnz``: the block ``b``, the flat position
        ``row * a + column`` inside that ``a x a`` block, and the flat position ``column * m + slot`` of the
        value in ``F``'s ``n x m`` storage.
    """
    b, a = cols.shape
    m = index.shape[-1]
    safe = cols.clamp_min(0)
    rows = index[safe]  # shape: (b, a, m), rows of column cols[b, q]
    rows = torch.where((cols >= 0).unsqueeze(-1), rows, torch.full_like(rows, -1))
    # each row located by a binary search within its own block's (ascending) index set
    pos, found = pattern_positions(cols, rows.reshape(b, a * m))
    bi, k = found.nonzero(as_tuple=True)
    qi, si = k // m, k % m
    return bi, pos[bi, k] * a + qi, safe[bi, qi] * m + si


def block_solve(
    index: Tensor, entry_values, cols: Tensor, rhs: Tensor, entries=None, stored_values=None
) -> Tensor:
    """Solve ``F[A_b, A_b] x_b = rhs_b`` for the principal blocks of a column-stored upper-triangular ``F``.

    Only the nonzeros of each block are gathered (O(b·a·m) index work, O(b·a²) for the dense triangular
    solve); the backward pass forms gradients only at those entries.

    :param index: ``n x m`` canonical pattern of ``F``.
    :param entry_values: callable ``(columns, slots) -> values`` giving ``F[index[c, s], c]`` for 1-D
        LongTensors of columns ``c`` and slots ``s`` (e.g. ``lambda c, s: values[c, s]``).
    :param cols: ``b x a`` ascending index sets (``-1`` padding first).
    :param rhs: ``b x a x k`` right-hand sides.
    :param entries: optional precomputed ``(position, storage)``, each ``b x e``: the flat position
        ``batch * a * a + row * a + column`` in the dense blocks and the ``column * m + slot`` storage
        position of each value; padding entries may point at a strictly lower block position (ignored)
        with storage position ``n * m`` (value zero). Default: :func:`block_entries`.
    :param stored_values: optional callable ``storage -> values`` used with ``entries`` instead of
        ``entry_values`` (must accept the padding position ``n * m``).
    :return: ``b x a x k`` solutions (padding rows solve with a unit diagonal).
    """
    a, m = cols.shape[-1], index.shape[-1]
    if entries is None:
        bi, pos, store = block_entries(index, cols)
        flat = bi * (a * a) + pos
        vals = entry_values(store // m, store % m)
    else:
        flat, store = (t.reshape(-1) for t in entries)
        if stored_values is not None:
            vals = stored_values(store)
        else:
            padded = store >= index.numel()
            safe = torch.where(padded, 0, store)
            vals = torch.where(padded, 0.0, entry_values(safe // m, safe % m))
    return _BlockSolve.apply(vals, flat, cols < 0, rhs)


class SparseTriangularLinearOperator(LinearOperator):
    """An ``n x n`` upper-triangular matrix ``F`` stored by columns on a sparsity pattern (O(n·m) memory).

    Column ``j`` has nonzeros ``F[index[j, r], j] = values[j, r]`` for ``index[j, r] >= 0``; ``index`` is a
    canonical pattern (:func:`canonical_pattern`). With ``transposed=True`` the operator is ``F^T``.

    :param index: ``n x m`` LongTensor, canonical pattern.
    :param values: ``(*batch) x n x m`` values.
    :param transposed: represent ``F^T`` (lower triangular) instead of ``F``.
    """

    def __init__(self, index: Tensor, values: Tensor, transposed: bool = False):
        super().__init__(index, values, transposed=transposed)
        self.index = index
        self.values = values
        self.transposed = transposed

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    @property
    def device(self) -> torch.device:
        return self.values.device

    @property
    def _valid(self) -> Tensor:
        return (self.index >= 0).to(self.values.dtype)

    def _size(self) -> torch.Size:
        n = self.index.shape[0]
        return torch.Size((*self.values.shape[:-2], n, n))

    def _transpose_nonbatch(self) -> LinearOperator:
        return SparseTriangularLinearOperator(self.index, self.values, transposed=not self.transposed)

    def _matmul(self, rhs: Tensor) -> Tensor:
        # rhs: (*batch, n, t)
        vals = self.values * self._valid  # shape: (*batch, n, m)
        safe = self.index.clamp_min(0)
        if self.transposed:
            # (F^T R)[j] = sum_r values[j, r] R[index[j, r]]
            gathered = rhs[..., safe, :]  # shape: (*batch, n, m, t)
            return (vals.unsqueeze(-1) * gathered).sum(-2)
        # (F R)[i] = sum_{j, r: index[j, r] = i} values[j, r] R[j]
        contrib = vals.unsqueeze(-1) * rhs.unsqueeze(-2)  # shape: (*batch, n, m, t)
        batch = torch.broadcast_shapes(vals.shape[:-2], rhs.shape[:-2])
        contrib = contrib.expand(*batch, *contrib.shape[-3:])
        out = torch.zeros(*batch, self.index.shape[0], rhs.shape[-1], dtype=contrib.dtype, device=rhs.device)
        flat = safe.reshape(-1)
        return out.index_add(-2, flat, contrib.reshape(*batch, -1, rhs.shape[-1]))

    def _t_matmul(self, rhs: Tensor) -> Tensor:
        return self._transpose_nonbatch()._matmul(rhs)

    def _diagonal(self) -> Tensor:
        return self.values[..., -1]

    def _expand_batch(self, batch_shape: torch.Size) -> LinearOperator:
        values = self.values.expand(*batch_shape, *self.values.shape[-2:])
        return SparseTriangularLinearOperator(self.index, values, transposed=self.transposed)

    def _unsqueeze_batch(self, dim: int) -> LinearOperator:
        return SparseTriangularLinearOperator(
            self.index, self.values.unsqueeze(dim), transposed=self.transposed
        )

    def _permute_batch(self, *dims: int) -> LinearOperator:
        values = self.values.permute(*dims, -2, -1)
        return SparseTriangularLinearOperator(self.index, values, transposed=self.transposed)

    def _getitem(self, row_index, col_index, *batch_indices) -> LinearOperator:
        full = slice(None, None, None)
        if row_index == full and col_index == full:
            values = self.values[(*batch_indices, full, full)]
            return SparseTriangularLinearOperator(self.index, values, transposed=self.transposed)
        return DenseLinearOperator(self.to_dense())._getitem(row_index, col_index, *batch_indices)

    def _get_indices(self, row_index, col_index, *batch_indices) -> Tensor:
        return DenseLinearOperator(self.to_dense())._get_indices(row_index, col_index, *batch_indices)

    def to_dense(self) -> Tensor:
        n = self.index.shape[0]
        vals = self.values * self._valid
        j = torch.arange(n, device=vals.device).unsqueeze(-1).expand_as(self.index)
        dense = torch.zeros(*vals.shape[:-2], n, n, dtype=vals.dtype, device=vals.device)
        flat = (self.index.clamp_min(0) * n + j).reshape(-1)
        dense = dense.reshape(*vals.shape[:-2], n * n).index_add(-1, flat, vals.reshape(*vals.shape[:-2], -1))
        dense = dense.reshape(*vals.shape[:-2], n, n)
        return dense.mT if self.transposed else dense

    def solve_triangular(
        self, rhs: Tensor, upper: bool | None = None, left: bool = True, unitriangular: bool = False
    ) -> Tensor:
        """Exact ``F^{-1} rhs`` (``F^{-T} rhs`` if transposed) by a triangular solve (``rhs``: ``... x n x k``);
        ``left=False`` solves ``X F = rhs``.

        The factor is densified (O(n^2) memory): for the moderate ``n`` at which a global solve is wanted;
        DKLGP itself only ever solves with small principal blocks (:func:`block_solve`).

        :param upper: must match the operator (``not transposed``) if given.
        """
        if upper is not None and upper != (not self.transposed):
            raise ValueError(
                f"upper={upper}: this operator is {'lower' if self.transposed else 'upper'} triangular"
            )
        return torch.linalg.solve_triangular(
            self.to_dense(), rhs, upper=not self.transposed, left=left, unitriangular=unitriangular
        )

    def _solve(self, rhs: Tensor, preconditioner=None, num_tridiag: int = 0) -> Tensor:
        # a triangular solve, not CG (which assumes a symmetric positive definite operator)
        if num_tridiag:
            raise NotImplementedError("SparseTriangularLinearOperator is not symmetric: no tridiagonal terms")
        return self.solve_triangular(rhs)

    def solve(self, right_tensor: Tensor, left_tensor: Tensor | None = None) -> Tensor:
        """``F^{-1} right`` (or ``left F^{-1} right``), differentiable in the values and the right-hand side."""
        squeeze = right_tensor.dim() == 1
        rhs = right_tensor.unsqueeze(-1) if squeeze else right_tensor
        res = self.solve_triangular(rhs)
        if squeeze:
            res = res.squeeze(-1)
        return res if left_tensor is None else left_tensor @ res

    def inv_quad_logdet(
        self, inv_quad_rhs: Tensor | None = None, logdet: bool = False, reduce_inv_quad: bool = True
    ) -> tuple[Tensor, Tensor]:
        """``rhs^T F^{-1} rhs`` by a triangular solve and ``log det F = sum_j log F_jj`` (NaN if the
        determinant is negative, as for linear_operator's ``TriangularLinearOperator``)."""
        empty = torch.empty(0, dtype=self.dtype, device=self.device)
        inv_quad = empty
        if inv_quad_rhs is not None:
            rhs = inv_quad_rhs.unsqueeze(-1) if inv_quad_rhs.dim() == 1 else inv_quad_rhs
            inv_quad = (rhs * self.solve(rhs)).sum(-2)
            if reduce_inv_quad:
                inv_quad = inv_quad.sum(-1)
        logdet_term = empty
        if logdet:
            diag = self._diagonal()
            logdet_term = diag.abs().log().sum(-1)
            logdet_term = torch.where(torch.sign(diag).prod(-1) < 0, float("nan"), logdet_term)
        return inv_quad, logdet_term

    def to(self, *args, **kwargs) -> SparseTriangularLinearOperator:
        """Move/cast the values (the index stays an integer tensor)."""
        values = self.values.to(*args, **kwargs)
        return SparseTriangularLinearOperator(
            self.index.to(values.device), values, transposed=self.transposed
        )

    def type(self, dtype: torch.dtype) -> SparseTriangularLinearOperator:
        return self.to(dtype)

    def _cholesky(self, upper: bool = False):
        raise NotPSDError("SparseTriangularLinearOperator is not symmetric: no Cholesky decomposition")

    def _root_decomposition(self):
        raise NotPSDError("SparseTriangularLinearOperator is not symmetric: no root decomposition")

    def _root_inv_decomposition(self, initial_vectors=None, test_vectors=None):
        raise NotPSDError("SparseTriangularLinearOperator is not symmetric: no inverse root decomposition")

    def _bilinear_derivative(self, left_vecs: Tensor, right_vecs: Tensor) -> tuple:
        # d/dvalues of sum(left * F right): F[index[j,r], j] contributes left[index[j,r]] * right[j]
        if self.transposed:
            left_vecs, right_vecs = right_vecs, left_vecs
        safe = self.index.clamp_min(0)
        grad = (left_vecs[..., safe, :] * right_vecs.unsqueeze(-2)).sum(-1) * self._valid
        while grad.dim() > self.values.dim():
            grad = grad.sum(0)
        return (None, grad)
