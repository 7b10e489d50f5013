"""gpkit.neighbors against brute-force O(n^2) versions on small random and gridded point sets."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch

from gpkit.neighbors import (
    Pattern,
    ancestor_sets,
    find_duplicates,
    knn,
    maximin_order,
    previous_knn,
    sparsity_pattern,
    test_ancestor_sets,
    test_pattern,
)

CASES = [(300, 1, 0), (400, 2, 1), (500, 5, 2)]


def points(n, d, seed, dtype=torch.float64):
    return torch.rand(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def sq_dists(A, B):
    diff = A[:, None, :] - B[None, :, :]
    return (diff * diff).sum(-1)


def brute_maximin(X):
    """O(n^2) maximin: start closest to the centroid, ties to the smallest index."""
    X = X.numpy()
    D2 = sq_dists(X, X)
    c = X - X.mean(0)
    first = int(np.argmin((c * c).sum(1)))
    order, sq = [first], [np.inf]
    cur = D2[first].copy()
    cur[first] = -1.0
    for _ in range(1, X.shape[0]):
        i = int(np.argmax(cur))  # first maximum = smallest index among ties
        order.append(i)
        sq.append(cur[i])
        cur = np.minimum(cur, D2[i])
        cur[order] = -1.0
    return np.array(order), np.sqrt(np.array(sq))


def brute_sets(X, dist, rho, ancestors=False):
    D = np.sqrt(sq_dists(X.numpy(), X.numpy()))
    ell = dist.numpy()
    sets = []
    for j in range(X.shape[0]):
        radius = rho * ell[: j + 1] if ancestors else rho * ell[j]
        sets.append(set(np.flatnonzero(D[j, : j + 1] <= radius).tolist()))
    return sets


def truncate(X_rows, X_cols, sets, max_size, row_labels=None):
    """Keep the max_size nearest of each set (ties: larger index first)."""
    out = []
    for j, s in enumerate(sets):
        s = sorted(s)
        d = [float(((X_rows[j] - X_cols[i]) ** 2).sum()) for i in s]
        kept = sorted(zip(d, [-i for i in s]))[:max_size]
        out.append({-i for _, i in kept})
    return out


def check_layout(pattern: Pattern, last):
    """Right-aligned rows sorted ascending, the row's own label last, zero-padded on the left."""
    index, mask = pattern.index, pattern.mask
    assert index.dtype == torch.long and mask.dtype == torch.bool
    sizes = pattern.sizes
    m = index.shape[1]
    assert sizes.max().item() == m
    cols = torch.arange(m)
    assert torch.equal(mask, cols >= (m - sizes)[:, None])
    assert (index[~mask] == 0).all()
    assert torch.equal(index[:, -1], torch.as_tensor(last))
    filled = torch.where(mask, index, torch.full_like(index, -1))
    assert ((filled[:, 1:] > filled[:, :-1]) | ~mask[:, :-1]).all()


@pytest.fixture(params=CASES, ids=lambda c: f"n{c[0]}-d{c[1]}")
def ordered(request):
    n, d, seed = request.param
    X = points(n, d, seed)
    order, dist = maximin_order(X)
    return X, order, dist


def test_maximin_matches_brute_force(ordered):
    X, order, dist = ordered
    ref_order, ref_dist = brute_maximin(X)
    assert order.dtype == torch.long and dist.dtype == torch.float64
    assert torch.equal(order, torch.from_numpy(ref_order))
    assert torch.isinf(dist[0]) and torch.equal(dist[1:], torch.from_numpy(ref_dist[1:]))
    assert (dist[1:] <= dist[:-1]).all()


@pytest.mark.parametrize("shape", [(40,), (12, 12), (5, 5, 4)])
def test_maximin_ties_on_grids(shape):
    X = torch.tensor(list(itertools.product(*[range(s) for s in shape])), dtype=torch.float64)
    X = X[torch.randperm(X.shape[0], generator=torch.Generator().manual_seed(0))]
    order, dist = maximin_order(X)
    ref_order, ref_dist = brute_maximin(X)
    assert torch.equal(order, torch.from_numpy(ref_order))
    assert torch.equal(dist[1:], torch.from_numpy(ref_dist[1:]))


