"""Procrustes connections between neighbouring tangent frames and the connection Laplacian."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

__all__ = ["connection_laplacian", "procrustes_connections"]


def procrustes_connections(frames: Tensor, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Orthogonal ``d x d`` maps ``O_ij = U V^T`` from the SVD ``T_i^T T_j = U S V^T`` for every edge.

    ``O_ij`` carries a vector's coordinates in frame ``j`` to frame ``i`` (the rotation nearest to the
    frame overlap). ``O_ji = O_ij^T``.

    :param frames: ``N x D x d``.
    :param rows: edge sources ``i``, ``E``.
    :param cols: edge targets ``j``, ``E``.
    :return: ``E x d x d`` float64 array.
    """
    T = frames.detach().cpu().to(torch.float64)
    ri, ci = torch.from_numpy(np.asarray(rows)), torch.from_numpy(np.asarray(cols))
    overlap = T[ri].transpose(1, 2) @ T[ci]  # shape: (E, d, d)
    U, _, Vh = torch.linalg.svd(overlap)
    return (U @ Vh).numpy()


def connection_laplacian(
    adjacency: sp.spmatrix, frames: Tensor, normalized: bool = False
) -> sp.csr_matrix:
    """The connection Laplacian ``L_c`` (``N d x N d``): diagonal blocks ``deg_i I_d``, off-diagonal blocks
    ``-w_ij O_ij`` (:func:`procrustes_connections`). Symmetric PSD:
    ``x^T L_c x = sum_{i<j} w_ij |x_i - O_ij x_j|^2``. With ``normalized``, ``D^{-1/2} L_c D^{-1/2}``.

    :param adjacency: ``N x N`` symmetric weights (e.g. :func:`~gpkit.manifolds.knn_graph`).
    :param frames: ``N x D x d`` tangent frames.
    :return: SciPy CSR matrix, node-major ordering (row ``i * d + a`` = coordinate ``a`` at node ``i``).
    """
    A = sp.coo_matrix(adjacency)
    n, d = frames.shape[0], frames.shape[-1]
    if A.shape != (n, n):
        raise ValueError(f"adjacency must be {n} x {n} to match frames, got {A.shape}")
    upper = A.row < A.col
    i, j, w = A.row[upper], A.col[upper], A.data[upper]
    O = procrustes_connections(frames, i, j) * w[:, None, None]  # shape: (E, d, d)
    a, b = np.meshgrid(np.arange(d), np.arange(d), indexing="ij")  # block entry (a, b)
    r = (i[:, None, None] * d + a).ravel()
    c = (j[:, None, None] * d + b).ravel()
    deg = np.asarray(sp.csr_matrix(adjacency).sum(1)).ravel()
    vals = np.concatenate([-O.ravel(), -O.ravel(), np.repeat(deg, d)])
    rr = np.concatenate([r, c, np.arange(n * d)])
    cc = np.concatenate([c, r, np.arange(n * d)])
    L = sp.csr_matrix((vals, (rr, cc)), shape=(n * d, n * d))
    if normalized:
        s = sp.diags(np.repeat(1.0 / np.sqrt(np.maximum(deg, 1e-300)), d))
        L = (s @ L @ s).tocsr()
    return L
