"""Cox acquisitions: intensity-scale formulas vs Monte Carlo, shapes (b x q x d), monotonicity, BoTorch optimisers,
change-point detection, the window-revealing loop, bad input."""

import pytest
import torch
from botorch.optim import optimize_acqf, optimize_acqf_discrete

import gpkit
from gpkit.acquisition import (
    ChangePointScore,
    ExpectedArrivals,
    IdleTime,
    IntensityExpectedImprovement,
    IntensityProbabilityOfImprovement,
    IntensityUpperConfidenceBound,
)
from gpkit.cox import GaussianCoxProcess, links, poisson_process, reveal_windows, synthetic_point_process

LINKS = ["quadratic", "exp", "softplus"]


@pytest.fixture(scope="module")
def models():
    ds = synthetic_point_process("hermite1d", seed=0)
    return {
        link: GaussianCoxProcess(ds.X, ds.extras["bounds"], link=link, grid_size=60, num_landmarks=30)
        for link in LINKS
    }


@pytest.mark.parametrize("link", LINKS)
def test_intensity_formulas_match_monte_carlo(link):
    mean = torch.tensor([-1.0, 0.2, 1.5])
    std = torch.tensor([0.7, 0.3, 1.1])
    g = mean + std * torch.randn(400000, 1, 3)
    lam = links.kappa(link, g, 2.0)
    best = torch.tensor(2.5)
    m, v = links.intensity_moments(link, mean, std**2, 2.0)
    assert torch.allclose(m, lam.mean(0)[0], rtol=0.02)
    assert torch.allclose(v, lam.var(0)[0], rtol=0.05)
    ei = links.expected_improvement(link, mean, std, best, 2.0)
    assert torch.allclose(ei, (lam - best).clamp_min(0).mean(0)[0], rtol=0.03, atol=1e-3)
    pi = links.exceedance_probability(link, mean, std, best, 2.0)
    assert torch.allclose(pi, (lam > best).double().mean(0)[0], atol=3e-3)


@pytest.mark.parametrize("link", LINKS)
def test_shapes_and_ranges(models, link):
    model = models[link]
    acqs = [
        IntensityUpperConfidenceBound(model, beta=4.0),
        IntensityExpectedImprovement(model),
        IntensityProbabilityOfImprovement(model),
        ExpectedArrivals(model, window=2.0),
        IdleTime(model, window=2.0, num_samples=64),
        ChangePointScore(model, num_samples=8),
    ]
    X = torch.rand(4, 3, 1) * 100
    for acq in acqs:
        value = acq(X)
        assert value.shape == (4,) and torch.isfinite(value).all()
        assert acq(X[0]).shape == (1,)  # q x d: one batch (BoTorch's convention)
        # a batch scores at least its first point (up to round-off between batch shapes)
        assert (acq(X) >= acq(X[:, :1]) * (1 - 1e-9) - 1e-12).all() or isinstance(acq, IdleTime)
    assert ((acqs[2](X) >= 0) & (acqs[2](X) <= 1)).all()
    idle = acqs[4](X)
    assert ((idle > 0) & (idle < 1)).all()
    assert (acqs[4](X) <= acqs[4](X[:, :1])).all()  # more windows: less chance of no arrival at all


def test_monotone_in_their_knobs(models):
    model = models["exp"]
    X = torch.rand(6, 1, 1) * 100
    assert (IntensityUpperConfidenceBound(model, beta=9.0)(X) > IntensityUpperConfidenceBound(model, beta=1.0)(X)).all()
    mean, _, _ = model.intensity(X[:, 0])
    assert torch.allclose(IntensityUpperConfidenceBound(model, beta=0.0)(X), mean)
    assert (ExpectedArrivals(model, window=4.0)(X) > ExpectedArrivals(model, window=1.0)(X)).all()
    assert (IdleTime(model, window=4.0)(X) < IdleTime(model, window=1.0)(X)).all()
    low, high = IntensityExpectedImprovement(model, best_f=1.0)(X), IntensityExpectedImprovement(model, best_f=5.0)(X)
    assert (low > high).all()
    # arrivals over the whole domain = the expected count; idle time >= exp(-E[arrivals]) (Jensen)
    centre = model.bounds.mean(0).reshape(1, 1, 1)
    everything = ExpectedArrivals(model, window=60.0, nodes_per_dim=400)(centre)
    assert everything.item() == pytest.approx(model.expected_count().mean.item(), rel=1e-3)
    small = X[:2]
    assert (IdleTime(model, window=1.0)(small) >= torch.exp(-ExpectedArrivals(model, window=1.0)(small))).all()