def test_maximin_large_uses_tree_path():
    # n large enough that the kd-tree phase does most of the work
    X = points(3000, 3, 7)
    order, dist = maximin_order(X)
    ref_order, ref_dist = brute_maximin(X)
    assert torch.equal(order, torch.from_numpy(ref_order))
    assert torch.equal(dist[1:], torch.from_numpy(ref_dist[1:]))


@pytest.mark.slow
def test_large_against_brute_force():
    X = points(5000, 5, 20)
    order, dist = maximin_order(X)
    ref_order, ref_dist = brute_maximin(X)
    assert torch.equal(order, torch.from_numpy(ref_order))
    assert torch.equal(dist[1:], torch.from_numpy(ref_dist[1:]))
    Xo = X[order]
    assert sparsity_pattern(Xo, dist, 1.5).as_sets() == brute_sets(Xo, dist, 1.5)
    index, mask = previous_knn(Xo, 10)
    D = torch.cdist(Xo, Xo)
    assert mask[10:].all()
    for j in range(10, 5000, 7):
        assert torch.equal(index[j], D[j, :j].argsort()[:10])


def test_maximin_lengthscale():
    X = points(300, 3, 3)
    ls = torch.tensor([0.2, 1.0, 5.0], dtype=torch.float64)
    order, dist = maximin_order(X, lengthscale=ls.view(1, 3))
    ref_order, ref_dist = maximin_order(X / ls)
    assert torch.equal(order, ref_order) and torch.equal(dist, ref_dist)
    plain, _ = maximin_order(X)
    assert not torch.equal(order, plain)


def test_maximin_single_point_and_float32():
    order, dist = maximin_order(torch.zeros(1, 2))
    assert order.tolist() == [0] and torch.isinf(dist[0])
    X = points(100, 2, 4, dtype=torch.float32)
    order, dist = maximin_order(X)
    assert dist.dtype == torch.float32
    assert torch.equal(order, maximin_order(X.double())[0])


@pytest.mark.parametrize("k", [1, 7, 30])
def test_knn_matches_brute_force(k):
    P, Q = points(400, 5, 0), points(50, 5, 1)
    dist, index = knn(Q, P, k)
    ref = torch.cdist(Q, P).sort(dim=-1)
    assert dist.shape == index.shape == (50, k)
    assert torch.equal(index, ref.indices[:, :k])
    torch.testing.assert_close(dist, ref.values[:, :k])
    ls = torch.tensor([0.5, 1, 2, 3, 4], dtype=torch.float64)
    dist, index = knn(Q, P, k, lengthscale=ls)
    assert torch.equal(index, torch.cdist(Q / ls, P / ls).sort(dim=-1).indices[:, :k])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_knn_torch_backend(dtype, monkeypatch):
    # the blocked search used on CUDA, here on the CPU with blocks smaller than the query set
    import gpkit.neighbors.nearest as knn_module

    monkeypatch.setattr(knn_module, "_BLOCK_BYTES", 400 * 8 * 7)
    P, Q = points(400, 5, 0, dtype) + 100.0, points(50, 5, 1, dtype) + 100.0
    dist, index = knn(Q, P, 10, backend="torch")
    ref_dist, ref_index = knn(Q.double(), P.double(), 10)
    assert dist.dtype == dtype and index.shape == (50, 10)
    assert torch.equal(index, ref_index)
    tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {}
    torch.testing.assert_close(dist.double(), ref_dist, **tol)
    ls = torch.tensor([0.5, 1, 2, 3, 4], dtype=dtype)
    _, index = knn(Q, P, 10, lengthscale=ls, backend="torch")
    assert torch.equal(index, knn(Q.double(), P.double(), 10, lengthscale=ls.double())[1])


