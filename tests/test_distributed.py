"""Data-parallel gpkit.fit: 2 gloo processes spawned from pytest (CPU, one thread each, bounded in time).

One spawn runs every scenario (starting processes dominates the cost); the parent compares the ranks'
results with each other and with one-process computations.
"""

import math
import os
import time
import warnings
from datetime import timedelta

import gpytorch
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from linear_operator.utils.errors import NotPSDError

import gpkit
from gpkit import distributed as gdist
from gpkit.models import DKLGP, SWSGP

WORLD = 2
TIMEOUT_S = 240


def _data(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 2, generator=g, dtype=torch.float64)
    f = torch.sin(6 * X[:, 0]) * torch.cos(4 * X[:, 1])
    return X, (f + 0.05 * torch.randn(n, generator=g, dtype=torch.float64)).unsqueeze(-1), f


def _dklgp(sparse_grad=False):
    X, Y, _ = _data(300)
    return DKLGP(X, Y, sparse_grad=sparse_grad)


def _swsgp(sparse_grad=False):
    X, Y, _ = _data(400)
    return SWSGP(X, Y, num_inducing=100, num_neighbors=8, sparse_grad=sparse_grad)


BUILD = {"dklgp": _dklgp, "swsgp": _swsgp}
FIT = {"dklgp": {"epochs": 8, "batch_size": 64, "lr": 0.03}, "swsgp": {"epochs": 30, "batch_size": 50, "lr": 0.03}}


class _ExactGP(gpytorch.models.ExactGP):
    def __init__(self, X, y):
        super().__init__(X, y, gpytorch.likelihoods.GaussianLikelihood())
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel())

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


class _FailsOnRank1(torch.nn.Module):
    num_data = 8

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def batch_loss(self, index):
        if dist.get_rank() == 1:
            raise NotPSDError("broken on purpose")
        return (self.w - 1).pow(2).sum()


def _rmse(model):
    Xt, _, ft = _data(200, seed=1)
    return (model.posterior(Xt).mean.squeeze(-1) - ft).pow(2).mean().sqrt().item()


def _fit(model, **options):
    if os.environ.get("GPKIT_NOOP_FIT") == "1":  # CI's no-op check reaches into the spawned ranks too
        model.eval()
        return model
    return gpkit.fit(model, **options)


def _perturb(model, amount):
    with torch.no_grad():
        for p in model.parameters():
            if not p.is_sparse:
                p.add_(amount)


def _record_batches(model):
    """Record every batch's rows, and (first entry) the parameters the first step starts from."""
    seen = []
    inner = model.batch_loss

    def batch_loss(index):
        if not seen:
            seen.append({k: v.detach().clone() for k, v in model.named_parameters()})
        seen.append(index.clone())
        return inner(index)

    model.batch_loss = batch_loss
    return seen


