"""GaussianCoxProcess: exact limits (dense Laplace, exact change of kernel), the MAP, the Laplace marginal
likelihood gradient, determinism, recovery of a known intensity, credible bands, BoTorch posterior, bad input."""

import math

import pytest
import torch
from botorch.posteriors.gpytorch import GPyTorchPosterior

import gpkit
from gpkit.cox import GaussianCoxProcess, poisson_process, synthetic_point_process
from gpkit.laplace import laplace_covariance, newton_minimize

LINKS = ["quadratic", "exp", "softplus"]


@pytest.fixture(scope="module")
def hermite():
    return synthetic_point_process("hermite1d", seed=0)


def _small(events, bounds, link, **kw):
    return GaussianCoxProcess(events, bounds, link=link, **{"grid_size": 60, "num_landmarks": 30, **kw})


# ------------------------------------------------------------------------------------------ exact limits
@pytest.mark.parametrize("link", ["exp", "softplus"])
def test_grid_links_equal_dense_laplace(link):
    """Landmarks = grid: the MAP and the Laplace covariance on the grid equal a dense Laplace (R&W Alg. 3.1,
    written here independently in function space, the covariance by the stable K - K W^1/2 B^-1 W^1/2 K)."""
    bounds = torch.tensor([[0.0], [10.0]])
    events = poisson_process(lambda X: 3.0 + 2.0 * torch.sin(X[:, 0]), bounds, seed=1)
    model = GaussianCoxProcess(events, bounds, grid_size=25, num_landmarks=25, link=link)
    model.covar_module.base_kernel.lengthscale = 0.1
    cells = model.bounds[0] + 10.0 * model.cells
    mean, _, root = model.latent_moments(cells)
    with torch.no_grad():
        K = model.covar_module(model.cells).to_dense()
        c, y, a, dv = model._prior_mean(), model.counts, model.scale, model.cell_volume

        def derivatives(g):  # gradient and negative Hessian diagonal of the grid log-likelihood
            if link == "exp":
                lam = a * g.exp()
                return y - dv * lam, dv * lam
            s, sig = torch.nn.functional.softplus(g), torch.sigmoid(g)
            return y * sig / s - a * dv * sig, -(y * (sig * (1 - sig) / s - (sig / s) ** 2) - a * dv * sig * (1 - sig))

        f = torch.zeros(25)  # g - c; Newton iterations of Rasmussen & Williams Alg. 3.1
        for _ in range(50):
            grad, W = derivatives(c + f)
            sw = W.sqrt()
            L = torch.linalg.cholesky(torch.eye(25) + sw[:, None] * K * sw[None, :])
            b = W * f + grad
            rhs = sw * (K @ b)
            f = K @ (b - sw * torch.cholesky_solve(rhs.unsqueeze(-1), L).squeeze(-1))
        g_hat = c + f
        grad, W = derivatives(g_hat)
        dense = laplace_covariance(K, W)
        # Laplace evidence (R&W eq. 3.32; K^-1 f = grad log p(y|g) at the mode)
        lam = a * (g_hat.exp() if link == "exp" else torch.nn.functional.softplus(g_hat))
        sw = W.sqrt()
        logdet_B = torch.logdet(torch.eye(25) + sw[:, None] * K * sw[None, :])
        evidence = (y * lam.log()).sum() - dv * lam.sum() - 0.5 * f @ grad - 0.5 * logdet_B
        assert model.log_marginal_likelihood().item() == pytest.approx(evidence.item(), abs=1e-4)
    assert torch.allclose(mean, g_hat, atol=1e-5)
    assert torch.allclose(root @ root.mT, dense, atol=1e-5 * float(K.diagonal().max()))