@pytest.mark.parametrize("k", [1, 5, 20])
@pytest.mark.parametrize("maximin", [True, False])
def test_previous_knn_matches_brute_force(k, maximin):
    X = points(500, 2, 5)
    if maximin:
        X = X[maximin_order(X)[0]]
    index, mask = previous_knn(X, k)
    D = torch.cdist(X, X)
    assert index.shape == mask.shape == (500, k)
    for j in range(500):
        ref = D[j, :j].argsort()[:k]
        assert mask[j].sum().item() == min(j, k)
        assert torch.equal(index[j, : min(j, k)], ref)
        assert (index[j, min(j, k) :] == 0).all()


def test_sparsity_and_ancestor_sets_match_brute_force(ordered):
    X, order, dist = ordered
    Xo = X[order]
    for rho in (1.0, 1.5, 2.5):
        S = sparsity_pattern(Xo, dist, rho)
        A = ancestor_sets(Xo, dist, rho)
        check_layout(S, torch.arange(len(X)))
        check_layout(A, torch.arange(len(X)))
        S_sets, A_sets = S.as_sets(), A.as_sets()
        assert S_sets == brute_sets(Xo, dist, rho)
        assert A_sets == brute_sets(Xo, dist, rho, ancestors=True)
        assert all(s <= a for s, a in zip(S_sets, A_sets))
    # rho = 1: the nearest earlier point (at distance dist[j]) is always in S_j
    S1 = sparsity_pattern(Xo, dist, 1.0)
    assert (S1.sizes[1:] >= 2).all()


def test_sparsity_dense_limit():
    X = points(60, 2, 8)
    order, dist = maximin_order(X)
    S = sparsity_pattern(X[order], dist, 1e6)
    assert S.as_sets() == [set(range(j + 1)) for j in range(60)]


@pytest.mark.parametrize("max_size", [1, 3, 8])
def test_max_size_keeps_nearest(ordered, max_size):
    X, order, dist = ordered
    Xo = X[order].numpy()
    for fn, anc in ((sparsity_pattern, False), (ancestor_sets, True)):
        P = fn(X[order], dist, 2.0, max_size=max_size)
        check_layout(P, torch.arange(len(X)))
        assert P.max_size <= max_size
        assert P.as_sets() == truncate(Xo, Xo, brute_sets(X[order], dist, 2.0, ancestors=anc), max_size)


def test_max_size_ties_on_grid(monkeypatch):
    import gpkit.neighbors.pattern as pattern_module

    monkeypatch.setattr(pattern_module, "_PACK_ENTRIES", 50)  # many small truncation blocks
    X = torch.tensor(list(itertools.product(range(15), range(15))), dtype=torch.float64)
    order, dist = maximin_order(X)
    Xo = X[order]
    for max_size in (2, 5, 9):
        P = sparsity_pattern(Xo, dist, 2.0, max_size=max_size)
        check_layout(P, torch.arange(len(X)))
        ref = truncate(Xo.numpy(), Xo.numpy(), brute_sets(Xo, dist, 2.0), max_size)
        assert P.as_sets() == ref


def brute_test_sets(train, dist, test, rho, ancestors=False):
    D = np.sqrt(sq_dists(test.numpy(), train.numpy()))
    ell_t = D.min(1)
    n = train.shape[0]
    sets = []
    for t in range(test.shape[0]):
        radius = rho * np.maximum(dist.numpy(), ell_t[t]) if ancestors else rho * ell_t[t]
        sets.append(set(np.flatnonzero(D[t] <= radius).tolist()) | {n + t})
    return sets