def _worker(rank, folder):
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    dist.init_process_group(
        "gloo", init_method=f"file://{folder}/store", rank=rank, world_size=WORLD, timeout=timedelta(seconds=120)
    )
    out = {}
    try:
        for name, build in BUILD.items():
            # 1. training with differently seeded ranks (and perturbed starting parameters on rank 1)
            torch.manual_seed(100 + rank)
            model = build(sparse_grad=(name == "swsgp"))
            _perturb(model, 0.1 * rank)
            seen = _record_batches(model)
            _fit(model, seed=rank, progress=False, **FIT[name])
            del model.batch_loss
            out[f"{name}_state"] = {k: v.clone() for k, v in model.state_dict().items()}
            out[f"{name}_start"], out[f"{name}_seen"] = seen[0], seen[1:]
            out[f"{name}_rmse"] = _rmse(model)
            out[f"{name}_history"] = list(model.fit_history)
            # 2. one step: this rank's share of a batch, gradients averaged over ranks
            torch.manual_seed(0)
            model = build(sparse_grad=True)
            model.train()
            permutation = torch.randperm(model.num_data, generator=torch.Generator().manual_seed(3))
            local = gdist.shard(permutation, 64)[0]
            loss = gdist.wrap_loss(model.batch_loss)(local)
            loss.backward()
            gdist.average_gradients(model, model)
            out[f"{name}_local"] = local
            out[f"{name}_loss"] = loss.item()
            out[f"{name}_grads"] = {
                n: (p.grad.to_dense() if p.grad.is_sparse else p.grad).clone()
                for n, p in model.named_parameters()
                if p.grad is not None
            }
        # 3. full batch (an exact GP, gpkit's full-batch loop): rank 0 trains alone, every rank gets its result
        X, Y, _ = _data(40)
        torch.manual_seed(rank)
        exact = _ExactGP(X, Y.squeeze(-1))
        _perturb(exact, 0.2 * rank)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _fit(exact, max_iter=15, lr=0.05, progress=False)
        out["exact_state"] = {k: v.clone() for k, v in exact.state_dict().items()}
        out["exact_history"] = list(getattr(exact, "fit_history", []))
        out["exact_warnings"] = [str(w.message) for w in caught]
        # 4. a failed Cholesky on rank 1 only: every rank stops with FloatingPointError (no rank waits forever)
        try:
            gpkit.fit(_FailsOnRank1(), epochs=2, batch_size=4, progress=False)
            out["failure"] = None
        except FloatingPointError as error:
            out["failure"] = str(error)
        # 5. the one-process reference fits, one per rank at once (gdist.local: no collectives)
        name = list(BUILD)[rank]
        with gdist.local():
            torch.manual_seed(100)
            reference = BUILD[name](sparse_grad=(name == "swsgp"))
            _fit(reference, seed=0, progress=False, **FIT[name])
        out[f"{name}_reference_rmse"] = _rmse(reference)
    finally:
        dist.destroy_process_group()
    torch.save(out, f"{folder}/rank{rank}.pt")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dist")
    context = mp.spawn(_worker, args=(str(folder),), nprocs=WORLD, join=False)
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not context.join(timeout=max(deadline - time.monotonic(), 0.1)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {WORLD} ranks did not finish within {TIMEOUT_S} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.terminate()
    results = [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    for r in range(1, WORLD):  # the reference results are split over the ranks
        results[0].update({k: v for k, v in results[r].items() if k.endswith("reference_rmse")})
    return results


@pytest.mark.parametrize("name", list(BUILD))
def test_ranks_end_identical_though_seeded_differently(ranks, name):
    a, b = ranks[0][f"{name}_state"], ranks[1][f"{name}_state"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert ranks[0][f"{name}_history"] == ranks[1][f"{name}_history"]
    # the first step already starts from rank 0's parameters on every rank
    for key, value in ranks[0][f"{name}_start"].items():
        assert torch.equal(value, ranks[1][f"{name}_start"][key]), key
    # training moved the parameters away from rank 0's start (the test is not vacuous)
    torch.manual_seed(100)
    start = BUILD[name](sparse_grad=(name == "swsgp")).state_dict()
    assert any(not torch.allclose(start[k], a[k]) for k in a if start[k].is_floating_point())


@pytest.mark.parametrize("name", list(BUILD))
def test_each_rank_sees_about_half_the_data_per_epoch(ranks, name):
    n = BUILD[name]().num_data
    epochs = FIT[name]["epochs"]
    steps = len(ranks[0][f"{name}_seen"])
    assert steps == len(ranks[1][f"{name}_seen"]) and steps % epochs == 0
    per_epoch = steps // epochs
    for epoch in range(epochs):
        rows = [torch.cat(ranks[r][f"{name}_seen"][epoch * per_epoch : (epoch + 1) * per_epoch]) for r in range(WORLD)]
        assert all(len(x) == math.ceil(n / WORLD) for x in rows)  # half, padded as DistributedSampler does
        union = torch.cat(rows)
        assert torch.equal(union.unique(), torch.arange(n))  # together the ranks cover every row
        assert len(union) - n < WORLD


@pytest.mark.parametrize("name", list(BUILD))
def test_averaged_gradient_equals_the_union_batch_gradient(ranks, name):
    union = torch.cat([ranks[r][f"{name}_local"] for r in range(WORLD)])
    assert len(union) == 64 and union.unique().numel() == 64
    torch.manual_seed(0)
    model = BUILD[name](sparse_grad=True)
    model.train()
    loss = model.batch_loss(union)
    loss.backward()
    assert ranks[0][f"{name}_loss"] == ranks[1][f"{name}_loss"]
    assert math.isclose(ranks[0][f"{name}_loss"], loss.item(), rel_tol=1e-10)
    grads = {n: (p.grad.to_dense() if p.grad.is_sparse else p.grad) for n, p in model.named_parameters() if p.grad is not None}
    assert grads.keys() == ranks[0][f"{name}_grads"].keys()
    sparse = {id(p) for p in model.sparse_parameters()}
    assert sparse  # the sparse path is exercised
    for key, grad in grads.items():
        for r in range(WORLD):
            torch.testing.assert_close(ranks[r][f"{name}_grads"][key], grad, rtol=1e-9, atol=1e-12)


def test_full_batch_training_runs_on_rank0_and_is_broadcast(ranks):
    a, b = ranks[0]["exact_state"], ranks[1]["exact_state"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert len(ranks[0]["exact_history"]) == 15 and ranks[0]["exact_history"] == ranks[1]["exact_history"]
    assert any("does not distribute" in m and "rank 0" in m for m in ranks[0]["exact_warnings"])
    assert not any("does not distribute" in m for m in ranks[1]["exact_warnings"])


def test_a_failure_on_one_rank_stops_every_rank(ranks):
    assert "NotPSDError" in ranks[1]["failure"] and "broken on purpose" in ranks[1]["failure"]
    assert "nan" in ranks[0]["failure"].lower()


@pytest.mark.accuracy
@pytest.mark.parametrize("name", list(BUILD))
def test_accuracy_matches_a_single_process_fit(ranks, name):
    single, parallel = ranks[0][f"{name}_reference_rmse"], ranks[0][f"{name}_rmse"]
    assert single < 0.12 and parallel < 0.12  # f has std ~0.5, noise std 0.05
    assert abs(parallel - single) < 0.25 * single + 0.01


def test_single_process_helpers_are_no_ops():
    assert not gdist.is_distributed() and gdist.world_size() == 1 and gdist.rank() == 0
    permutation = torch.randperm(10)
    assert all(torch.equal(a, b) for a, b in zip(gdist.shard(permutation, 4), permutation.split(4)))
    assert gdist.epoch_mean(6.0, 3) == 2.0 and gdist.agree(True) and not gdist.agree(False)
    fn = lambda index: index.sum()
    assert gdist.wrap_loss(fn) is fn
