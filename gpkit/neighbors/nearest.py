"""k-nearest-neighbour search: among a point set, and among the points earlier in an ordering."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from gpkit.neighbors._utils import as_points, check_int, scale_points

# bytes of distance matrix per block in the torch search
_BLOCK_BYTES = 256 * 2**20


def knn(
    queries: Tensor,
    points: Tensor,
    k: int,
    lengthscale: Tensor | float | None = None,
    backend: str | None = None,
    workers: int = -1,
) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest ``points`` of every query, nearest first (Euclidean).

    Two backends: ``"kdtree"`` (SciPy ``cKDTree`` on the CPU, queries spread over ``workers`` threads; the
    default unless both inputs are on CUDA) and ``"torch"`` (default for CUDA inputs): a blocked exact search on the inputs' device,
    squared distances of centred points by matrix products, ``topk``, then the kept distances recomputed
    directly (so returned distances have full precision; only near-ties closer than the matmul rounding
    may swap order). Ties are broken arbitrarily.

    :param queries: query points, shape ``(q, d)``.
    :param points: candidate points, shape ``(n, d)``.
    :param k: number of neighbours, ``1 <= k <= n``.
    :param lengthscale: optional ARD lengthscales; distances are those of the scaled inputs.
    :param backend: ``"kdtree"``, ``"torch"`` or None (choose by device).
    :param workers: threads of the kd-tree queries (SciPy's ``workers``: -1 = all cores); results do not
        depend on it.
    :return: ``(dist, index)``, each ``(q, k)``; ``index`` a LongTensor into ``points``, on
        ``queries``' device; ``dist`` in ``queries``' dtype.
    """
    if backend not in (None, "kdtree", "torch"):
        raise ValueError(f"backend must be None, 'kdtree' or 'torch', got {backend!r}")
    both_tensors = isinstance(queries, Tensor) and isinstance(points, Tensor)
    if backend == "torch" and not both_tensors:
        raise TypeError("backend='torch' needs queries and points as torch.Tensor")
    if backend == "torch" or (backend is None and both_tensors and queries.is_cuda and points.is_cuda):
        return _knn_torch(queries, points, k, lengthscale)
    q_arr, device, dtype = as_points(queries, "queries")
    p_arr, _, _ = as_points(points, "points")
    if q_arr.shape[1] != p_arr.shape[1]:
        raise ValueError(f"queries has d={q_arr.shape[1]} columns but points has d={p_arr.shape[1]}")
    k = check_int(k, "k", 1, p_arr.shape[0])
    workers = _check_workers(workers)
    q_arr, p_arr = scale_points(q_arr, lengthscale), scale_points(p_arr, lengthscale)
    dist, index = cKDTree(p_arr).query(q_arr, k=[*range(1, k + 1)], workers=workers)
    return (
        torch.from_numpy(dist).to(device=device, dtype=dtype),
        torch.from_numpy(index.astype(np.int64)).to(device),
    )


def _check_workers(workers) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers == 0 or workers < -1:
        raise ValueError(f"workers must be a positive int or -1 (all cores), got {workers!r}")
    return workers