def test_test_pattern_and_ancestors():
    X, T = points(400, 3, 9), points(40, 3, 10)
    order, dist = maximin_order(X)
    Xo = X[order]
    S = test_pattern(Xo, dist, T, 1.5)
    A = test_ancestor_sets(Xo, dist, T, 1.5)
    check_layout(S, 400 + torch.arange(40))
    check_layout(A, 400 + torch.arange(40))
    assert S.as_sets() == brute_test_sets(Xo, dist, T, 1.5)
    assert A.as_sets() == brute_test_sets(Xo, dist, T, 1.5, ancestors=True)
    assert all(s <= a for s, a in zip(S.as_sets(), A.as_sets()))
    assert (S.sizes >= 2).all()  # at least the nearest training point and itself
    S3 = test_pattern(Xo, dist, T, 3.0, max_size=4)
    rows = np.concatenate([Xo.numpy(), T.numpy()])
    assert S3.as_sets() == truncate(T.numpy(), rows, brute_test_sets(Xo, dist, T, 3.0), 4)


def test_patterns_with_lengthscale():
    X = points(300, 2, 11)
    ls = torch.tensor([0.3, 2.0], dtype=torch.float64)
    order, dist = maximin_order(X, lengthscale=ls)
    Xs = X[order] / ls
    assert sparsity_pattern(X[order], dist, 1.5, lengthscale=ls).as_sets() == brute_sets(Xs, dist, 1.5)
    T = points(20, 2, 12)
    ref = test_pattern(Xs, dist, T / ls, 1.5)
    got = test_pattern(X[order], dist, T, 1.5, lengthscale=ls)
    assert torch.equal(got.index, ref.index) and torch.equal(got.mask, ref.mask)


