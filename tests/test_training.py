import math

import gpytorch
import pytest
import torch
from sklearn.datasets import load_diabetes

import gpkit


def _diabetes_split():
    X, y = load_diabetes(return_X_y=True)
    X, y = torch.as_tensor(X), torch.as_tensor(y)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, test = perm[:350], perm[350:]
    x_mean, x_std = X[train].mean(0), X[train].std(0)
    y_mean, y_std = y[train].mean(), y[train].std()
    X = (X - x_mean) / x_std
    y = (y - y_mean) / y_std
    return X[train], y[train], X[test], y[test]


class ExactGP(gpytorch.models.ExactGP):
    def __init__(self, X, y, likelihood):
        super().__init__(X, y, likelihood)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel(ard_num_dims=X.shape[-1]))

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


class SVGP(gpytorch.models.ApproximateGP):
    def __init__(self, inducing_points):
        distribution = gpytorch.variational.CholeskyVariationalDistribution(inducing_points.shape[0])
        strategy = gpytorch.variational.VariationalStrategy(
            self, inducing_points, distribution, learn_inducing_locations=True
        )
        super().__init__(strategy)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(
            gpytorch.kernels.RBFKernel(ard_num_dims=inducing_points.shape[-1])
        )

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def _rmse(model, likelihood, X, y):
    model.eval()
    likelihood.eval()
    with torch.no_grad():
        mean = model(X).mean
    return (mean - y).pow(2).mean().sqrt().item()


@pytest.mark.accuracy
def test_svgp_matches_exact_gp_rmse_on_real_data():
    X, y, X_test, y_test = _diabetes_split()
    exact_likelihood = gpytorch.likelihoods.GaussianLikelihood()
    exact = gpkit.fit(ExactGP(X, y, exact_likelihood), max_iter=150, lr=0.05)
    exact_rmse = _rmse(exact, exact_likelihood, X_test, y_test)

    svgp_likelihood = gpytorch.likelihoods.GaussianLikelihood()
    svgp = SVGP(X[torch.randperm(len(X))[:64]].clone())
    gpkit.fit(svgp, train_X=X, train_Y=y.unsqueeze(-1), likelihood=svgp_likelihood, epochs=60, lr=0.02,
              batch_size=64, seed=0)
    svgp_rmse = _rmse(svgp, svgp_likelihood, X_test, y_test)

    assert exact.fit_history[-1] < exact.fit_history[0]
    assert svgp.fit_history[-1] < svgp.fit_history[0]
    assert exact_rmse < 0.85  # the GP explains a real part of the variance of standardised y
    assert svgp_rmse <= 1.05 * exact_rmse


class Quadratic(torch.nn.Module):
    """A full-batch objective with a known minimiser, exercising the ``loss()`` protocol."""

    def __init__(self):
        super().__init__()
        self.x = torch.nn.Parameter(torch.tensor([3.0, -2.0]))

    def loss(self):
        return ((self.x - torch.tensor([1.0, 0.5])) ** 2).sum()


@pytest.mark.parametrize("optimizer, max_iter, betas", [("adam", 2000, None), ("adam", 2000, (0.9, 0.99)), ("lbfgs", 20, None)])
def test_fullbatch_reaches_minimiser(optimizer, max_iter, betas):
    lr = 0.05 if optimizer == "adam" else 1.0
    obj = gpkit.fit(Quadratic(), optimizer=optimizer, max_iter=max_iter, lr=lr, betas=betas)
    assert torch.allclose(obj.x.detach(), torch.tensor([1.0, 0.5]), atol=1e-3)
    assert not obj.training


class MeanOfData(torch.nn.Module):
    """A minibatch objective: the per-datum loss is (theta - y_i)^2, minimised by mean(y)."""

    def __init__(self, y):
        super().__init__()
        self.y = y
        self.num_data = len(y)
        self.theta = torch.nn.Parameter(torch.zeros(()))
        self.seen = torch.zeros(len(y), dtype=torch.long)
        self.epochs_seen = []

    def batch_loss(self, index):
        self.seen[index] += 1
        return ((self.theta - self.y[index]) ** 2).mean()

    def on_epoch_end(self, epoch):
        self.epochs_seen.append(epoch)


def test_minibatch_visits_every_datum_once_per_epoch_and_converges():
    y = torch.randn(103) + 2.0
    obj = gpkit.fit(MeanOfData(y), epochs=40, batch_size=10, lr=0.05, schedule="cosine")
    assert torch.equal(obj.seen, torch.full((103,), 40))
    assert obj.epochs_seen == list(range(1, 41))
    assert abs(obj.theta.item() - y.mean().item()) < 0.02
    assert len(obj.fit_history) == 40


