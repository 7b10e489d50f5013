"""Boxes, grids, windows and polygons for point patterns: input checks, quadrature nodes, point-in-window."""

from __future__ import annotations

import torch
from torch import Tensor

_NODES = {1: 16, 2: 8, 3: 5}


def check_bounds(bounds, d: int | None = None, name: str = "bounds") -> Tensor:
    """Validate a ``2 x d`` box (finite, lower < upper) and return it as a tensor."""
    if not isinstance(bounds, Tensor):
        try:
            bounds = torch.as_tensor(bounds, dtype=torch.float64)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be a 2 x d tensor, got {type(bounds).__name__}") from err
    if bounds.dim() != 2 or bounds.shape[0] != 2 or (d is not None and bounds.shape[1] != d):
        want = f"2 x {d}" if d is not None else "2 x d"
        raise ValueError(f"{name} must be {want}, got shape {tuple(bounds.shape)}")
    if not torch.isfinite(bounds).all():
        raise ValueError(f"{name} contains NaN or inf")
    if not (bounds[1] > bounds[0]).all():
        raise ValueError(f"{name} must have lower < upper in every column, got {bounds.tolist()}")
    return bounds


def check_events(events, bounds) -> tuple[Tensor, Tensor]:
    """Validate ``events`` (``n x d``, d in 1..3, finite, n >= 1, inside ``bounds``); returns both tensors
    with ``bounds`` cast to the events' dtype and device."""
    if not isinstance(events, Tensor):
        raise TypeError(f"events must be an n x d tensor, got {type(events).__name__}")
    if not events.is_floating_point():
        raise TypeError(f"events must be a floating-point tensor, got {events.dtype}")
    if events.dim() == 1:
        events = events.unsqueeze(-1)
    if events.dim() != 2 or not 1 <= events.shape[1] <= 3:
        raise ValueError(f"events must be n x d with d = 1, 2 or 3, got shape {tuple(events.shape)}")
    if events.shape[0] == 0:
        raise ValueError("events is empty: a Cox process needs at least one event")
    if not torch.isfinite(events).all():
        raise ValueError("events contains NaN or inf")
    bounds = check_bounds(bounds, events.shape[1]).to(events)
    outside = ((events < bounds[0]) | (events > bounds[1])).any(-1)
    if outside.any():
        raise ValueError(
            f"events: {int(outside.sum())} event(s) lie outside bounds {bounds.tolist()}, e.g. "
            f"{events[outside][0].tolist()}"
        )
    return events, bounds


def regular_grid(sizes: tuple[int, ...], dtype=torch.float64, device=None) -> Tensor:
    """Cell centres of a regular grid on the unit cube, row-major (``prod(sizes) x d``)."""
    axes = [(torch.arange(s, dtype=dtype, device=device) + 0.5) / s for s in sizes]
    return torch.cartesian_prod(*axes).reshape(-1, len(sizes))


def box_nodes(region: Tensor, bounds: Tensor, nodes_per_dim: int | None = None) -> tuple[Tensor, Tensor]:
    """Midpoint-rule nodes and weights for boxes clipped to ``bounds``.

    :param region: ``... x 2 x d`` boxes (lower row, upper row).
    :param bounds: ``2 x d``.
    :param nodes_per_dim: nodes per axis (default 16 / 8 / 5 for d = 1 / 2 / 3).
    :return: nodes ``... x p x d`` and weights ``... x p`` (the clipped box volume over ``p``; zero for a box
        that misses ``bounds``).
    """
    d = region.shape[-1]
    k = nodes_per_dim or _NODES[d]
    lo = torch.maximum(region[..., 0, :], bounds[0])
    hi = torch.minimum(region[..., 1, :], bounds[1])
    width = (hi - lo).clamp_min(0)  # ... x d
    offsets = regular_grid((k,) * d, dtype=region.dtype, device=region.device)  # p x d
    nodes = lo.unsqueeze(-2) + width.unsqueeze(-2) * offsets
    weights = (width.prod(-1) / offsets.shape[0]).unsqueeze(-1).expand(nodes.shape[:-1])
    return nodes, weights


def polygon_contains(polygons: list[Tensor], points: Tensor) -> Tensor:
    """Even-odd point-in-polygon test (outer boundaries and holes alike).

    :param polygons: list of ``k x 2`` vertex arrays (last vertex not repeated).
    :param points: ``n x 2``.
    :return: bool ``n``.
    """
    px, py = points[:, 0], points[:, 1]
    inside = torch.zeros(points.shape[0], dtype=torch.bool, device=points.device)
    for poly in polygons:
        poly = poly.to(points)
        x0, y0 = poly[:, 0], poly[:, 1]
        x1, y1 = poly[:, 0].roll(-1), poly[:, 1].roll(-1)
        for j in range(poly.shape[0]):
            crosses = (y0[j] > py) != (y1[j] > py)
            x_at = x0[j] + (py - y0[j]) * (x1[j] - x0[j]) / (y1[j] - y0[j] + (y1[j] == y0[j]))
            inside ^= crosses & (px < x_at)
    return inside


def window_contains(ds, points: Tensor) -> Tensor:
    """Whether ``points`` (``n x d``, same columns as ``ds.X``) lie in the observation window of the point
    pattern ``ds`` (a :func:`gpkit.datasets.load` record): its bounds and, if any, its polygons."""
    b = ds.extras["bounds"].to(points)
    ok = ((points >= b[0]) & (points <= b[1])).all(-1)
    if ds.extras.get("polygons"):
        ok &= polygon_contains(ds.extras["polygons"], points[:, :2])
    return ok