def test_quadratic_all_landmarks_equals_exact_change_of_kernel():
    """Events on the grid and landmarks = grid: the changed kernel is K - K (K + I / (2 a Delta))^-1 K and the
    MAP is the exact representer solution, -sum 2 log f + f^T K~^-1 f / 2 minimised over f > 0."""
    bounds = torch.tensor([[0.0], [1.0]])
    G = 30
    cells = (torch.arange(G) + 0.5) / G
    pick = torch.tensor([3, 4, 5, 6, 12, 13, 20, 21, 22, 23, 24, 25])
    events = cells[pick].unsqueeze(-1)
    model = GaussianCoxProcess(events, bounds, grid_size=G, num_landmarks=G, link="quadratic")
    model.covar_module.base_kernel.lengthscale = 0.12
    with torch.no_grad():
        K = model.covar_module(model.cells).to_dense()
        sigma2 = 1.0 / (2 * model.scale * model.cell_volume)
        Kt = K - K @ torch.linalg.solve(K + sigma2 * torch.eye(G), K)
        assert torch.allclose(model.change_of_kernel(cells.unsqueeze(-1)).to_dense(), Kt, atol=1e-6)
        Kx = Kt[pick][:, pick]
        Kx_inv = torch.linalg.inv(Kx)

        def objective(f, derivatives):
            if (f <= 0).any():
                return torch.tensor(math.inf), None, None
            value = -2 * f.log().sum() + 0.5 * f @ Kx_inv @ f
            return value, (-2 / f + Kx_inv @ f) if derivatives else None, (torch.diag(2 / f**2) + Kx_inv) if derivatives else None

        f_hat = newton_minimize(objective, torch.ones(len(pick)), tol=1e-14).x
        mean, _, _ = model.latent_moments(events)
        # evidence: the change of kernel's normaliser det(I + 2 a Delta K)^-1/2, two sign-symmetric modes
        a, n = model.scale, len(pick)
        W = 2 / f_hat**2
        evidence = (
            2 * f_hat.log().sum() + n * math.log(a) - 0.5 * f_hat @ Kx_inv @ f_hat
            - 0.5 * torch.logdet(torch.eye(n) + Kx * W) - 0.5 * torch.logdet(torch.eye(G) + K / sigma2) + math.log(2)
        )
        assert model.log_marginal_likelihood().item() == pytest.approx(evidence.item(), abs=1e-4)
    assert torch.allclose(mean, f_hat, rtol=1e-5)


@pytest.mark.parametrize("link", LINKS)
def test_map_gradient_is_zero_and_marginal_likelihood_gradient_is_exact(link, hermite):
    model = _small(hermite.X, hermite.extras["bounds"], link)
    s = model.state()
    v = s.w.clone().requires_grad_(True)
    with torch.no_grad():
        Phi = model.covar_module(model._observations(), model.landmarks).to_dense() @ s.transform
    value = model._objective(Phi, s.mean)(v, False)[0]
    (grad,) = torch.autograd.grad(value, v)
    assert grad.abs().max() < 1e-5
    # the implicit gradient of the Laplace evidence matches central finite differences
    raw = model.covar_module.base_kernel.raw_lengthscale
    model.zero_grad()
    model.loss().backward()
    analytic = raw.grad.item()
    h = 1e-4
    with torch.no_grad():
        raw += h
        up = model.loss().item()
        raw -= 2 * h
        down = model.loss().item()
        raw += h
    assert analytic == pytest.approx((up - down) / (2 * h), rel=1e-3, abs=1e-6)


@pytest.mark.parametrize("link", LINKS)
def test_two_fits_give_the_same_answer(link, hermite):
    X = torch.linspace(0, 100, 50).unsqueeze(-1)
    fits = [gpkit.fit(_small(hermite.X, hermite.extras["bounds"], link)) for _ in range(2)]
    a, b = (m.intensity(X)[0] for m in fits)
    assert torch.equal(a, b)
    for p, q in zip(fits[0].parameters(), fits[1].parameters()):
        assert torch.equal(p, q)


# ------------------------------------------------------------------------------------------- accuracy
@pytest.mark.accuracy
@pytest.mark.parametrize("link", LINKS)
def test_recovers_the_hermite_intensity_with_calibrated_bands(link, hermite):
    model = gpkit.fit(GaussianCoxProcess(hermite.X, hermite.extras["bounds"], link=link, grid_size=100, num_landmarks=50))
    t = torch.linspace(0, 100, 400).unsqueeze(-1)
    truth = hermite.extras["intensity"](t)
    mean, lower, upper = model.intensity(t)
    ise = ((mean - truth) ** 2).mean() * 100  # integrated squared error on [0, 100]
    coverage = ((truth >= lower) & (truth <= upper)).double().mean()
    assert ise < 100  # untrained defaults: 155 / 178 / 308
    assert 0.8 <= coverage <= 0.99  # untrained: 0.65 / 0.50 / 0.43