def _knn_torch(queries: Tensor, points: Tensor, k: int, lengthscale) -> tuple[Tensor, Tensor]:
    for name, t in (("queries", queries), ("points", points)):
        if t.dim() != 2 or t.shape[0] == 0 or t.shape[1] == 0:
            raise ValueError(f"{name} must have shape (n, d) with n, d >= 1, got {tuple(t.shape)}")
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} contains NaN or inf")
    if queries.shape[1] != points.shape[1]:
        raise ValueError(f"queries has d={queries.shape[1]} columns but points has d={points.shape[1]}")
    k = check_int(k, "k", 1, points.shape[0])
    if not queries.is_floating_point():
        raise TypeError(f"queries must be a floating-point tensor, got {queries.dtype}")
    dtype = queries.dtype
    Q, P = queries.detach(), points.detach().to(queries.device, dtype)
    if lengthscale is not None:
        ls = torch.as_tensor(lengthscale, dtype=dtype, device=Q.device).detach().reshape(-1)
        if (
            ls.numel() not in (1, Q.shape[1])
            or not bool((ls > 0).all())
            or not bool(torch.isfinite(ls).all())
        ):
            raise ValueError(f"lengthscale must have 1 or d={Q.shape[1]} positive finite elements")
        Q, P = Q / ls, P / ls
    centre = P.mean(0)  # centring limits cancellation in |p|^2 - 2 q.p
    Q, P = Q - centre, P - centre
    p_sq = (P * P).sum(-1)
    rows = max(1, _BLOCK_BYTES // (P.shape[0] * Q.element_size()))
    dists, indices = [], []
    for start in range(0, Q.shape[0], rows):
        Qb = Q[start : start + rows]  # shape: (b, d)
        sq = p_sq - 2.0 * Qb @ P.T  # shape: (b, n), |q|^2 omitted (constant per row)
        idx = sq.topk(k, dim=-1, largest=False).indices  # shape: (b, k)
        exact = (Qb.unsqueeze(-2) - P[idx]).square().sum(-1)  # shape: (b, k)
        exact, perm = exact.sort(dim=-1)
        dists.append(exact.sqrt())
        indices.append(idx.gather(-1, perm))
    return torch.cat(dists), torch.cat(indices)


def previous_knn(
    X_ordered: Tensor,
    k: int,
    lengthscale: Tensor | float | None = None,
    workers: int = -1,
) -> tuple[Tensor, Tensor]:
    """For each point ``j``, its ``k`` nearest points among ``X_ordered[:j]`` (VNNGP-style neighbours).

    Exact for any order of the rows; fastest for a maximin ordering. Works in geometric blocks of rows
    ``[a, b)``: one kd-tree on ``X_ordered[:b]``, a kNN query with a few extra neighbours, the
    neighbours ``>= j`` dropped, and a larger query for the (rare) rows left with fewer than ``k``.

    :param X_ordered: ordered points, shape ``(n, d)``.
    :param k: neighbours per point, ``1 <= k <= n``; row ``j`` has only ``min(j, k)`` of them.
    :param lengthscale: optional ARD lengthscales; distances are those of the scaled inputs.
    :param workers: threads of the kd-tree queries (-1 = all cores); results do not depend on it.
    :return: ``(index, mask)``, each ``(n, k)``: row ``j`` lists its neighbours nearest first in the
        first ``min(j, k)`` columns (``mask`` True); the remaining entries are index 0 with mask False.
        On ``X_ordered``'s device.
    """
    arr, device, _ = as_points(X_ordered, "X_ordered")
    n = arr.shape[0]
    k = check_int(k, "k", 1, n)
    workers = _check_workers(workers)
    arr = scale_points(arr, lengthscale)
    index = np.zeros((n, k), dtype=np.int64)
    mask = np.zeros((n, k), dtype=bool)
    # rows j <= k: every earlier point is a neighbour
    head = min(n, k + 1)
    for j in range(1, head):
        d2 = ((arr[:j] - arr[j]) ** 2).sum(-1)
        index[j, :j] = np.argsort(d2, kind="stable")
        mask[j, :j] = True
    a = head
    while a < n:
        b = min(n, max(a + 1, math.ceil(a * 1.25)))
        tree = cKDTree(arr[:b])
        rows = np.arange(a, b)
        kq = min(b, k + math.ceil(k * (b - a) / b) + 2)
        while rows.size:
            _, nb = tree.query(arr[rows], k=[*range(1, kq + 1)], workers=workers)
            valid = nb < rows[:, None]
            ok = valid.sum(-1) >= k
            if kq == b:
                ok[:] = True  # all earlier points were candidates
            # first k valid entries of each finished row, keeping the nearest-first order
            first = np.argsort(~valid[ok], axis=1, kind="stable")[:, :k]
            index[rows[ok]] = np.take_along_axis(nb[ok], first, axis=1)
            mask[rows[ok]] = True
            rows = rows[~ok]
            kq = min(b, 2 * kq)
        a = b
    return torch.from_numpy(index).to(device), torch.from_numpy(mask).to(device)