def test_duplicates():
    X = points(50, 2, 13)
    X = torch.cat([X, X[[3, 3, 10]]])  # rows 50, 51 copy row 3; row 52 copies row 10
    groups = find_duplicates(X)
    assert [g.tolist() for g in groups] == [[3, 50, 51], [10, 52]]
    assert find_duplicates(points(50, 2, 13)) == []
    with pytest.warns(RuntimeWarning, match="find_duplicates"):
        order, dist = maximin_order(X)
    assert (dist[-3:] == 0).all() and (dist[:-3] > 0).all()
    with pytest.raises(ValueError, match="duplicated"):
        maximin_order(X, duplicates="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        maximin_order(X, duplicates="ignore")
    # a duplicate's sparsity set holds only its copies
    S = sparsity_pattern(X[order], dist, 1.5).as_sets()
    pos = {int(o): k for k, o in enumerate(order)}
    for group in groups:
        ks = sorted(pos[int(i)] for i in group)
        for a, k in enumerate(ks[1:], start=2):
            assert S[k] == set(ks[:a])


def test_tiny_inputs():
    for n in (1, 2):
        X = points(n, 3, 18)
        order, dist = maximin_order(X)
        assert sorted(order.tolist()) == list(range(n))
        S, A = sparsity_pattern(X[order], dist, 1.5), ancestor_sets(X[order], dist, 1.5)
        assert S.as_sets() == A.as_sets() == [set(range(j + 1)) for j in range(n)]
        index, mask = previous_knn(X, 1)
        assert mask.tolist() == [[False], [True]][:n] and index[-1, 0].item() == 0
        T = test_pattern(X[order], dist, points(3, 3, 19), 1.0)
        assert T.index[:, -1].tolist() == [n, n + 1, n + 2]


def test_pattern_helpers():
    X = points(30, 2, 14)
    order, dist = maximin_order(X)
    P = sparsity_pattern(X[order], dist, 1.5)
    assert len(P) == 30 and P.sizes.shape == (30,)
    Q = P.to("cpu")
    assert torch.equal(Q.index, P.index) and Q.mask.device.type == "cpu"
    index, mask = P
    assert index is P.index and mask is P.mask


def test_bad_inputs():
    X = points(20, 2, 15)
    _, dist = maximin_order(X)
    with pytest.raises(ValueError, match="X"):
        maximin_order(torch.rand(5))
    with pytest.raises(ValueError, match="X"):
        maximin_order(torch.tensor([[0.0, float("nan")], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="X"):
        maximin_order(torch.zeros(0, 2))
    with pytest.raises(TypeError, match="X"):
        maximin_order([[0.0, 1.0]])
    with pytest.raises(ValueError, match="lengthscale"):
        maximin_order(X, lengthscale=torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="lengthscale"):
        maximin_order(X, lengthscale=torch.tensor([1.0, -2.0]))
    with pytest.raises(ValueError, match="k"):
        knn(X, X, 21)
    with pytest.raises(ValueError, match="k"):
        knn(X, X, 0)
    with pytest.raises(TypeError, match="k"):
        knn(X, X, 2.0)
    with pytest.raises(ValueError, match="points"):
        knn(X, torch.rand(10, 3, dtype=torch.float64), 2)
    with pytest.raises(ValueError, match="queries"):
        knn(torch.full((2, 2), float("inf")), X, 2)
    with pytest.raises(ValueError, match="k"):
        previous_knn(X, 21)
    with pytest.raises(ValueError, match="X_ordered"):
        previous_knn(X[None], 2)
    with pytest.raises(ValueError, match="dist"):
        sparsity_pattern(X, dist[:-1], 1.5)
    with pytest.raises(ValueError, match="dist"):
        ancestor_sets(X, torch.full((20,), float("nan")), 1.5)
    with pytest.raises(ValueError, match="rho"):
        sparsity_pattern(X, dist, 0.0)
    with pytest.raises(ValueError, match="max_size"):
        ancestor_sets(X, dist, 1.5, max_size=0)
    with pytest.raises(ValueError, match="X_test"):
        test_pattern(X, dist, torch.rand(3, 5, dtype=torch.float64), 1.5)
    with pytest.raises(ValueError, match="dist_train"):
        test_ancestor_sets(X, dist[:3], X, 1.5)
    with pytest.raises(ValueError, match="duplicates"):
        maximin_order(X, duplicates="merge")
    with pytest.raises(ValueError, match="backend"):
        knn(X, X, 2, backend="faiss")
    with pytest.raises(ValueError, match="k"):
        knn(X, X, 21, backend="torch")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda():
    X = points(2000, 5, 16).cuda()
    Q = points(300, 5, 17).cuda()
    dist, index = knn(Q, X, 16)
    assert index.is_cuda and dist.is_cuda
    ref_dist, ref_index = knn(Q.cpu(), X.cpu(), 16)
    torch.testing.assert_close(dist.cpu(), ref_dist)
    assert (index.cpu() == ref_index).float().mean() > 0.999
    dist32, _ = knn(Q.float(), X.float(), 16)
    assert dist32.dtype == torch.float32
    torch.testing.assert_close(dist32.double().cpu(), ref_dist, rtol=1e-4, atol=1e-5)
    order, ell = maximin_order(X)
    assert order.is_cuda and ell.is_cuda
    P = sparsity_pattern(X[order], ell, 1.5)
    assert P.index.is_cuda and P.mask.is_cuda
    assert test_pattern(X[order], ell, Q, 1.5).index.is_cuda
    assert all(t.is_cuda for t in previous_knn(X[order], 8))


def test_kdtree_workers_do_not_change_results():
    g = torch.Generator().manual_seed(5)
    Q, P = torch.rand(300, 3, generator=g, dtype=torch.float64), torch.rand(200, 3, generator=g, dtype=torch.float64)
    one, many = knn(Q, P, 7, workers=1), knn(Q, P, 7, workers=-1)
    assert torch.equal(one[0], many[0]) and torch.equal(one[1], many[1])
    assert all(torch.equal(a, b) for a, b in zip(previous_knn(P, 5, workers=1), previous_knn(P, 5, workers=2)))
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="workers"):
            knn(Q, P, 3, workers=bad)
        with pytest.raises(ValueError, match="workers"):
            previous_knn(P, 3, workers=bad)
