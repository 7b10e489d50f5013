"""The kNN graph of a point cloud, its scalar Laplacian and local-PCA tangent frames."""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from gpkit.neighbors import knn

__all__ = ["check_points", "estimate_dimension", "graph_laplacian", "knn_graph", "tangent_frames"]


def check_points(points: Tensor, name: str = "points") -> Tensor:
    """``points`` must be a finite floating-point ``N x D`` tensor with ``N >= 2``."""
    if not isinstance(points, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(points).__name__}")
    if not points.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {points.dtype}")
    if points.dim() != 2 or points.shape[0] < 2 or points.shape[1] < 1:
        raise ValueError(f"{name} must be an N x D tensor with N >= 2, got shape {tuple(points.shape)}")
    if not torch.isfinite(points).all():
        raise ValueError(f"{name} contains NaN or inf")
    return points


def _neighbours(points: Tensor, k: int) -> np.ndarray:
    """The ``k`` nearest other points of every point, ``N x k`` (self removed even among repeats)."""
    n = points.shape[0]
    _, index = knn(points.detach().cpu(), points.detach().cpu(), min(k + 1, n))
    index = index.numpy()
    not_self = index != np.arange(n)[:, None]
    # keep the first k entries that are not the point itself (stable: nearest first)
    order = np.argsort(~not_self, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(index, order, axis=1)


def knn_graph(points: Tensor, num_neighbors: int = 10) -> sp.csr_matrix:
    """Symmetrised kNN graph with unit weights: ``A_ij = 1`` if ``j`` is among the ``num_neighbors``
    nearest points of ``i`` or ``i`` among those of ``j``.

    :param points: ``N x D``.
    :param num_neighbors: ``1 <= k < N``.
    :return: ``N x N`` SciPy CSR adjacency (float64, zero diagonal).
    """
    points = check_points(points)
    n = points.shape[0]
    if isinstance(num_neighbors, bool) or not isinstance(num_neighbors, int) or not 1 <= num_neighbors < n:
        raise ValueError(f"num_neighbors must be an int in [1, {n - 1}], got {num_neighbors!r}")
    nb = _neighbours(points, num_neighbors)
    rows = np.repeat(np.arange(n), num_neighbors)
    A = sp.csr_matrix((np.ones(rows.size), (rows, nb.ravel())), shape=(n, n))
    A = A.maximum(A.T).tocsr()
    A.setdiag(0)
    A.eliminate_zeros()
    return A


def graph_laplacian(adjacency: sp.spmatrix, normalized: bool = False) -> sp.csr_matrix:
    """``L = D - A`` (or ``I - D^{-1/2} A D^{-1/2}`` when ``normalized``), SciPy CSR."""
    A = sp.csr_matrix(adjacency, dtype=np.float64)
    deg = np.asarray(A.sum(1)).ravel()
    if normalized:
        s = sp.diags(1.0 / np.sqrt(np.maximum(deg, 1e-300)))
        return (sp.identity(A.shape[0], format="csr") - s @ A @ s).tocsr()
    return (sp.diags(deg) - A).tocsr()


def tangent_frames(
    points: Tensor, num_neighbors: int = 15, dim: int | None = None, threshold: float = 0.8
) -> tuple[Tensor, int, Tensor]:
    """Orthonormal tangent frames by local PCA.

    Each point's ``num_neighbors`` nearest points (itself included) are centred on their mean; the
    eigenvectors of their covariance with the ``dim`` largest eigenvalues span the tangent plane. With
    ``dim=None`` the intrinsic dimension is estimated by :func:`estimate_dimension`.

    :param points: ``N x D``.
    :param num_neighbors: neighbourhood size (at least ``dim + 1``; clipped to ``N``).
    :param dim: intrinsic dimension ``1 <= dim <= D`` or None.
    :param threshold: explained-variance level of the estimate.
    :return: ``(frames, dim, explained)``: frames ``N x D x dim`` (columns orthonormal), the dimension
        used, and each point's cumulative explained-variance ratios ``N x D``.
    """
    points = check_points(points)
    n, D = points.shape
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= D):
        raise ValueError(f"dim must be None or an int in [1, {D}], got {dim!r}")
    m = min(n, max(int(num_neighbors), (dim or D) + 1))
    _, index = knn(points.detach().cpu(), points.detach().cpu(), m)
    X = points.detach().cpu().to(torch.float64)[index]  # shape: (N, m, D)
    X = X - X.mean(1, keepdim=True)
    evals, evecs = torch.linalg.eigh(X.transpose(1, 2) @ X)  # ascending, shapes (N, D), (N, D, D)
    evals, evecs = evals.flip(-1).clamp_min(0), evecs.flip(-1)
    explained = evals.cumsum(-1) / evals.sum(-1, keepdim=True).clamp_min(1e-300)  # shape: (N, D)
    if dim is None:
        dim = estimate_dimension(explained, threshold)
    frames = evecs[..., :dim].to(device=points.device, dtype=points.dtype)
    return frames, dim, explained.to(device=points.device, dtype=points.dtype)


def estimate_dimension(explained: Tensor, threshold: float = 0.8) -> int:
    """Smallest ``d`` whose mean cumulative explained variance, less its spread over points, reaches
    ``threshold``.

    :param explained: ``N x D`` cumulative explained-variance ratios (from :func:`tangent_frames`).
    """
    score = explained.mean(0) - explained.std(0) if explained.shape[0] > 1 else explained[0]
    hit = torch.nonzero(score >= threshold)
    return int(hit[0]) + 1 if hit.numel() else explained.shape[1]


def default_frame_neighbors(num_neighbors: int) -> int:
    """The local-PCA neighbourhood used with a ``num_neighbors`` graph (1.5 times as many points)."""
    return math.ceil(1.5 * num_neighbors)