def test_optimisers_find_the_peak(models):
    model = models["quadratic"]
    grid = torch.linspace(0, 100, 201).unsqueeze(-1)
    mean = model.intensity(grid)[0]
    acq = IntensityUpperConfidenceBound(model, beta=0.0)
    x, _ = optimize_acqf_discrete(acq, q=1, choices=grid)
    assert x.item() == pytest.approx(grid[mean.argmax()].item())
    x2, _ = optimize_acqf(acq, bounds=model.bounds, q=1, num_restarts=4, raw_samples=64)
    assert abs(x2.item() - x.item()) < 1.0


def test_continuous_optimisation_in_2d():
    bounds = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    events = poisson_process(lambda X: 20 + 300.0 * torch.exp(-((X - torch.tensor([0.7, 0.3])) ** 2).sum(-1) / 0.02), bounds, seed=0)
    model = GaussianCoxProcess(events, bounds, link="exp", grid_size=16, num_landmarks=8)
    model.covar_module.base_kernel.lengthscale = 0.15
    for acq in (IntensityExpectedImprovement(model), ExpectedArrivals(model, window=0.1)):
        x, _ = optimize_acqf(acq, bounds=bounds, q=2, num_restarts=3, raw_samples=32)
        assert x.shape == (2, 2)
        x1, _ = optimize_acqf(acq, bounds=bounds, q=1, num_restarts=3, raw_samples=32)
        assert (x1 - torch.tensor([0.7, 0.3])).norm() < 0.12


def test_change_point_score_finds_a_step():
    bounds = torch.tensor([[0.0], [100.0]])
    events = poisson_process(lambda X: 1.0 + 9.0 * (X[:, 0] > 60), bounds, seed=0)
    model = gpkit.fit(GaussianCoxProcess(events, bounds, link="exp", grid_size=100, num_landmarks=50))
    acq = ChangePointScore(model)
    t = torch.linspace(0, 100, 201).unsqueeze(-1)
    x, _ = optimize_acqf_discrete(acq, q=1, choices=t)
    assert abs(x.item() - 60) < 6


def test_reveal_windows_loop():
    ds = synthetic_point_process("hermite1d", seed=0)
    cands = torch.arange(0.0, 100.5, 2.0).unsqueeze(-1)
    res = reveal_windows(
        ds.X, ds.extras["bounds"], 2.0, 5, acquisition="ucb", start=torch.tensor([[25.0]]), candidates=cands,
        model_options={"grid_size": 50, "num_landmarks": 25}, fit_options={"max_iter": 5},
    )
    assert res.centres.shape == (5, 1) and res.centres[0].item() == 25.0
    gaps = (res.centres[:, None, 0] - res.centres[None, :, 0]).abs() + 1e3 * torch.eye(5)
    assert gaps.min() > 4.0  # visited windows are excluded with +-2r
    assert sum(res.counts) == len(res.revealed)
    assert isinstance(res.model, GaussianCoxProcess) and res.model.observed.double().mean() < 0.5
    with pytest.raises(ValueError, match="acquisition"):
        reveal_windows(ds.X, ds.extras["bounds"], 2.0, 3, acquisition="thompson")
    with pytest.raises(ValueError, match="window"):
        reveal_windows(ds.X, ds.extras["bounds"], -1.0, 3)
    with pytest.raises(ValueError, match="window must be a positive half-width"):
        reveal_windows(ds.X, ds.extras["bounds"], [1.0, 2.0], 3)
    with pytest.raises(ValueError, match="exclusion"):
        reveal_windows(ds.X, ds.extras["bounds"], 2.0, 3, exclusion=-1.0)


def test_bad_input(models):
    with pytest.raises(TypeError, match="model must be"):
        IntensityUpperConfidenceBound(torch.nn.Linear(1, 1))
    with pytest.raises(ValueError, match="beta"):
        IntensityUpperConfidenceBound(models["exp"], beta=-1.0)
    with pytest.raises(ValueError, match="window"):
        ExpectedArrivals(models["exp"], window=0.0)
    with pytest.raises(ValueError, match="best_f"):
        IntensityExpectedImprovement(models["exp"], best_f=float("nan"))
    with pytest.raises(ValueError, match="hazard"):
        ChangePointScore(models["exp"], hazard=2.0)
    with pytest.raises(ValueError, match="num_samples"):
        ChangePointScore(models["exp"], num_samples=0)
    with pytest.raises(ValueError, match="num_samples"):
        IdleTime(models["exp"], window=2.0, num_samples=0)
    bounds = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    with pytest.raises(ValueError, match="1-D"):
        ChangePointScore(GaussianCoxProcess(torch.rand(20, 2), bounds, grid_size=8, num_landmarks=4))
