"""Incomplete (zero fill-in) factorisations on a column-stored upper-triangular sparsity pattern."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["gram_on_pattern", "incomplete_reverse_cholesky"]


def _pair_targets(index: Tensor, columns: Tensor) -> tuple[Tensor, Tensor]:
    """For each column ``k`` in ``columns`` and slot pair ``s1 <= s2``, the flat position (in the ``n*m``
    storage of ``index``) of entry ``(index[k, s1], index[k, s2])``, if it is in the pattern.

    :return: ``(target (c, m, m), valid (c, m, m))``; ``target`` is meaningful where ``valid``.
    """
    rows = index[columns]  # shape: (c, m)
    c, m = rows.shape
    # row i = rows[s1] located by a binary search in the pattern of column j = rows[s2]
    seq = index[rows.clamp_min(0)].reshape(c * m, m)  # [(k, s2)]: the pattern of column rows[k, s2]
    query = rows.unsqueeze(-2).expand(c, m, m).reshape(c * m, m)  # [(k, s2), s1] = rows[k, s1]
    pos = torch.searchsorted(seq.contiguous(), query.contiguous()).clamp_max(m - 1)
    found = (seq.gather(-1, pos) == query) & (query >= 0)
    pos, found = pos.view(c, m, m).mT, found.view(c, m, m).mT  # [k, s1, s2]
    upper = torch.ones(m, m, dtype=torch.bool, device=index.device).triu()
    valid = upper & found & (rows >= 0).unsqueeze(-2)
    return rows.clamp_min(0).unsqueeze(-2) * m + pos, valid


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
        target, valid = _pair_targets(index, cols)
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
    import numpy as np

    n, m = index.shape
    # the elimination is sequential: a numpy loop on the CPU (far less overhead per column than torch ops)
    work = P.detach().cpu().double().numpy().reshape(-1).copy()
    V = np.zeros((n, m))
    diag0 = work.reshape(n, m)[:, -1].copy()
    real = (index >= 0).cpu().numpy()
    for cols in reversed(torch.arange(n, device=index.device).split(chunk_size)):
        target, valid = _pair_targets(index, cols)
        valid[:, :, -1] = False  # pairs with the eliminated column itself
        target, valid = target.cpu().numpy(), valid.cpu().numpy()
        j0 = int(cols[0])
        for j in range(int(cols[-1]), j0 - 1, -1):
            p = work[j * m : (j + 1) * m]
            pivot = p[-1] if p[-1] > 1e-12 * diag0[j] else diag0[j]
            root = np.sqrt(pivot)
            v = p / root
            v[-1] = root
            v *= real[j]
            V[j] = v
            ok = valid[j - j0]
            work[target[j - j0][ok]] -= np.outer(v, v)[ok]
    return torch.as_tensor(V, dtype=P.dtype, device=P.device)