def test_callback_stops_and_sees_state():
    states = []
    gpkit.fit(Quadratic(), max_iter=100, callback=lambda s: states.append(s) or s.iteration >= 7)
    assert [s.iteration for s in states] == list(range(1, 8))
    assert all(math.isfinite(s.loss) for s in states)


def test_tolerance_stops_early():
    obj = gpkit.fit(Quadratic(), optimizer="lbfgs", max_iter=500, lr=1.0, tol=1e-8, patience=3)
    assert len(obj.fit_history) < 500


class BlowsUp(Quadratic):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def loss(self):
        self.calls += 1
        if self.calls > 30:
            return self.x.sum() * float("nan")
        return super().loss()


def test_nan_loss_raises_and_restores_last_good_state():
    obj = BlowsUp()
    with pytest.raises(FloatingPointError, match="iteration 31.*restored to the state after it 30"):
        gpkit.fit(obj, max_iter=100, lr=0.1)
    assert torch.isfinite(obj.x).all()
    assert not torch.equal(obj.x.detach(), torch.tensor([3.0, -2.0]))


@pytest.mark.parametrize(
    "options, match",
    [
        ({"lr": -1.0}, "lr"),
        ({"max_iter": 0}, "max_iter"),
        ({"optimizer": "sgd"}, "optimizer"),
        ({"schedule": "linear"}, "schedule"),
        ({"learning_rate": 0.1}, "unknown option"),
    ],
)
def test_bad_options(options, match):
    with pytest.raises((ValueError, TypeError), match=match):
        gpkit.fit(Quadratic(), **options)


def test_unknown_object_and_missing_data():
    with pytest.raises(TypeError, match="cannot train"):
        gpkit.fit(torch.nn.Linear(2, 1))
    with pytest.raises(ValueError, match="train_X"):
        gpkit.fit(SVGP(torch.randn(4, 2)), likelihood=gpytorch.likelihoods.GaussianLikelihood())


class PerDatumOffsets(torch.nn.Module):
    """Per-datum parameters with sparse gradients (like DKLGP's per-column variational factors)."""

    def __init__(self, y):
        super().__init__()
        self.y = y
        self.num_data = len(y)
        self.offsets = torch.nn.Parameter(torch.zeros(len(y), 1))
        self.scale = torch.nn.Parameter(torch.ones(()))

    def sparse_parameters(self):
        return [self.offsets]

    def batch_loss(self, index):
        rows = torch.nn.functional.embedding(index, self.offsets, sparse=True).squeeze(-1)
        return ((self.scale * rows - self.y[index]) ** 2).mean()


def test_sparse_parameters_train_with_sparse_adam():
    y = torch.randn(50)
    obj = gpkit.fit(PerDatumOffsets(y), epochs=300, batch_size=10, lr=0.05)
    assert obj.offsets.grad is None or obj.offsets.grad.is_sparse
    assert (obj.scale * obj.offsets.squeeze(-1) - y).abs().max() < 1e-2


def test_lbfgs_rejects_sparse_parameters():
    obj = Quadratic()
    obj.sparse_parameters = lambda: [obj.x]
    with pytest.raises(ValueError, match="sparse gradients"):
        gpkit.fit(obj, optimizer="lbfgs")


def test_make_optimizer_matches_fit_split():
    obj = PerDatumOffsets(torch.randn(20))
    opt = gpkit.make_optimizer(obj, lr=0.05)
    kinds = sorted(type(o).__name__ for o in opt.optimizers)
    assert kinds == ["Adam", "SparseAdam"]
    before = obj.offsets.detach().clone()
    opt.zero_grad()
    obj.batch_loss(torch.tensor([0, 3])).backward()
    opt.step()
    changed = (obj.offsets.detach() != before).squeeze(-1).nonzero().squeeze(-1).tolist()
    assert changed == [0, 3]  # lazy (sparse) update touches only the batch's rows


# ------------------------------------------------------------------ defaults, failures, rejected options
class FailsCholesky(Quadratic):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def loss(self):
        from linear_operator.utils.errors import NotPSDError

        self.calls += 1
        if self.calls > 30:
            raise NotPSDError("Matrix not positive definite after repeatedly adding jitter")
        return super().loss()


def test_failed_cholesky_restores_and_raises():
    obj = FailsCholesky()
    with pytest.raises(FloatingPointError, match="NotPSDError.*restored to the state after it 30"):
        gpkit.fit(obj, max_iter=100, lr=0.1)
    assert torch.isfinite(obj.x).all()


def _swsgp(n=30, seed=0):
    from gpkit.models import SWSGP

    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 2, generator=g, dtype=torch.float64)
    Y = torch.sin(6 * X[:, :1]) + torch.cos(4 * X[:, 1:])
    return SWSGP(X, Y), X, Y


