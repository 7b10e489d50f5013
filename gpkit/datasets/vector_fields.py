"""Tangent vector fields on the sphere, the torus and the shared meshes (the geometry lives in gpkit.manifolds)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gpkit.manifolds.surfaces import fibonacci_sphere, project_tangent, torus_points, vertex_normals

from .dataset import Dataset, random_split

FIELD_KINDS = ("smooth", "rotation")


def smooth_ambient_field(
    points: Tensor, seed: int = 0, lengthscale: float = 1.0, num_features: int = 32
) -> Tensor:
    """A smooth random vector field on R^3 evaluated at ``points`` (``n x 3``): random Fourier features
    ``sum_j a_j cos(w_j . x + b_j)`` with ``w_j ~ N(0, I / lengthscale^2)``, ``a_j ~ N(0, I / J)`` (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(num_features, 3, generator=gen, dtype=torch.float64) / lengthscale
    b = 2 * math.pi * torch.rand(num_features, generator=gen, dtype=torch.float64)
    a = torch.randn(num_features, 3, generator=gen, dtype=torch.float64) / math.sqrt(num_features)
    return (torch.cos(points.to(torch.float64) @ w.T + b) @ a).to(points.dtype)


def sphere_vector_field(
    n: int = 1000,
    kind: str = "smooth",
    seed: int = 0,
    lengthscale: float = 1.0,
    noise: float = 0.0,
    test_fraction: float = 0.5,
    dtype: torch.dtype = torch.float64,
) -> Dataset:
    """Tangent vectors on the unit sphere at ``n`` Fibonacci-lattice points.

    ``kind="smooth"``: a random smooth ambient field (:func:`smooth_ambient_field`) projected to the
    tangent planes; ``kind="rotation"``: ``e_z x x`` (rotation about the z axis, zero at the poles).

    :param noise: std of Gaussian noise added to ``y`` (tangent part only); ``extras["f"]`` is noise-free.
    :return: :class:`Dataset` with ``X`` ``n x 3``, ``y`` ``n x 3``, ``extras["normals"]`` ``n x 3``.
    """
    X = fibonacci_sphere(n, dtype)
    return _field_dataset(
        "sphere-vector-field",
        X,
        X.clone(),
        kind,
        seed,
        lengthscale,
        noise,
        test_fraction,
        torch.tensor([0.0, 0.0, 1.0], dtype=dtype).expand(n, 3).cross(X, dim=-1),
    )


def torus_vector_field(
    n: int = 1000,
    kind: str = "smooth",
    seed: int = 0,
    major: float = 1.0,
    minor: float = 0.4,
    lengthscale: float = 1.0,
    noise: float = 0.0,
    test_fraction: float = 0.5,
    dtype: torch.dtype = torch.float64,
) -> Dataset:
    """Tangent vectors on a torus (major radius ``major`` around the z axis, tube radius ``minor``).

    ``kind="smooth"``: projected random smooth ambient field; ``kind="rotation"``: ``e_z x x``
    (rotation about the symmetry axis, a Killing field). ``extras``: ``normals``, ``angles``.
    """
    X, normals, angles = torus_points(n, major, minor, seed, dtype)
    rot = torch.tensor([0.0, 0.0, 1.0], dtype=dtype).expand(n, 3).cross(X, dim=-1)
    ds = _field_dataset("torus-vector-field", X, normals, kind, seed, lengthscale, noise, test_fraction, rot)
    ds.extras.update(angles=angles, major=major, minor=minor)
    return ds


def _field_dataset(
    name: str,
    X: Tensor,
    normals: Tensor,
    kind: str,
    seed: int,
    lengthscale: float,
    noise: float,
    test_fraction: float,
    rotation: Tensor,
) -> Dataset:
    if kind == "smooth":
        f = project_tangent(smooth_ambient_field(X, seed, lengthscale), normals)
    elif kind == "rotation":
        f = rotation
    else:
        raise ValueError(f"kind must be one of {FIELD_KINDS}, got {kind!r}")
    gen = torch.Generator().manual_seed(seed + 1)
    y = (
        f + project_tangent(noise * torch.randn(X.shape, generator=gen, dtype=X.dtype), normals)
        if noise
        else f
    )
    extras = {"normals": normals, "f": f, "kind": kind, "seed": seed}
    desc = f"{kind} tangent vector field on the {name.split('-')[0]} at {len(X)} points (seed {seed})."
    return Dataset(name, X, y, random_split(len(X), test_fraction, seed), extras, desc)


def mesh_vector_field(
    mesh: str = "bunny",
    seed: int = 0,
    lengthscale: float = 0.3,
    noise: float = 0.0,
    test_fraction: float = 0.5,
    dtype: torch.dtype = torch.float64,
) -> Dataset:
    """A smooth tangent field on the vertices of a shared mesh (``bunny``, ``bunny_fine``, ``sphere``, ``torus``).

    The random smooth ambient field of :func:`smooth_ambient_field` (``lengthscale`` relative to the
    mesh's bounding-box diagonal) projected onto the tangent planes of the area-weighted vertex normals.
    Needs the shared data folder. ``extras``: ``faces``, ``normals``, ``f`` (noise-free field).
    """
    from .manifolds import load_mesh

    base = load_mesh(mesh, dtype=dtype)
    X, faces = base.X, base.extras["faces"]
    normals = vertex_normals(X, faces)
    diag = float((X.max(0).values - X.min(0).values).norm())
    rotation = torch.tensor([0.0, 0.0, 1.0], dtype=dtype).expand_as(X).cross(X, dim=-1)
    ds = _field_dataset(
        f"{mesh}-mesh-field", X, normals, "smooth", seed, lengthscale * diag, noise, test_fraction, rotation
    )
    ds.extras["faces"] = faces
    return ds
