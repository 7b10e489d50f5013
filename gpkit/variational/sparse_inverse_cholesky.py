"""KL-optimal sparse inverse Cholesky factor of a kernel matrix (Schäfer, Katzfuss & Owhadi, 2021)."""

from __future__ import annotations

import torch
from gpytorch.kernels import Kernel
from torch import Tensor
from torch.autograd.function import once_differentiable

from gpkit.operators.sparse_triangular import SparseTriangularLinearOperator

__all__ = [
    "inverse_cholesky_last_column",
    "masked_blocks",
    "masked_kernel_blocks",
    "sparse_inverse_cholesky",
    "sparse_inverse_cholesky_columns",
]


def masked_blocks(K: Tensor, valid: Tensor, nugget: float = 0.0) -> Tensor:
    """Zero the rows/columns of ``K`` (``b x m x m``) at invalid positions, put 1 on their diagonal and
    ``nugget`` on the diagonal of the valid ones (``valid``: ``b x m`` bool)."""
    pair = valid.unsqueeze(-1) & valid.unsqueeze(-2)
    eye = torch.eye(valid.shape[-1], dtype=K.dtype, device=K.device)
    diag = torch.where(valid, torch.full_like(K[..., 0], nugget), torch.ones_like(K[..., 0]))
    return torch.where(pair, K, torch.zeros_like(K)) + eye * diag.unsqueeze(-1)


class _InverseCholeskyLastColumn(torch.autograd.Function):
    r""":math:`u = K^{-1} e / \sqrt{e^\top K^{-1} e} = L^{-\top} e` (``e``: last unit vector, ``L L^\top = K``).

    The backward pass needs one solve with ``K`` and an outer product, instead of differentiating the
    Cholesky factorisation (``O(m^3)`` triangular solves with matrix right-hand sides)."""

    @staticmethod
    def forward(ctx, K: Tensor) -> Tensor:
        L = torch.linalg.cholesky(K)
        e = torch.zeros(*K.shape[:-1], 1, dtype=K.dtype, device=K.device)
        e[..., -1, :] = 1.0
        u = torch.linalg.solve_triangular(L.mT, e, upper=True)  # shape: (*b, m, 1)
        ctx.save_for_backward(L, u)
        return u.squeeze(-1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_u: Tensor) -> Tensor:
        L, u = ctx.saved_tensors
        # u = g / sqrt(c), g = K^{-1} e, c = e^T g = u_last^2: dL/dg = (grad_u - (grad_u . u) e / (2 u_last)) / u_last
        u_last = u[..., -1:, :]
        grad_g = grad_u.unsqueeze(-1).clone()
        grad_g[..., -1:, :] -= (grad_u.unsqueeze(-1) * u).sum(-2, keepdim=True) / (2 * u_last)
        grad_g = grad_g / u_last
        h = torch.cholesky_solve(grad_g, L)  # K^{-1} dL/dg
        grad_K = h * (u * u_last).mT  # -dL/dK = K^{-1} (dL/dg) g^T (an outer product), g = u u_last
        return -0.5 * (grad_K + grad_K.mT)  # symmetric, as for torch.linalg.cholesky


def inverse_cholesky_last_column(K: Tensor) -> Tensor:
    r"""The last column of the inverse Cholesky factor: :math:`u = L^{-\top} e_{\text{last}}` for
    ``L L^T = K`` (``... x m x m``), i.e. the KL-optimal column :math:`K^{-1} e / \sqrt{e^\top K^{-1} e}`;
    differentiable (one extra solve in the backward pass).

    :param K: ``... x m x m`` symmetric positive definite blocks.
    :return: ``... x m``.
    """
    return _InverseCholeskyLastColumn.apply(K)


def masked_kernel_blocks(covar_module: Kernel, X: Tensor, sets: Tensor, nugget: float = 0.0) -> Tensor:
    """Kernel blocks ``K[S_b, S_b] + nugget I`` with identity rows/columns at padding (``-1``) positions.

    :param covar_module: a GPyTorch kernel.
    :param X: ``n x d`` inputs.
    :param sets: ``b x m`` index sets (``-1`` = padding).
    :param nugget: added to the diagonal of the real entries.
    :return: ``b x m x m`` positive definite blocks.
    """
    K = covar_module(X[sets.clamp_min(0)]).to_dense()  # shape: (b, m, m)
    return masked_blocks(K, sets >= 0, nugget)


def sparse_inverse_cholesky_columns(
    covar_module: Kernel, X: Tensor, index: Tensor, columns: Tensor | None = None, nugget: float = 1e-4
) -> Tensor:
    r"""Columns of the KL-optimal upper-triangular factor ``U`` with :math:`K^{-1} \approx U U^\top`.

    For column ``j`` with pattern ``S_j`` (ascending, ``j`` last) and ``L L^T = K[S_j, S_j]``,
    :math:`U_{S_j, j} = K_{S_j S_j}^{-1} e / \sqrt{e^\top K_{S_j S_j}^{-1} e} = L^{-\top} e` (``e`` = last unit
    vector).
    Batched over columns by padding to ``m``; differentiable in the kernel hyperparameters.

    :param covar_module: a GPyTorch kernel.
    :param X: ``n x d`` inputs in the factor's ordering.
    :param index: ``n x m`` canonical pattern (:func:`gpkit.operators.canonical_pattern`).
    :param columns: the columns ``j`` to compute (``b``); all by default.
    :param nugget: added to the kernel diagonal.
    :return: ``b x m`` values of ``U[index[j], j]`` (zeros at padding).
    """
    sets = index if columns is None else index[columns]  # shape: (b, m)
    u = inverse_cholesky_last_column(masked_kernel_blocks(covar_module, X, sets, nugget))  # shape: (b, m)
    return u * (sets >= 0).to(u.dtype)


def sparse_inverse_cholesky(
    covar_module: Kernel, X: Tensor, index: Tensor, nugget: float = 1e-4, chunk_size: int = 4096
) -> SparseTriangularLinearOperator:
    """The whole KL-optimal factor ``U`` as a :class:`~gpkit.operators.SparseTriangularLinearOperator`.

    :param covar_module: a GPyTorch kernel.
    :param X: ``n x d`` inputs in the factor's ordering.
    :param index: ``n x m`` canonical pattern.
    :param nugget: added to the kernel diagonal.
    :param chunk_size: columns per batched Cholesky (bounds memory at ``chunk_size · m²``).
    :return: ``U`` (``n x n``, upper triangular), ``K^{-1} ≈ U U^T``.
    """
    cols = torch.arange(index.shape[0], device=index.device)
    values = torch.cat(
        [sparse_inverse_cholesky_columns(covar_module, X, index, c, nugget) for c in cols.split(chunk_size)]
    )
    return SparseTriangularLinearOperator(index, values)