def test_infinite_lr_leaves_finite_parameters():
    model, _, _ = _swsgp()
    with pytest.raises(FloatingPointError, match="restored"):
        gpkit.fit(model, lr=float("inf"))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert torch.isfinite(model.posterior(torch.rand(3, 2, dtype=torch.float64)).mean).all()


def test_options_a_model_cannot_use_are_rejected():
    model, X, Y = _swsgp()
    with pytest.raises(TypeError, match="train_X.*stores its own training data"):
        gpkit.fit(model, train_X=X, train_Y=Y)
    with pytest.raises(TypeError, match="batch_size"):
        gpkit.fit(Quadratic(), batch_size=10)
    X, y, _, _ = _diabetes_split()
    exact = ExactGP(X[:50], y[:50], gpytorch.likelihoods.GaussianLikelihood())
    with pytest.raises(TypeError, match="fit_gpytorch_mll"):
        gpkit.fit(exact, epochs=3)


def test_hooks_are_declared_once():
    hooks = {"batch_loss", "loss", "on_epoch_end", "should_stop", "sparse_parameters"}
    assert hooks <= set(dir(gpkit.training.FitHooks))
    assert {"num_data", "fit_defaults"} <= set(gpkit.training.FitHooks.__annotations__)


def test_default_minibatch_runs_min_steps_then_converges():
    y = torch.randn(10) + 2.0
    obj = gpkit.fit(MeanOfData(y))  # one batch per epoch
    assert 1000 <= len(obj.fit_history) < 3000  # the step floor, then the convergence test stopped it
    assert abs(obj.theta.item() - y.mean().item()) < 1e-2
    assert obj.epochs_seen[0] == 1
    # an explicit epoch count is exact
    assert len(gpkit.fit(MeanOfData(y), epochs=7).fit_history) == 7


def test_plain_exact_gp_goes_to_fit_gpytorch_mll():
    from botorch.fit import fit_gpytorch_mll
    from botorch.optim.closures import ForwardBackwardClosure

    X = torch.rand(40, 2, generator=torch.Generator().manual_seed(3))
    y = torch.sin(5 * X[:, 0]) + X[:, 1] + 0.1 * torch.randn(40, generator=torch.Generator().manual_seed(4))
    exact = gpkit.fit(ExactGP(X, y, gpytorch.likelihoods.GaussianLikelihood()))
    assert exact.fit_history[-1] < exact.fit_history[0] and not exact.training
    ref = ExactGP(X, y, gpytorch.likelihoods.GaussianLikelihood())
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(ref.likelihood, ref)
    params = {k: p for k, p in mll.named_parameters()}
    fit_gpytorch_mll(mll, closure=ForwardBackwardClosure(lambda: -mll(ref(X), y), params))
    assert torch.allclose(exact.likelihood.noise, ref.likelihood.noise, rtol=1e-6)


@pytest.mark.slow  # ~1000 optimizer steps (the default floor): about 20 s on an idle core
@pytest.mark.accuracy
def test_default_fit_at_small_n_matches_single_task_gp_noise():
    """At n = 30 (the BO regime) the default fit learns a noise close to SingleTaskGP + fit_gpytorch_mll."""
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP

    model, X, Y = _swsgp(n=30)
    Y = Y + 0.1 * torch.randn(Y.shape, generator=torch.Generator().manual_seed(5), dtype=Y.dtype)
    model = type(model)(X, Y)
    gpkit.fit(model)
    reference = SingleTaskGP(X, Y)
    fit_gpytorch_mll(gpytorch.mlls.ExactMarginalLogLikelihood(reference.likelihood, reference))
    noise, ref_noise = model.likelihood.noise.item(), reference.likelihood.noise.item()
    assert noise < 0.05  # the old default (20 steps) ended at ~0.6
    assert abs(math.log(noise) - math.log(ref_noise)) < math.log(3)
    assert len(model.fit_history) >= 1000  # the step floor ran
    Xt = torch.rand(200, 2, generator=torch.Generator().manual_seed(9), dtype=X.dtype)
    gap = (model.posterior(Xt).mean - reference.posterior(Xt).mean).pow(2).mean().sqrt()
    assert gap < 0.1 * Y.std()  # the same predictions as the exact GP


def test_lbfgs_in_minibatch_mode_needs_one_batch_of_all_data():
    y = torch.randn(50, dtype=torch.float64) + 2.0
    obj = gpkit.fit(MeanOfData(y), optimizer="lbfgs", lr=1.0, batch_size=50, max_iter=10)
    assert abs(obj.theta.item() - y.mean().item()) < 1e-6  # a quadratic: L-BFGS lands on the minimiser
    assert obj.epochs_seen == list(range(1, len(obj.fit_history) + 1))
    with pytest.raises(ValueError, match="full-batch"):
        gpkit.fit(MeanOfData(y), optimizer="lbfgs", batch_size=10)
