r"""The neighbour structure of a maximin-ordered sparse inverse Cholesky factor, as one object.

:class:`MaximinStructure` bundles what a Vecchia-type variational strategy needs: the maximin ordering,
the sparsity pattern ``S_j``, the reduced ancestor sets ``A_j`` and the conditioning sets of test points
(ordered after all training points). Every set uses one convention, that of
:func:`gpkit.operators.canonical_pattern`: one row per point, ascending indices (in the ordering),
``-1`` padding on the left, the point itself last.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from gpkit.neighbors._utils import as_points, scale_points
from gpkit.neighbors.ordering import maximin_order
from gpkit.neighbors.pattern import ancestor_sets, sparsity_pattern, test_ancestor_sets

__all__ = ["MaximinStructure"]

# test points fade a conditioning point out over the outer part of their ball (r / R in [_FADE, 1])
_FADE = 0.7


def _canonical(pattern) -> Tensor:
    index = torch.where(pattern.mask, pattern.index, torch.full_like(pattern.index, -1))
    return index.sort(dim=-1).values


def _check_size(value, name: str, low: int) -> None:
    ok = (
        value is None
        or value == "auto"
        or (isinstance(value, int) and not isinstance(value, bool) and value >= low)
    )
    if not ok:
        raise ValueError(f"{name} must be an int >= {low}, 'auto' or None, got {value!r}")


class MaximinStructure:
    r"""Maximin ordering, sparsity sets, ancestor sets and test-time conditioning sets of ``n`` points.

    Sets (indices into the maximin ordering, see the module docstring for the layout):

    * ``index`` (``n x m``): :math:`S_j = \{i \le j : \|x_i - x_j\| \le \rho \ell_j\}`, the ``max_size``
      nearest kept;
    * ``ancestors`` (``n x a``): :math:`A_j = \{i \le j : \|x_i - x_j\| \le \rho \ell_i\} \cup S_j`, the
      ``ancestor_size`` nearest kept;
    * :meth:`test_sets`: for a test point, the training points within a radius ``R`` (``rho`` times its
      distance to the training set, widened to hold at least ``min_size - 1`` and capped to hold at most
      ``max_size - 1`` of them) with weights that fall smoothly from 1 to 0 over the outer part of the ball,
      so predictions are continuous in the input. ``min_size = max_size // 2``: a test point near a
      training input has a tiny ``rho``-ball, and at low noise a few neighbours give a predictive variance
      several times the exact one.

    Distances are measured after dividing the inputs by ``lengthscale``.

    :param X: ``n x d`` distinct points.
    :param rho: radius factor (>= 1).
    :param lengthscale: ARD lengthscales (or ``None``).
    :param max_size: cap on ``|S_j|`` (>= 2); ``"auto"``: ``max(32, 2 m)`` with ``m`` the mean uncapped
        ``|S_j|``; ``None``: no cap.
    :param ancestor_size: cap on ``|A_j|`` (>= 2); ``"auto"``: ``max(32, 4 m)``; ``None``: no cap.
    :param exact_size: up to this many points the sets are full (``S_j = A_j = \{i \le j\}``, every
        training point conditions every test point): the factor is then the exact inverse Cholesky factor,
        which at small ``n`` (as in BO loops) costs nothing; ``None`` or 0: never.
    """

    def __init__(
        self,
        X: Tensor,
        rho: float,
        lengthscale: Tensor | None = None,
        max_size: int | str | None = "auto",
        ancestor_size: int | str | None = "auto",
        exact_size: int | None = None,
    ):
        if not (isinstance(rho, int | float) and not isinstance(rho, bool) and rho >= 1.0):
            raise ValueError(f"rho must be a number >= 1, got {rho!r}")
        _check_size(max_size, "max_size", 2)
        _check_size(ancestor_size, "ancestor_size", 2)
        if exact_size is not None and (
            isinstance(exact_size, bool) or not isinstance(exact_size, int) or exact_size < 0
        ):
            raise ValueError(f"exact_size must be an int >= 0 or None, got {exact_size!r}")
        self.rho = float(rho)
        self.lengthscale = None if lengthscale is None else lengthscale.detach().reshape(-1).clone()
        order, dist = maximin_order(X, lengthscale=self.lengthscale, duplicates="raise")
        self.order, self.dist = order, dist.to(X)
        X_ord = X.detach()[order]
        n = X_ord.shape[0]
        self.full = bool(exact_size) and n <= exact_size
        if self.full:
            self.max_size = self.ancestor_size = self.min_size = None
            j = torch.arange(n, device=X.device)
            full = torch.where(j <= j.unsqueeze(-1), j, -1).sort(dim=-1).values  # shape: (n, n)
            self.inputs, self.index, self.ancestors, self._tree = X_ord, full, full, None
            return
        pat = sparsity_pattern(X_ord, dist, self.rho, lengthscale=self.lengthscale)
        mean_size = int(pat.mask.sum(-1).double().mean().ceil())
        self.max_size = max(32, 2 * mean_size) if max_size == "auto" else max_size
        # the floor of the test-time sets (see the class docstring); 2 m (6 points at rho = 1.5, d = 2) was too
        # few at BO-like noise levels: single-point variances up to 5x the exact GP's
        self.min_size = None if self.max_size is None else max(2, self.max_size // 2)
        if self.max_size is not None and pat.index.shape[-1] > self.max_size:
            pat = sparsity_pattern(
                X_ord, dist, self.rho, max_size=self.max_size, lengthscale=self.lengthscale
            )
        self.ancestor_size = max(32, 4 * mean_size) if ancestor_size == "auto" else ancestor_size
        anc = ancestor_sets(X_ord, dist, self.rho, max_size=self.ancestor_size, lengthscale=self.lengthscale)
        self.inputs = X_ord  # shape: (n, d), the points in the ordering
        self.index = _canonical(pat)  # shape: (n, m)
        self.ancestors = _union(torch.cat([_canonical(anc), self.index], dim=-1))  # shape: (n, a)
        self._tree = None

    @classmethod
    def from_sets(cls, X_ordered: Tensor, index: Tensor, ancestors: Tensor | None = None) -> MaximinStructure:
        """A structure with given sets (tests, custom patterns): ``X_ordered`` is already in order, ``index``
        and ``ancestors`` are canonical; test points condition on every training point (exact, small n)."""
        n = X_ordered.shape[0]
        j = torch.arange(n, device=index.device)
        if index.shape[0] != n or not torch.equal(index[:, -1], j) or (index > j.unsqueeze(-1)).any():
            raise ValueError("index: expected a canonical pattern with n rows (row j ascending, j last)")
        self = cls.__new__(cls)
        self.rho, self.lengthscale, self.max_size, self.ancestor_size = float("inf"), None, None, None
        self.min_size, self.full = None, False
        self.order = j
        self.dist = torch.full((n,), float("inf"), dtype=X_ordered.dtype, device=X_ordered.device)
        self.inputs, self.index = X_ordered, index
        self.ancestors = _union(torch.cat([index if ancestors is None else ancestors, index], dim=-1))
        self._tree = None
        return self

    @property
    def num_points(self) -> int:
        return self.inputs.shape[0]

    def _scaled(self, x: Tensor) -> np.ndarray:
        arr, _, _ = as_points(x.detach(), "x")
        return scale_points(arr, self.lengthscale)

    def test_sets(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Conditioning sets, their weights and ancestor sets of test points ``x`` (``t x d``).

        :return: ``(sets t x k, weights t x k, ancestors t x a)``: canonical training sets (no test point
            in them), weights in ``[0, 1]`` (0 at padding; differentiable in ``x``), and the training
            ancestors of each test point.
        """
        n = self.num_points
        if self.full or self.rho == float("inf"):  # full or explicit sets: condition on everything
            t = x.shape[0]
            every = torch.arange(n, device=x.device).expand(t, n)
            return every, torch.ones(t, n, dtype=x.dtype, device=x.device), every
        if self._tree is None:
            self._tree = cKDTree(self._scaled(self.inputs))
        q = self._scaled(x)
        k = n if self.max_size is None else min(n, self.max_size)
        r, idx = self._tree.query(q, k=k)
        r, idx = r.reshape(len(q), k), idx.reshape(len(q), k)
        radius = self.rho * r[:, :1]  # rho times the distance to the training set
        if self.max_size is not None:
            # at least the min_size - 1 nearest points (near a training input rho * ell shrinks to 0: without
            # this the set would collapse there) and at most max_size - 1 (the k-th has weight 0)
            radius = np.maximum(radius, r[:, min(k, self.min_size) - 1 : min(k, self.min_size)])
            if k == self.max_size:
                radius = np.minimum(radius, r[:, -1:])
        keep = r < radius
        sets = np.where(keep, idx, -1)
        order = np.argsort(sets, axis=1, kind="stable")
        width = max(1, int(keep.sum(1).max()))
        sets = np.take_along_axis(sets, order, 1)[:, -width:]
        # the radius again, now differentiable in x: through the training points that define it
        device = x.device
        at = lambda c: torch.from_numpy(idx[:, c]).to(device)
        dist = lambda i: self._torch_dist(x, i)  # shape: (t,)
        radius_t = self.rho * dist(at(0))
        if self.max_size is not None:
            radius_t = torch.maximum(radius_t, dist(at(min(k, self.min_size) - 1)))
            if k == self.max_size:
                radius_t = torch.minimum(radius_t, dist(at(k - 1)))
        sets_t = torch.from_numpy(sets).to(device)
        valid = sets_t >= 0
        r_t = self._torch_dist(x.unsqueeze(-2), sets_t.clamp_min(0))  # shape: (t, width)
        u = r_t / radius_t.clamp_min(torch.finfo(x.dtype).tiny).unsqueeze(-1)
        s = ((1.0 - u) / (1.0 - _FADE)).clamp(0.0, 1.0)
        w = torch.where(valid, s * s * (3.0 - 2.0 * s), torch.zeros_like(s))  # smoothstep: C^1 in x
        anc = test_ancestor_sets(
            self.inputs,
            self.dist,
            x.detach(),
            self.rho,
            max_size=self.ancestor_size,
            lengthscale=self.lengthscale,
        )
        anc_idx = torch.where(anc.mask & (anc.index < n), anc.index, -1)
        return sets_t, w, _union(anc_idx.to(device))

    def _torch_dist(self, x: Tensor, i: Tensor) -> Tensor:
        """Scaled distances ``||(x - inputs[i]) / lengthscale||`` (differentiable in ``x``)."""
        diff = x - self.inputs[i.to(self.inputs.device)].to(x)
        if self.lengthscale is not None:
            diff = diff / self.lengthscale.to(x)
        # shape: like i; a tiny floor keeps the gradient finite at a training input
        return (diff.square().sum(-1) + torch.finfo(x.dtype).tiny).sqrt()


def _union(sets: Tensor) -> Tensor:
    """Row-wise union, ascending with ``-1`` padding first, trimmed to the widest row."""
    s = sets.sort(dim=-1).values
    dup = torch.zeros_like(s, dtype=torch.bool)
    dup[:, 1:] = s[:, 1:] == s[:, :-1]
    s = torch.where(dup, torch.full_like(s, -1), s).sort(dim=-1).values
    width = int((s >= 0).sum(-1).max().clamp_min(1))
    return s[:, s.shape[-1] - width :]
