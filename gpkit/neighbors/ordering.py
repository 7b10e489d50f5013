r"""Exact maximin (farthest-point) ordering and duplicate detection.

The maximin ordering of :math:`x_1, \dots, x_n` starts at one point and repeatedly appends the point
farthest from all points chosen so far. :math:`\ell_k` is that farthest distance at step ``k``; it is
non-increasing and is the length scale that the sparsity patterns of
Schäfer, Katzfuss & Owhadi (2021, "Sparse Cholesky factorization by Kullback-Leibler minimization")
are built from.
"""

from __future__ import annotations

import heapq
import warnings

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from gpkit.neighbors._utils import as_points, scale_points, sq_dist

# a ball query returning fewer than n / _BALL_FRACTION points is cheaper through the kd-tree
_BALL_FRACTION = 32


def maximin_order(
    X: Tensor,
    lengthscale: Tensor | float | None = None,
    duplicates: str = "warn",
) -> tuple[Tensor, Tensor]:
    r"""Exact maximin ordering of the rows of ``X``.

    The first point is the one closest to the centroid of ``X``. Every next point maximises the
    distance to the points ordered before it. Ties (equal squared distances, e.g. on grids) go to the
    smallest original index, so the ordering is deterministic. Distances are computed in float64 on the
    CPU; ``X`` may live on any device.

    Algorithm: a max-heap of each unordered point's distance to the ordered set, with stale keys
    refreshed lazily when they reach the top; after choosing point ``i`` at distance :math:`\ell`, only
    points within :math:`\ell` of :math:`x_i` can get closer, and a kd-tree ball query (radius
    shrinking with :math:`\ell`) finds them. For quasi-uniform inputs the ``n`` ball queries return
    :math:`O(n \log n)` points in total (about 4-5 s of CPU time for :math:`n = 10^5` points in 5-D on
    one core).

    Repeated rows are ordered last, with distance 0; the sparsity set of a repeat then holds only its
    copies (:math:`\rho \cdot 0 = 0`) and kernel matrices are singular. See :func:`find_duplicates`.

    :param X: points, shape ``(n, d)``.
    :param lengthscale: optional ARD lengthscales (1 or ``d`` elements, e.g. ``kernel.lengthscale``);
        the ordering is that of ``X / lengthscale`` and ``dist`` is measured in those units.
    :param duplicates: ``"warn"`` (default), ``"raise"`` (ValueError) or ``"ignore"`` when ``X`` has
        repeated rows.
    :return: ``(order, dist)``: ``order`` a LongTensor ``(n,)`` with ``X[order]`` the ordered points,
        ``dist`` ``(n,)`` in ``X``'s dtype with ``dist[k]`` the distance from ``X[order[k]]`` to
        ``X[order[:k]]`` (``dist[0] = inf``).
    """
    if duplicates not in ("warn", "raise", "ignore"):
        raise ValueError(f"duplicates must be 'warn', 'raise' or 'ignore', got {duplicates!r}")
    arr, device, dtype = as_points(X, "X")
    arr = scale_points(arr, lengthscale)
    order, sq = _maximin_numpy(arr)
    if arr.shape[0] > 1 and sq[-1] == 0.0 and duplicates != "ignore":
        msg = (
            f"X has {int((sq == 0.0).sum())} duplicated rows; the kernel matrix is singular. "
            "Use gpkit.neighbors.find_duplicates(X) to find and merge them."
        )
        if duplicates == "raise":
            raise ValueError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
    dist = np.sqrt(sq)
    return (
        torch.from_numpy(order).to(device),
        torch.from_numpy(dist).to(device=device, dtype=dtype),
    )


def _maximin_numpy(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact maximin ordering of a float64 array; returns ``(order, squared distances)``."""
    n = X.shape[0]
    first = int(np.argmin(sq_dist(X, X.mean(0))))
    order = np.empty(n, dtype=np.int64)
    out_sq = np.empty(n)
    order[0], out_sq[0] = first, np.inf
    if n == 1:
        return order, out_sq
    # current squared distance of each point to the ordered set (meaningless once a point is ordered)
    sq = sq_dist(X, X[first])
    done = np.zeros(n, dtype=bool)
    done[first] = True
    # Max-heap as a min-heap of Python ints (cheaper to compare than tuples): for a non-negative float
    # the IEEE bit pattern orders like the value, so key = (2^63 - bits(sq[i])) * 2^shift + i pops the
    # largest distance first and, among equal ones, the smallest index. A key may be stale (sq[i] has
    # decreased since); it is refreshed when it reaches the top.
    bits = sq.view(np.int64)  # live view of sq
    shift, top = n.bit_length(), 1 << 63
    low = (1 << shift) - 1
    heap = [((top - b) << shift) | i for i, b in enumerate(bits.tolist()) if i != first]
    heapq.heapify(heap)
    pop, replace = heapq.heappop, heapq.heapreplace
    tree = None
    for k in range(1, n):
        while True:
            key = heap[0]
            i = key & low
            fresh = ((top - int(bits[i])) << shift) | i
            if key == fresh:
                pop(heap)
                break
            replace(heap, fresh)
        cur = sq[i]
        order[k], out_sq[k] = i, cur
        done[i] = True
        if cur == 0.0:  # every remaining point duplicates an ordered one
            continue
        if tree is None:  # early balls hold most points: scan them all until a ball holds < n / 32
            cand = np.flatnonzero(~done)
        else:
            # a point can only get closer if it lies strictly inside the ball of radius sqrt(cur);
            # the small inflation guards against the tree rounding differently from sq_dist
            cand = np.asarray(tree.query_ball_point(X[i], np.sqrt(cur) * (1 + 1e-9)), dtype=np.int64)
        if cand.size == 0:
            continue
        new = sq_dist(X[cand], X[i])
        closer = new < sq[cand]
        sq[cand[closer]] = new[closer]
        if tree is None and np.count_nonzero(new <= cur) * _BALL_FRACTION < n:
            tree = cKDTree(X)
    return order, out_sq


def find_duplicates(X: Tensor, lengthscale: Tensor | float | None = None) -> list[Tensor]:
    """Groups of exactly repeated rows of ``X``.

    Models whose kernel matrix would be singular use this to reject or merge repeated inputs with a
    clear message.

    :param X: points, shape ``(n, d)``.
    :param lengthscale: optional ARD lengthscales (rows are compared after scaling, which only matters
        through rounding).
    :return: a list of LongTensors (on ``X``'s device), one per repeated row, each holding the sorted
        indices of the rows equal to it (length >= 2); empty if all rows are distinct.
    """
    arr, device, _ = as_points(X, "X")
    arr = scale_points(arr, lengthscale)
    _, inverse, counts = np.unique(arr, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    by_row = np.argsort(inverse, kind="stable")  # rows grouped by value, ascending within a group
    groups = np.split(by_row, np.cumsum(counts)[:-1])
    groups = sorted((g for g in groups if g.size > 1), key=lambda g: g[0])
    return [torch.from_numpy(g.astype(np.int64)).to(device) for g in groups]
