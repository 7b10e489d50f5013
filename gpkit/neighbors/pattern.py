r"""Sparsity patterns of the inverse Cholesky factor for maximin-ordered points.

With :math:`\ell_j` the maximin distance of point :math:`j` (see :func:`~gpkit.neighbors.maximin_order`):

* sparsity sets :math:`S_j = \{i \le j : \|x_i - x_j\| \le \rho \ell_j\}`,
* reduced ancestor sets :math:`A_j = \{i \le j : \|x_i - x_j\| \le \rho \ell_i\}` (:math:`A_j \supseteq S_j`
  because :math:`\ell` is non-increasing).

Sets are found with kd-tree ball queries (no :math:`O(n^2)` step) and returned as a padded
:class:`Pattern`: one row per point, the set sorted by ascending index and right-aligned, so the point
itself is always the last column; padding on the left is index 0 with mask False.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from gpkit.neighbors._utils import as_dist, as_points, check_max_size, check_rho, scale_points, sq_dist

# pairs per ball-query call (bounds the Python lists the tree returns and the temporaries)
_CHUNK_PAIRS = 2**18
# the tree's own distance rounding may differ from sq_dist: query a hair wider, then filter exactly
_INFLATE = 1 + 1e-9
# entries per padded block when truncating long rows to max_size
_PACK_ENTRIES = 2**22


@dataclass(frozen=True, eq=False)
class Pattern:
    """A padded, right-aligned list of index sets, one row per point.

    :ivar index: LongTensor ``(n, m)``; row ``j`` holds its set in ascending order in the last
        ``sizes[j]`` columns (the row's own point last), index 0 before them.
    :ivar mask: bool tensor ``(n, m)``, True where ``index`` is an element of the set.
    """

    index: Tensor
    mask: Tensor

    @property
    def sizes(self) -> Tensor:
        """Set sizes, LongTensor ``(n,)``."""
        return self.mask.sum(-1)

    @property
    def max_size(self) -> int:
        """Width ``m`` of the padded layout (largest set)."""
        return self.index.shape[-1]

    def __len__(self) -> int:
        return self.index.shape[0]

    def __iter__(self):
        """Unpack as ``index, mask = pattern`` (the layout of :func:`~gpkit.neighbors.previous_knn`)."""
        return iter((self.index, self.mask))

    def to(self, device: torch.device | str) -> Pattern:
        """The same pattern with both tensors on ``device``."""
        return Pattern(self.index.to(device), self.mask.to(device))

    def as_sets(self) -> list[set[int]]:
        """The rows as Python sets (for inspection and tests)."""
        index, mask = self.index.cpu().numpy(), self.mask.cpu().numpy()
        return [set(row[m].tolist()) for row, m in zip(index, mask)]


def sparsity_pattern(
    X_ordered: Tensor,
    dist: Tensor,
    rho: float,
    max_size: int | None = None,
    lengthscale: Tensor | float | None = None,
) -> Pattern:
    r"""Sparsity sets :math:`S_j = \{i \le j : \|x_i - x_j\| \le \rho\, \ell_j\}` of maximin-ordered points.

    :param X_ordered: points in maximin order, shape ``(n, d)`` (``X[order]``).
    :param dist: maximin distances :math:`\ell`, shape ``(n,)`` (``dist[0] = inf``), in the units of
        ``X_ordered / lengthscale``.
    :param rho: radius factor :math:`\rho > 0`; larger means denser sets.
    :param max_size: keep at most this many nearest elements per set (the point itself always stays;
        equal distances favour the larger index).
    :param lengthscale: optional ARD lengthscales that ``dist`` was computed with.
    :return: :class:`Pattern` with rows :math:`S_j`, on ``X_ordered``'s device.
    """
    arr, device, _ = as_points(X_ordered, "X_ordered")
    ell = as_dist(dist, arr.shape[0], "dist")
    rho, max_size = check_rho(rho), check_max_size(max_size)
    arr = scale_points(arr, lengthscale)
    rows, cols, sq = _earlier_within(arr, rho * ell)
    return _pack(rows, cols, sq, arr.shape[0], max_size, device)


def ancestor_sets(
    X_ordered: Tensor,
    dist: Tensor,
    rho: float,
    max_size: int | None = None,
    lengthscale: Tensor | float | None = None,
) -> Pattern:
    r"""Reduced ancestor sets :math:`A_j = \{i \le j : \|x_i - x_j\| \le \rho\, \ell_i\}`.

    Without ``max_size``, :math:`A_j \supseteq S_j`. Their size grows like :math:`\log n`, so the padded
    width is larger than that of :func:`sparsity_pattern`; cap it with ``max_size`` for large ``n``.
    Arguments and layout as in :func:`sparsity_pattern`.
    """
    arr, device, _ = as_points(X_ordered, "X_ordered")
    ell = as_dist(dist, arr.shape[0], "dist")
    rho, max_size = check_rho(rho), check_max_size(max_size)
    arr = scale_points(arr, lengthscale)
    i, j, sq = _later_within(arr, arr, rho * ell, same=True)
    return _pack(j, i, sq, arr.shape[0], max_size, device)


def test_pattern(
    X_train_ordered: Tensor,
    dist_train: Tensor,
    X_test: Tensor,
    rho: float,
    max_size: int | None = None,
    lengthscale: Tensor | float | None = None,
) -> Pattern:
    r"""Conditioning sets of test points ordered after all ``n`` training points.

    Test point ``t`` (distance :math:`\ell_t` to the training set) gets the training points within
    :math:`\rho\, \ell_t`, and itself, labelled ``n + t``, as the last column. Test points do not
    condition on each other. ``dist_train`` is only checked here (it keeps the signature uniform with
    :func:`test_ancestor_sets`).

    :param X_train_ordered: training points in maximin order, shape ``(n, d)``.
    :param dist_train: their maximin distances, shape ``(n,)``.
    :param X_test: test points, shape ``(q, d)``.
    :return: :class:`Pattern` with ``q`` rows, on ``X_test``'s device.
    """
    train, test, _, device, rho, max_size = _check_test(
        X_train_ordered, dist_train, X_test, rho, max_size, lengthscale
    )
    ell_test = _dist_to_set(test, train)
    rows, cols, sq = _earlier_within(test, rho * ell_test, points=train)
    return _pack_test(rows, cols, sq, train.shape[0], test.shape[0], max_size, device)


def test_ancestor_sets(
    X_train_ordered: Tensor,
    dist_train: Tensor,
    X_test: Tensor,
    rho: float,
    max_size: int | None = None,
    lengthscale: Tensor | float | None = None,
) -> Pattern:
    r"""Ancestor sets of test points ordered after all ``n`` training points.

    Row ``t``: the training points ``i`` with :math:`\|x_i - x_t\| \le \rho \max(\ell_i, \ell_t)`
    (which contains the :func:`test_pattern` set) and the test point itself, labelled ``n + t``, last.
    Arguments as in :func:`test_pattern`.
    """
    train, test, ell, device, rho, max_size = _check_test(
        X_train_ordered, dist_train, X_test, rho, max_size, lengthscale
    )
    ell_test = _dist_to_set(test, train)
    rows_s, cols_s, sq_s = _earlier_within(test, rho * ell_test, points=train)
    cols_a, rows_a, sq_a = _later_within(train, test, rho * ell)
    rows, cols = np.concatenate([rows_s, rows_a]), np.concatenate([cols_s, cols_a])
    key, first = np.unique(rows * train.shape[0] + cols, return_index=True)
    sq = np.concatenate([sq_s, sq_a])[first]
    return _pack_test(
        key // train.shape[0], key % train.shape[0], sq, train.shape[0], test.shape[0], max_size, device
    )


def _check_test(X_train_ordered, dist_train, X_test, rho, max_size, lengthscale):
    train, _, _ = as_points(X_train_ordered, "X_train_ordered")
    test, device, _ = as_points(X_test, "X_test")
    if test.shape[1] != train.shape[1]:
        raise ValueError(f"X_test has d={test.shape[1]} columns but X_train_ordered has d={train.shape[1]}")
    ell = as_dist(dist_train, train.shape[0], "dist_train")
    train, test = scale_points(train, lengthscale), scale_points(test, lengthscale)
    return train, test, ell, device, check_rho(rho), check_max_size(max_size)


def _dist_to_set(queries: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Distance from every query to its nearest point, recomputed with :func:`sq_dist`."""
    _, nearest = cKDTree(points).query(queries, k=1)
    return np.sqrt(sq_dist(queries, points[nearest]))


def _ball_pairs(
    tree: cKDTree,
    centres: np.ndarray,
    points: np.ndarray,
    radius: np.ndarray,
    row_offset: int = 0,
    later_only: bool | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (centre ``r``, tree point ``c``) with ``||centres[r] - points[c]|| <= radius[r]``.

    ``later_only`` True keeps ``c >= r + row_offset``, False keeps ``c <= r + row_offset``. Rows go in
    chunks sized so that each chunk returns about ``_CHUNK_PAIRS`` pairs (the first balls can hold every
    point), and the tree's candidates are filtered exactly with :func:`sq_dist` chunk by chunk.
    :return: ``(rows + row_offset, cols, squared distances)``.
    """
    rows_out, cols_out, sq_out = [], [], []
    start, step, n_rows = 0, 64, centres.shape[0]
    while start < n_rows:
        stop = min(n_rows, start + step)
        r = radius[start:stop]
        found = tree.query_ball_point(centres[start:stop], r * _INFLATE, return_sorted=False)
        sizes = np.fromiter(map(len, found), dtype=np.int64, count=len(found))
        total = int(sizes.sum())
        cols = np.fromiter(chain.from_iterable(found), dtype=np.int64, count=total)
        rows = np.repeat(np.arange(start, stop), sizes)
        if later_only is not None:
            keep = cols >= rows + row_offset if later_only else cols <= rows + row_offset
            rows, cols = rows[keep], cols[keep]
        sq = sq_dist(centres[rows], points[cols])
        keep = np.sqrt(sq) <= radius[rows]
        rows_out.append(rows[keep] + row_offset)
        cols_out.append(cols[keep])
        sq_out.append(sq[keep])
        step = int(np.clip(_CHUNK_PAIRS * (stop - start) / max(total, 1), 16, 16384))
        start = stop
    return np.concatenate(rows_out), np.concatenate(cols_out), np.concatenate(sq_out)


def _finite(radius: np.ndarray, *arrays: np.ndarray) -> np.ndarray:
    """Replace infinite radii by one that covers every point."""
    span = max(float(np.ptp(a, axis=0).max()) for a in arrays)
    return np.where(np.isinf(radius), 2.0 * span + 1.0, radius)


def _earlier_within(X, radius, points=None):
    """Pairs ``(j, i)`` with ``||x_i - x_j|| <= radius[j]`` and, if ``points`` is None, ``i <= j`` in X.

    With ``points`` given, ``i`` ranges over all of ``points``. Otherwise rows are processed in doubling
    blocks ``[a, 2a)`` against a tree on ``X[:2a]``, so each query sees few later points.
    :return: ``(rows, cols, squared distances)``, rows ascending.
    """
    if points is not None:
        return _ball_pairs(cKDTree(points), X, points, _finite(radius, X, points))
    radius = _finite(radius, X)
    parts, a, n = [], 0, X.shape[0]
    while a < n:
        b = min(n, max(1, 2 * a))
        parts.append(_ball_pairs(cKDTree(X[:b]), X[a:b], X, radius[a:b], row_offset=a, later_only=False))
        a = b
    return tuple(np.concatenate(p) for p in zip(*parts))


def _later_within(X, Y, radius, same=False):
    """Pairs ``(i, j)`` with ``||x_i - y_j|| <= radius[i]`` (and ``j >= i`` if ``same``).

    :return: ``(rows i into X, cols j into Y, squared distances)``.
    """
    return _ball_pairs(cKDTree(Y), X, Y, _finite(radius, X, Y), later_only=True if same else None)


def _pack_test(rows, cols, sq, n_train, n_test, max_size, device) -> Pattern:
    own = np.arange(n_test)
    rows = np.concatenate([rows, own])
    cols = np.concatenate([cols, n_train + own])
    sq = np.concatenate([sq, np.zeros(n_test)])
    return _pack(rows, cols, sq, n_test, max_size, device)


def _pack(rows, cols, sq, n, max_size, device) -> Pattern:
    """Right-aligned padded layout of the pairs ``(row, col)``, each row sorted by ``col``.

    With ``max_size``, rows longer than it keep their ``max_size`` nearest entries (equal distances:
    larger ``col`` first, so a row keeps its own point, which has distance 0 and the largest label).
    """
    width = int(cols.max()) + 1
    counts = np.bincount(rows, minlength=n)
    long = np.zeros(n, dtype=bool) if max_size is None else counts > max_size
    if long.any():
        by_key = np.argsort(rows * width + cols)
        rows, cols, sq = rows[by_key], cols[by_key], sq[by_key]
        m = max_size
    else:  # the distances are not needed: sorting the keys alone is faster
        key = np.sort(rows * width + cols)
        rows, cols = key // width, key % width
        m = int(counts.max())
    index = np.zeros((n, m), dtype=np.int64)
    mask = np.zeros((n, m), dtype=bool)
    short = ~long[rows]
    r = rows[short]
    pos = m - counts[r] + _rank_in_row(rows, n)[short]
    index[r, pos] = cols[short]
    mask[r, pos] = True
    if long.any():
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        long_rows = np.flatnonzero(long)
        long_rows = long_rows[np.argsort(counts[long_rows], kind="stable")]
        begin = 0
        sizes = counts[long_rows]
        while begin < long_rows.size:
            # rows of similar length together, padded to the longest: at most _PACK_ENTRIES entries
            padded = sizes[begin:] * np.arange(1, sizes.size - begin + 1)  # non-decreasing
            stop = begin + max(1, int(np.searchsorted(padded, _PACK_ENTRIES, side="right")))
            chunk = long_rows[begin:stop]
            c_max = int(counts[chunk[-1]])
            offs = np.arange(c_max)
            valid = offs < counts[chunk][:, None]
            at = np.where(valid, starts[chunk][:, None] + offs, 0)
            # reversed rows: columns descending, so the stable sort breaks distance ties to the larger col
            d = np.where(valid, sq[at], np.inf)[:, ::-1]
            c = cols[at][:, ::-1]
            nearest = np.argsort(d, axis=1, kind="stable")[:, :max_size]
            index[chunk] = np.sort(np.take_along_axis(c, nearest, axis=1), axis=1)
            mask[chunk] = True
            begin = stop
    return Pattern(torch.from_numpy(index).to(device), torch.from_numpy(mask).to(device))


def _rank_in_row(rows: np.ndarray, n: int) -> np.ndarray:
    """Position of every entry within its row, for ``rows`` sorted ascending."""
    starts = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))[:-1]])
    return np.arange(rows.shape[0]) - starts[rows]


# the names start with "test_": tell pytest these are not tests when a test module imports them
test_pattern.__test__ = False
test_ancestor_sets.__test__ = False
