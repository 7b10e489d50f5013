"""The smallest eigenpairs of a sparse symmetric PSD Laplacian, cut between (not inside) eigenvalue clusters."""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg as spla

__all__ = ["auto_num_eigenpairs", "cluster_cut", "smallest_eigenpairs"]

#: matrices up to this size are diagonalised densely when many pairs are wanted (or below DENSE_ALWAYS)
DENSE_LIMIT = 6000
DENSE_ALWAYS = 1500


def cluster_cut(eigenvalues: np.ndarray, k: int) -> int:
    """Where to cut the ascending spectrum at or after ``k`` so that no cluster of near-equal eigenvalues
    is split: at the largest relative gap ``(lam[j] - lam[j-1]) / lam[j]`` among ``j = k .. len - 1``
    (keeping ``j`` pairs). On a sphere this lands on the ends of the degenerate ``2(2l+1)``-fold clusters;
    on a generic spectrum it extends ``k`` a little. Never returns less than ``k``.

    :param eigenvalues: ascending, at least ``k``.
    :param k: the wanted count.
    :return: ``k' >= k`` (``len(eigenvalues)`` when ``k`` is not smaller).
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    if k >= lam.size:
        return lam.size
    floor = 1e-12 * max(abs(lam[-1]), 1e-300)
    gaps = (lam[k:] - lam[k - 1 : -1]) / np.maximum(np.abs(lam[k:]), floor)  # gaps[t]: between k+t-1 and k+t
    return k + int(np.argmax(gaps))


def smallest_eigenpairs(
    matrix: sp.spmatrix | np.ndarray, k: int, extra: int | None = None, method: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` smallest eigenpairs of a symmetric PSD matrix, extended or trimmed to whole clusters.

    ``k + extra`` pairs are computed (densely up to :data:`DENSE_ALWAYS` rows, or :data:`DENSE_LIMIT` rows
    when more than an eighth of the spectrum is wanted; otherwise by shift-invert
    Lanczos, ``scipy.sparse.linalg.eigsh`` with a sparse LU of ``L + s I`` for a small ``s > 0``, which is
    fast for the smallest eigenvalues and exact where ``which='SM'`` is slow), then :func:`cluster_cut`
    picks the count.

    :param matrix: ``n x n`` SciPy sparse or dense, symmetric PSD.
    :param k: wanted eigenpairs, ``1 <= k < n``.
    :param extra: look-ahead beyond ``k`` (default ``max(16, 4 sqrt(k))``, more than a sphere's cluster size
        ``~2.8 sqrt(k)``); 0 keeps exactly ``k``.
    :param method: ``"auto"``, ``"dense"`` or ``"sparse"``.
    :return: ``(eigenvalues, eigenvectors)``: ascending ``k'``, and ``n x k'`` with orthonormal columns.
    """
    n = matrix.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < n:
        raise ValueError(f"the number of eigenpairs must be an int in [1, {n - 1}], got {k!r}")
    if method not in ("auto", "dense", "sparse"):
        raise ValueError(f"method must be 'auto', 'dense' or 'sparse', got {method!r}")
    m = min(n - 1, k + (max(16, math.ceil(4 * math.sqrt(k))) if extra is None else int(extra)))
    if method == "dense" or (method == "auto" and (n <= DENSE_ALWAYS or (n <= DENSE_LIMIT and 8 * m >= n))):
        dense = matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)
        lam, vec = scipy.linalg.eigh(dense, subset_by_index=[0, m - 1])
    else:
        L = sp.csc_matrix(matrix, dtype=np.float64)
        shift = 1e-3 * max(float(np.abs(L.diagonal()).mean()), 1e-12)
        lu = spla.splu((L + shift * sp.identity(n, format="csc")).tocsc(), permc_spec="COLAMD")
        op = spla.LinearOperator((n, n), matvec=lu.solve, dtype=np.float64)
        v0 = np.random.default_rng(0).standard_normal(n)
        mu, vec = spla.eigsh(op, k=m, which="LM", v0=v0, ncv=min(n, max(2 * m + 1, 20)), tol=1e-10)
        lam = 1.0 / mu - shift
        order = np.argsort(lam)
        lam, vec = lam[order], vec[:, order]
    keep = cluster_cut(lam, k)
    return np.maximum(lam[:keep], 0.0), vec[:, :keep]


def auto_num_eigenpairs(num_train: int, dim: int, size: int, cap: int = 500) -> int:
    """Default basis size: one eigenpair per training degree of freedom (``num_train * dim``, what the
    data can resolve), at most ``cap`` and fewer than ``size``; :func:`smallest_eigenpairs` then moves the
    cut to a cluster boundary."""
    return max(1, min(num_train * dim, cap, size - 1))


