"""The whole RVGP pre-processing of a point cloud in one object: graph, frames, connection Laplacian, spectrum."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from gpkit.manifolds.connection import connection_laplacian
from gpkit.manifolds.graph import (
    check_points,
    default_frame_neighbors,
    graph_laplacian,
    knn_graph,
    tangent_frames,
)
from gpkit.manifolds.spectrum import smallest_eigenpairs

__all__ = ["ManifoldGeometry", "positional_encodings"]


def positional_encodings(frames: Tensor, eigenvectors: Tensor) -> Tensor:
    """Per-node encodings ``P_i = sqrt(N d) T_i U_i``: the eigenvectors' ``d x k`` block ``U_i`` of node ``i``
    mapped to the ambient space by its frame ``T_i`` (``D x d``).

    :param frames: ``N x D x d``.
    :param eigenvectors: ``N d x k`` (node-major rows), orthonormal columns.
    :return: ``N x D x k``; the scaling makes each column's squared entries average 1 per tangent coordinate.
    """
    n, _, d = frames.shape
    U = eigenvectors.reshape(n, d, -1)  # shape: (N, d, k)
    return math.sqrt(n * d) * frames @ U


@dataclass
class ManifoldGeometry:
    """kNN graph, tangent frames, connection Laplacian and its smallest eigenpairs of a point cloud.

    Build with :meth:`from_points`. Tensors are in the points' dtype and device; the sparse matrices
    are SciPy CSR (float64).
    """

    points: Tensor  # shape: (N, D)
    adjacency: sp.csr_matrix  # shape: (N, N)
    frames: Tensor  # shape: (N, D, d)
    dim: int
    explained_variance: Tensor  # shape: (N, D), cumulative ratios of the local PCA
    laplacian: sp.csr_matrix  # shape: (N d, N d), the connection Laplacian
    eigenvalues: Tensor | None = None  # shape: (k,)
    eigenvectors: Tensor | None = None  # shape: (N d, k)

    @classmethod
    def from_points(
        cls,
        points: Tensor,
        num_neighbors: int = 10,
        dim: int | None = None,
        frames: Tensor | None = None,
        num_eigenpairs: int | None = None,
        normalized: bool = False,
    ) -> ManifoldGeometry:
        """Pre-process ``points`` (``N x D``).

        :param num_neighbors: k of the kNN graph (local PCA uses ``1.5 k`` neighbours).
        :param dim: intrinsic dimension, or None to estimate it.
        :param frames: ``N x D x d`` known orthonormal tangent frames instead of local PCA.
        :param num_eigenpairs: compute this many smallest eigenpairs now (kept whole clusters), or None.
        :param normalized: use the normalised connection Laplacian.
        """
        points = check_points(points)
        adjacency = knn_graph(points, num_neighbors)
        if frames is None:
            frames, dim, explained = tangent_frames(points, default_frame_neighbors(num_neighbors), dim)
        else:
            if not isinstance(frames, Tensor) or frames.dim() != 3 or frames.shape[:2] != points.shape:
                got = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
                raise ValueError(f"frames must be an N x D x d tensor with N x D = {tuple(points.shape)}, got {got}")
            if not torch.isfinite(frames).all():
                raise ValueError("frames contains NaN or inf")
            if dim is not None and frames.shape[-1] != dim:
                raise ValueError(f"frames have d={frames.shape[-1]} columns but dim={dim}")
            dim = frames.shape[-1]
            frames = frames.to(points)
            explained = torch.full(points.shape, float("nan"), dtype=points.dtype, device=points.device)
        L = connection_laplacian(adjacency, frames, normalized)
        geometry = cls(points, adjacency, frames, dim, explained, L)
        if num_eigenpairs is not None:
            geometry.compute_eigenpairs(num_eigenpairs)
        return geometry

    @property
    def num_nodes(self) -> int:
        return self.points.shape[0]

    def compute_eigenpairs(self, k: int, extra: int | None = None) -> ManifoldGeometry:
        """Compute (or recompute) the smallest ``k`` eigenpairs of the connection Laplacian, whole clusters."""
        lam, vec = smallest_eigenpairs(self.laplacian, k, extra=extra)
        to = {"dtype": self.points.dtype, "device": self.points.device}
        self.eigenvalues, self.eigenvectors = torch.from_numpy(lam).to(**to), torch.from_numpy(vec).to(**to)
        return self

    def encodings(self) -> Tensor:
        """:func:`positional_encodings` of the computed eigenpairs, ``N x D x k``."""
        if self.eigenvectors is None:
            raise RuntimeError("call compute_eigenpairs(k) first")
        return positional_encodings(self.frames, self.eigenvectors)

    def scalar_laplacian(self, normalized: bool = False) -> sp.csr_matrix:
        """The scalar graph Laplacian of the same kNN graph (``N x N``), for the scalar-feature baseline."""
        return graph_laplacian(self.adjacency, normalized)

    def scalar_eigenpairs(self, k: int, extra: int | None = None) -> tuple[Tensor, Tensor]:
        """Smallest ``k`` eigenpairs of :meth:`scalar_laplacian`; eigenvectors scaled by ``sqrt(N)``."""
        lam, vec = smallest_eigenpairs(self.scalar_laplacian(), k, extra=extra)
        to = {"dtype": self.points.dtype, "device": self.points.device}
        return torch.from_numpy(lam).to(**to), torch.from_numpy(vec * np.sqrt(self.num_nodes)).to(**to)

    def normal_component(self, vectors: Tensor, index: Tensor | None = None) -> Tensor:
        """Length of each vector's part outside its node's tangent frame (``q x D`` -> ``q``; nodes ``index``,
        default all)."""
        T = self.frames if index is None else self.frames[index]
        inside = (T @ (T.transpose(1, 2) @ vectors.unsqueeze(-1))).squeeze(-1)
        return (vectors - inside).norm(dim=-1)