@pytest.mark.accuracy
def test_error_decreases_with_more_events():
    bounds = torch.tensor([[0.0], [100.0]])
    shape = lambda X: 1.0 + 2 * torch.exp(-((X[:, 0] - 60) ** 2) / (2 * 25**2))
    t = torch.linspace(0, 100, 300).unsqueeze(-1)
    errors = []
    for rate in (1.0, 20.0):
        events = poisson_process(lambda X, rate=rate: rate * shape(X), bounds, seed=3)
        model = gpkit.fit(GaussianCoxProcess(events, bounds, grid_size=60, num_landmarks=30, link="exp"))
        errors.append(float(((model.intensity(t)[0] / rate - shape(t)) ** 2).mean()))
    # fitted: 0.012 -> 0.0049; the untrained default lengthscale gives 0.050 -> 0.011
    assert errors[1] < 0.6 * errors[0] and errors[0] < 0.025 and errors[1] < 0.008


# --------------------------------------------------------------------------------- posterior and counts
def test_posterior_shapes_and_botorch_sampling(hermite):
    model = _small(hermite.X, hermite.extras["bounds"], "exp")
    X = torch.rand(4, 3, 1) * 100
    post = model.posterior(X)
    assert isinstance(post, GPyTorchPosterior)
    assert post.mean.shape == (4, 3, 1) and post.variance.shape == (4, 3, 1)
    assert post.rsample(torch.Size([5])).shape == (5, 4, 3, 1)
    mean, lower, upper = model.intensity(X[0])
    assert mean.shape == (3,) and (lower <= mean).all() and (mean <= upper).all()
    narrow = model.intensity(X[0], level=0.5)
    assert (narrow[1] >= lower).all() and (narrow[2] <= upper).all()


@pytest.mark.parametrize("link", LINKS)
def test_expected_count(link, hermite):
    model = _small(hermite.X, hermite.extras["bounds"], link)
    total = model.expected_count()
    assert abs(total.mean - len(hermite.X)) < 3 * math.sqrt(len(hermite.X))
    assert 0.3 * math.sqrt(len(hermite.X)) < total.std < 3 * math.sqrt(len(hermite.X))
    left, right = model.expected_count(torch.tensor([[0.0], [50.0]])), model.expected_count(torch.tensor([[50.0], [100.0]]))
    assert torch.allclose(left.mean + right.mean, total.mean, rtol=0.02)
    if link == "quadratic":  # the exact variance agrees with Monte Carlo
        nodes, weights = model.window_integral(model.bounds)
        mean, _, root = model.latent_moments(nodes)
        z = torch.randn(20000, root.shape[-1])
        draws = (model.scale * (mean + z @ root.mT) ** 2 * weights / model.volume).sum(-1)
        assert total.std == pytest.approx(draws.std().item(), rel=0.05)


@pytest.mark.parametrize("d", [2, 3])
def test_space_and_space_time(d):
    bounds = torch.tensor([[0.0] * d, [1.0] * d])
    events = poisson_process(lambda X: 200.0 * torch.exp(-((X - 0.3) ** 2).sum(-1) / 0.05), bounds, seed=0)
    model = gpkit.fit(GaussianCoxProcess(events, bounds, link="exp", grid_size=8, num_landmarks=5), max_iter=15)
    mean, lower, upper = model.intensity(torch.tensor([[0.3] * d, [0.9] * d]))
    assert mean[0] > 3 * mean[1] and (lower <= upper).all()
    assert model.posterior(torch.rand(2, 4, d)).mean.shape == (2, 4, 1)


def test_float32(hermite):
    model = _small(hermite.X.float(), hermite.extras["bounds"].float(), "exp")
    gpkit.fit(model, max_iter=10)
    mean, lower, upper = model.intensity(torch.tensor([[10.0], [60.0]], dtype=torch.float32))
    assert mean.dtype == torch.float32 and torch.isfinite(mean).all() and (lower <= upper).all()


def test_windows_restrict_the_integral():
    bounds = torch.tensor([[0.0], [100.0]])
    events = poisson_process(lambda X: torch.full_like(X[:, 0], 2.0), bounds, seed=0)
    seen = events[events[:, 0] < 40]
    full = GaussianCoxProcess(seen, bounds, grid_size=50, num_landmarks=25, link="exp")
    windowed = GaussianCoxProcess(seen, bounds, grid_size=50, num_landmarks=25, link="exp", windows=torch.tensor([[0.0], [40.0]]))
    assert float(windowed.observed.double().mean()) == pytest.approx(0.4)
    seen_box = torch.tensor([[0.0], [40.0]])
    assert windowed.expected_count(seen_box).mean == pytest.approx(len(seen), rel=0.05)
    # without the windows, the empty [40, 100] pulls the fitted level down (here with shared hyperparameters)
    assert full.expected_count(torch.tensor([[60.0], [100.0]])).mean < 0.5 * windowed.expected_count(torch.tensor([[60.0], [100.0]])).mean


