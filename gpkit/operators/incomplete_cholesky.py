"""Incomplete (zero fill-in) factorisations on a column-stored upper-triangular sparsity pattern."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["gram_on_pattern", "incomplete_reverse_cholesky"]


def _pair_targets(index: Tensor, columns: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """For each column ``k`` in ``columns`` and slot pair ``s1 <= s2``, the flat position (in the ``n*m``
    storage of ``index``) of entry ``(index[k, s1], index[k, s2])``, if it is in the pattern.

    :return: ``(target (c, m, m), valid (c, m, m), keys)``; ``target`` is meaningful where ``valid``.
    """
    n, m = index.shape
    rows = index[columns]  # shape: (c, m)
    keys = (torch.arange(n, device=index.device).unsqueeze(-1) * (n + 1) + index).reshape(-1)  # sorted
    i, j = rows.unsqueeze(-1), rows.unsqueeze(-2)  # pair (row i, column j), i <= j for s1 <= s2
    query = j.clamp_min(0) * (n + 1) + i
    pos = torch.searchsorted(keys, query.reshape(-1)).clamp_max(n * m - 1).reshape(query.shape)
    upper = torch.ones(m, m, dtype=torch.bool, device=index.device).triu()
    valid = upper & (i >= 0) & (j >= 0) & (keys[pos] == query)
    return pos, valid, keys


def gram_on_pattern(
    index: Tensor, values: Tensor, diag: Tensor | None = None, chunk_size: int = 256
) -> Tensor:
    """Entries of ``F F^T + diag(diag)`` on the pattern of ``F`` (upper triangle), ``F`` column-stored.

    :param index: ``n x m`` canonical pattern (ascending, ``-1`` padding first, ``j`` last in row ``j``).
    :param values: ``n x m`` values of ``F``.
    :param diag: optional ``n`` added to the diagonal.
    :return: ``n x m`` values ``P[index[j, s], j]`` of ``P = F F^T + diag``.
    """
    n, m = index.shape
    P = torch.zeros(n * m, dtype=values.dtype, device=values.device)
    for cols in torch.arange(n, device=index.device).split(chunk_size):
        target, valid, _ = _pair_targets(index, cols)
        v = values[cols]
        prod = v.unsqueeze(-1) * v.unsqueeze(-2)  # (F_ik F_jk) for slots (s1, s2) of column k
        P.index_add_(0, target[valid], prod[valid])
    P = P.view(n, m)
    if diag is not None:
        P[:, -1] += diag
    return P


@torch.no_grad()
def incomplete_reverse_cholesky(index: Tensor, P: Tensor, chunk_size: int = 256) -> Tensor:
    """IC(0) factor ``V`` (upper triangular, pattern ``index``) with ``V V^T ≈ P`` on the pattern.

    Columns are eliminated from the last to the first (the "reverse" Cholesky of an upper-triangular
    factorisation); fill-in outside the pattern is dropped. A non-positive pivot falls back to the original
    diagonal entry.

    :param index: ``n x m`` canonical pattern.
    :param P: ``n x m`` entries ``P[index[j, s], j]`` of a symmetric positive definite matrix.
    :return: ``n x m`` values of ``V`` (last column: the diagonal).
    """
    n, m = index.shape
    work = P.clone().reshape(-1)
    V = torch.zeros_like(P)
    diag0 = P[:, -1].clone()
    for cols in reversed(torch.arange(n, device=index.device).split(chunk_size)):
        target, valid, _ = _pair_targets(index, cols)
        valid[:, :, -1] = False  # pairs with the eliminated column itself
        j0 = int(cols[0])
        for j in reversed(cols.tolist()):
            p = work[j * m : (j + 1) * m]
            pivot = p[-1] if p[-1] > 1e-12 * diag0[j] else diag0[j]
            v = p / pivot.sqrt()
            v[-1] = pivot.sqrt()
            V[j] = v * (index[j] >= 0)
            ok = valid[j - j0]
            work.index_add_(0, target[j - j0][ok], -(v.unsqueeze(-1) * v.unsqueeze(-2))[ok])
    return V
