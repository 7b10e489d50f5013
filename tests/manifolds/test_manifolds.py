"""Geometry of RVGP: kNN graph, tangent frames, connection Laplacian, eigenpairs with whole clusters."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from gpkit.manifolds import (
    ManifoldGeometry,
    cluster_cut,
    connection_laplacian,
    fibonacci_sphere,
    folded_sheet,
    graph_laplacian,
    knn_graph,
    positional_encodings,
    smallest_eigenpairs,
    tangent_frames,
    torus_points,
)


def _plane(n=150, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g)
    return torch.cat([xy, torch.zeros(n, 1)], -1)


def test_knn_graph_symmetric_unit_weights_no_self_loops():
    X = fibonacci_sphere(200)
    A = knn_graph(X, 6)
    assert (A != A.T).nnz == 0 and A.diagonal().sum() == 0
    assert set(np.unique(A.data)) == {1.0}
    assert (np.asarray(A.sum(1)).ravel() >= 6).all()
    L = graph_laplacian(A)
    assert np.allclose(L @ np.ones(200), 0)


def test_knn_graph_with_repeated_points_has_no_self_loops():
    X = torch.cat([fibonacci_sphere(50), fibonacci_sphere(50)[:5]])
    assert knn_graph(X, 4).diagonal().sum() == 0


@pytest.mark.parametrize("normalized", [False, True])
def test_connection_laplacian_symmetric_psd(normalized):
    g = ManifoldGeometry.from_points(fibonacci_sphere(300), num_neighbors=8, normalized=normalized)
    L = g.laplacian.toarray()
    assert L.shape == (600, 600)
    assert np.abs(L - L.T).max() < 1e-14
    assert np.linalg.eigvalsh(L).min() > -1e-10


def test_connection_laplacian_is_kron_on_flat_aligned_sample():
    X = _plane()
    A = knn_graph(X, 7)
    frames = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]).expand(150, 3, 2)
    Lc = connection_laplacian(A, frames)
    kron = sp.kron(graph_laplacian(A), sp.identity(2))
    assert abs(Lc - kron).max() < 1e-14
    # local-PCA frames on the plane differ by in-plane rotations: L_c is then similar to L (x) I
    pca, dim, _ = tangent_frames(X, 10)
    assert dim == 2
    Lp = connection_laplacian(A, pca).toarray()
    assert np.allclose(np.linalg.eigvalsh(Lp), np.linalg.eigvalsh(kron.toarray()), atol=1e-10)


def test_intrinsic_dimension_estimate():
    t = torch.linspace(0, 2 * np.pi, 201)[:-1]
    circle = torch.stack([torch.cos(t), torch.sin(t), 0.3 * torch.cos(t)], -1)
    assert tangent_frames(circle, 8)[1] == 1
    assert tangent_frames(fibonacci_sphere(300), 15)[1] == 2
    assert tangent_frames(torus_points(500)[0], 15)[1] == 2
    X, normals, _ = folded_sheet(3000, seed=0)  # dense enough that neighbourhoods stay on one layer
    frames, dim, _ = tangent_frames(X, 15)
    assert dim == 2
    assert torch.median((frames.transpose(1, 2) @ normals.unsqueeze(-1)).norm(dim=1)) < 0.05


def test_frames_orthonormal_and_tangent_on_sphere():
    X = fibonacci_sphere(500)
    frames, _, _ = tangent_frames(X, 15)
    eye = frames.transpose(1, 2) @ frames
    assert torch.allclose(eye, torch.eye(2).expand_as(eye), atol=1e-12)
    tilt = (frames.transpose(1, 2) @ X.unsqueeze(-1)).norm(dim=1)  # |T^T n|: sine of the frame error
    assert tilt.median() < 0.02 and tilt.max() < 0.06


def test_cluster_cut_keeps_degenerate_clusters_whole():
    lam = np.array([0.0, 1, 1, 1, 3, 3, 3, 3, 3, 6, 6, 6])
    assert cluster_cut(lam, 2) == 4
    assert cluster_cut(lam, 4) == 4
    assert cluster_cut(lam, 6) == 9
    # the sphere's vector Laplacian has 2(2l+1)-fold clusters: cumulative 6, 16, 30, 48, 70, 96, 126
    g = ManifoldGeometry.from_points(fibonacci_sphere(1000), 10)
    for k, expected in [(5, 6), (20, 30), (60, 70), (100, 126)]:
        assert smallest_eigenpairs(g.laplacian, k)[0].size == expected


def test_sparse_eigensolver_matches_dense():
    L = ManifoldGeometry.from_points(fibonacci_sphere(700), 10).laplacian
    lam_d, vec_d = smallest_eigenpairs(L, 40, method="dense")
    lam_s, vec_s = smallest_eigenpairs(L, 40, method="sparse")
    assert lam_d.size == lam_s.size == 48
    assert np.allclose(lam_d, lam_s, rtol=1e-8, atol=1e-10)
    # same invariant subspace (eigenvectors of a cluster are only defined up to rotation)
    overlap = np.linalg.svd(vec_d.T @ vec_s, compute_uv=False)
    assert overlap.min() > 1 - 1e-8
    assert np.allclose(vec_s.T @ vec_s, np.eye(48), atol=1e-8)


def test_positional_encodings_tangent_and_scaled():
    g = ManifoldGeometry.from_points(fibonacci_sphere(400), 10, num_eigenpairs=30)
    P = g.encodings()
    assert P.shape == (400, 3, 30)
    assert torch.allclose(P, positional_encodings(g.frames, g.eigenvectors))
    normal_part = P - g.frames @ (g.frames.transpose(1, 2) @ P)
    assert normal_part.abs().max() < 1e-12
    assert torch.allclose(P.square().sum((0, 1)) / (400 * 2), torch.ones(30, dtype=P.dtype))


def test_scalar_eigenpairs_constant_first():
    g = ManifoldGeometry.from_points(fibonacci_sphere(300), 8)
    lam, vec = g.scalar_eigenpairs(5)
    assert lam[0].abs() < 1e-8 and torch.allclose(vec[:, 0].abs(), torch.ones(300), atol=1e-6)


def test_float32_points():
    g = ManifoldGeometry.from_points(fibonacci_sphere(300).float(), 8, num_eigenpairs=10)
    assert g.frames.dtype == torch.float32 and g.encodings().dtype == torch.float32


def test_bad_inputs():
    X = fibonacci_sphere(50)
    with pytest.raises(ValueError, match="points contains NaN"):
        knn_graph(torch.cat([X, torch.full((1, 3), float("nan"))]))
    with pytest.raises(TypeError, match="points must be a torch.Tensor"):
        knn_graph(X.numpy())
    with pytest.raises(ValueError, match="num_neighbors"):
        knn_graph(X, 50)
    with pytest.raises(ValueError, match="dim"):
        tangent_frames(X, 10, dim=4)
    with pytest.raises(ValueError, match="frames"):
        ManifoldGeometry.from_points(X, 5, frames=torch.zeros(49, 3, 2))
    with pytest.raises(ValueError, match="frames contains NaN"):
        ManifoldGeometry.from_points(X, 5, frames=torch.full((50, 3, 2), float("nan")))
    with pytest.raises(ValueError, match="eigenpairs"):
        smallest_eigenpairs(sp.identity(10), 10)