# ------------------------------------------------------------------------------------------- bad input
def test_bad_input():
    bounds = torch.tensor([[0.0], [1.0]])
    ok = torch.rand(10, 1)
    with pytest.raises(ValueError, match="events.*outside bounds"):
        GaussianCoxProcess(ok + 1.5, bounds)
    with pytest.raises(ValueError, match="events is empty"):
        GaussianCoxProcess(torch.zeros(0, 1), bounds)
    with pytest.raises(ValueError, match="bounds must have lower < upper"):
        GaussianCoxProcess(ok, bounds.flip(0))
    with pytest.raises(ValueError, match="link must be one of"):
        GaussianCoxProcess(ok, bounds, link="sigmoid2")
    with pytest.raises(ValueError, match="events contains NaN"):
        GaussianCoxProcess(torch.cat([ok, torch.tensor([[float("nan")]])]), bounds)
    with pytest.raises(ValueError, match="bounds must be 2 x 1"):
        GaussianCoxProcess(ok, torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="d = 1, 2 or 3"):
        GaussianCoxProcess(torch.rand(5, 4), torch.tensor([[0.0] * 4, [1.0] * 4]))
    with pytest.raises(TypeError, match="events must be"):
        GaussianCoxProcess([[0.5]], bounds)
    with pytest.raises(ValueError, match="grid_size"):
        GaussianCoxProcess(ok, bounds, grid_size=1)
    with pytest.raises(ValueError, match="num_landmarks"):
        GaussianCoxProcess(ok, bounds, grid_size=10, num_landmarks=20)
    with pytest.raises(ValueError, match="windows"):
        GaussianCoxProcess(ok, bounds, windows=torch.tensor([[0.0], [0.01]]))
    model = GaussianCoxProcess(ok, bounds, grid_size=20, num_landmarks=10)
    with pytest.raises(ValueError, match="X must be"):
        model.posterior(torch.rand(3, 2))
    with pytest.raises(ValueError, match="level"):
        model.intensity(torch.rand(3, 1), level=1.5)
    with pytest.raises(ValueError, match="region_bounds"):
        model.expected_count(torch.tensor([[0.5], [0.2]]))


def test_bad_input_names_the_argument():
    bounds = torch.tensor([[0.0], [1.0]])
    ok = torch.rand(10, 1, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="grid_size must be an int"):
        GaussianCoxProcess(ok, bounds, grid_size=10.0)
    with pytest.raises(ValueError, match="num_landmarks must be an int"):
        GaussianCoxProcess(ok, bounds, grid_size=10, num_landmarks=True)
    with pytest.raises(ValueError, match="scale must be a positive number"):
        GaussianCoxProcess(ok, bounds, scale=True)
    with pytest.raises(ValueError, match="windows must have lower <= upper"):
        GaussianCoxProcess(ok, bounds, windows=torch.tensor([[1.0], [0.0]]))
    with pytest.raises(ValueError, match="windows contains NaN"):
        GaussianCoxProcess(ok, bounds, windows=torch.tensor([[float("nan")], [1.0]]))
    model = GaussianCoxProcess(ok, bounds, grid_size=20, num_landmarks=10)
    nan = torch.tensor([[0.5], [float("nan")]])
    with pytest.raises(ValueError, match="X contains NaN"):
        model.posterior(nan)
    with pytest.raises(ValueError, match="X contains NaN"):
        model.intensity(nan)
    with pytest.raises(TypeError, match="X must be a tensor"):
        model.intensity([[0.5]])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("link", LINKS)
def test_cuda(link, hermite):
    from gpkit.acquisition import IdleTime, IntensityExpectedImprovement

    device = torch.device("cuda")
    model = gpkit.fit(_small(hermite.X.to(device), hermite.extras["bounds"].to(device), link), max_iter=10)
    X = torch.linspace(0, 100, 7, device=device).unsqueeze(-1)
    mean, lower, upper = model.intensity(X)
    assert mean.device.type == "cuda" and (lower <= upper).all()
    assert model.expected_count().mean.device.type == "cuda"
    for acq in (IntensityExpectedImprovement(model), IdleTime(model, window=2.0, num_samples=16)):
        assert acq(X.unsqueeze(-2)).device.type == "cuda"
