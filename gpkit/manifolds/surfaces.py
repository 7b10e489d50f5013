"""Closed-form surfaces and their tangent geometry: sphere, torus, folded sheet, triangle-mesh normals."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "fibonacci_sphere",
    "folded_sheet",
    "project_tangent",
    "sphere_frame",
    "torus_points",
    "vertex_normals",
]


def fibonacci_sphere(n: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """``n`` nearly uniform points on the unit sphere (Fibonacci lattice), ``n x 3``."""
    k = torch.arange(n, dtype=dtype) + 0.5
    z = 1 - 2 * k / n
    phi = k * math.pi * (3 - math.sqrt(5))
    r = torch.sqrt(1 - z**2)
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1)


def sphere_frame(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit-sphere points and the east/north unit tangent vectors at latitude/longitude (degrees).

    :return: ``(points, east, north)`` each ``n x 3``.
    """
    la, lo = np.deg2rad(lat), np.deg2rad(lon)
    points = np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], -1)
    east = np.stack([-np.sin(lo), np.cos(lo), np.zeros_like(lo)], -1)
    north = np.stack([-np.sin(la) * np.cos(lo), -np.sin(la) * np.sin(lo), np.cos(la)], -1)
    return points, east, north


def project_tangent(vectors: Tensor, normals: Tensor) -> Tensor:
    """Remove the normal component: ``v - (v . n) n`` for unit normals ``n`` (both ``n x 3``)."""
    return vectors - (vectors * normals).sum(-1, keepdim=True) * normals


def torus_points(
    n: int, major: float = 1.0, minor: float = 0.4, seed: int = 0, dtype: torch.dtype = torch.float64
) -> tuple[Tensor, Tensor, Tensor]:
    """Area-uniform random points on a torus around the z axis (rejection sampling).

    :return: ``(points, normals, angles)`` with ``angles`` ``n x 2`` = (theta around the tube, phi around z).
    """
    if not 0 < minor < major:
        raise ValueError(f"need 0 < minor < major, got minor={minor}, major={major}")
    gen = torch.Generator().manual_seed(seed)
    theta = torch.empty(0, dtype=dtype)
    while theta.numel() < n:
        t = 2 * math.pi * torch.rand(2 * n, generator=gen, dtype=dtype)
        u = torch.rand(2 * n, generator=gen, dtype=dtype)
        theta = torch.cat([theta, t[u < (major + minor * torch.cos(t)) / (major + minor)]])
    theta = theta[:n]
    phi = 2 * math.pi * torch.rand(n, generator=gen, dtype=dtype)
    normals = torch.stack(
        [torch.cos(theta) * torch.cos(phi), torch.cos(theta) * torch.sin(phi), torch.sin(theta)], -1
    )
    centre = torch.stack([major * torch.cos(phi), major * torch.sin(phi), torch.zeros_like(phi)], -1)
    return centre + minor * normals, normals, torch.stack([theta, phi], -1)


def folded_sheet(
    n: int, gap: float = 0.15, length: float = 2.0, width: float = 1.0, seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor, Tensor]:
    """Area-uniform random points on a sheet folded into a "U": two flat layers ``gap`` apart joined by a
    half cylinder of diameter ``gap`` (a surface whose Euclidean distances short-cut its geodesics).

    :return: ``(points, normals, arclength)``; ``arclength`` ``n`` runs along the sheet from 0 (end of the
        lower layer) to ``2 * length + pi * gap / 2`` (end of the upper layer).
    """
    if not (gap > 0 and length > 0 and width > 0):
        raise ValueError(f"gap, length and width must be positive, got {gap}, {length}, {width}")
    gen = torch.Generator().manual_seed(seed)
    r = gap / 2
    total = 2 * length + math.pi * r
    s = total * torch.rand(n, generator=gen, dtype=dtype)
    y = width * torch.rand(n, generator=gen, dtype=dtype)
    bend = (s > length) & (s < length + math.pi * r)
    upper = s >= length + math.pi * r
    angle = ((s - length) / r).clamp(0, math.pi)
    x = torch.where(upper, total - s, torch.where(bend, length + r * torch.sin(angle), s))
    z = torch.where(upper, torch.full_like(s, gap), torch.where(bend, r - r * torch.cos(angle), torch.zeros_like(s)))
    nx = torch.where(bend, torch.sin(angle), torch.zeros_like(s))
    nz = torch.where(bend, -torch.cos(angle), torch.where(upper, torch.ones_like(s), -torch.ones_like(s)))
    normals = torch.stack([nx, torch.zeros_like(s), nz], -1)
    return torch.stack([x, y, z], -1), normals, s


def vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Area-weighted unit vertex normals of a triangle mesh (``N x 3`` from ``N x 3`` vertices, ``F x 3`` faces)."""
    v0, v1, v2 = (vertices[faces[:, k]] for k in range(3))
    face_n = torch.linalg.cross(v1 - v0, v2 - v0)  # length = 2 x triangle area
    normals = torch.zeros_like(vertices).index_add_(0, faces.reshape(-1), face_n.repeat_interleave(3, dim=0))
    return normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-300)
