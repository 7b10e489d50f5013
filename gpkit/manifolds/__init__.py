r"""Graph and manifold geometry of point clouds (RVGP's pre-processing) and closed-form surfaces.

From points ``N x D`` sampled on an unknown ``d``-manifold: the kNN graph (:func:`knn_graph`, built on
:func:`gpkit.neighbors.knn`), tangent frames by local PCA with an intrinsic-dimension estimate
(:func:`tangent_frames`), Procrustes connections and the sparse connection Laplacian
(:func:`connection_laplacian`), its smallest eigenpairs with whole eigenvalue clusters
(:func:`smallest_eigenpairs`, dense or shift-invert Lanczos) and the positional encodings
``P_i = T_i U_i`` (:func:`positional_encodings`). :class:`ManifoldGeometry` bundles the pipeline::

    geometry = ManifoldGeometry.from_points(points, num_neighbors=10, num_eigenpairs=200)
    P = geometry.encodings()  # N x D x k

Everything is vectorised over nodes and edges (batched eigh/SVD, sparse assembly by index arithmetic).
"""

from gpkit.manifolds.connection import connection_laplacian, procrustes_connections
from gpkit.manifolds.geometry import ManifoldGeometry, positional_encodings
from gpkit.manifolds.graph import estimate_dimension, graph_laplacian, knn_graph, tangent_frames
from gpkit.manifolds.spectrum import auto_num_eigenpairs, cluster_cut, smallest_eigenpairs
from gpkit.manifolds.surfaces import (
    fibonacci_sphere,
    folded_sheet,
    project_tangent,
    sphere_frame,
    torus_points,
    vertex_normals,
)

__all__ = [
    "ManifoldGeometry",
    "auto_num_eigenpairs",
    "cluster_cut",
    "connection_laplacian",
    "estimate_dimension",
    "fibonacci_sphere",
    "folded_sheet",
    "graph_laplacian",
    "knn_graph",
    "positional_encodings",
    "procrustes_connections",
    "project_tangent",
    "smallest_eigenpairs",
    "sphere_frame",
    "tangent_frames",
    "torus_points",
    "vertex_normals",
]
