"""ETGP: fitting, probabilities, GP cost independent of C (counted), the NN-bypass check, BoTorch use, bad inputs."""

import gpytorch
import pytest
import torch
from botorch.acquisition import qUpperConfidenceBound
from botorch.optim import optimize_acqf
from botorch.posteriors.gpytorch import GPyTorchPosterior

import gpkit
from gpkit.baselines import MulticlassSVGPBaseline
from gpkit.flows import AffineFlow, InputDependentFlow, sinh_arcsinh_affine
from gpkit.models import ETGP


def _data(n=300, seed=0, num_classes=3):
    """Three classes from bands of a wiggly 2-D function (no class is separable by a line)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 2, generator=g) * 2 - 1
    f = torch.sin(4 * X[:, 0]) + torch.cos(4 * X[:, 1]) + 0.5 * X[:, 0]
    edges = torch.tensor([-0.6, 0.6]) if num_classes == 3 else torch.linspace(-1.5, 1.5, num_classes - 1)
    return X, torch.bucketize(f, edges)


def _accuracy(probs, y):
    return (probs.argmax(-1) == y).double().mean().item()


@pytest.fixture(scope="module")
def fitted():
    torch.manual_seed(0)
    X, y = _data()
    model = ETGP(X, y, num_classes=3, num_inducing=30, warmup_epochs=20)
    gpkit.fit(model, epochs=80, seed=0)  # the flow network switches on after epoch 20
    return model, X, y


@pytest.mark.accuracy
def test_fits_a_small_problem(fitted):
    model, _, _ = fitted
    Xt, yt = _data(1000, seed=1)
    probs = model.predict_proba(Xt)
    assert probs.shape == (1000, 3)
    assert torch.allclose(probs.sum(-1), torch.ones(1000))
    assert _accuracy(probs, yt) > 0.88  # classes 49/36/15 %: chance 0.49
    nll = -probs.gather(-1, yt[:, None]).log().mean()
    assert nll < 0.35
    assert model.fit_history[-1] < model.fit_history[0]


@pytest.mark.accuracy
def test_the_gp_does_work(fitted):
    """The NN-bypass pitfall: the flow network alone (q(f0) ablated to 0) must classify much worse. With the
    defaults: 0.93 and 0.41 (chance 0.49); without the warm-up and the output penalty (``warmup_epochs=0,
    offset_penalty=0``) the network takes over part of the work: 0.90 and 0.67, and this test fails."""
    model, _, _ = fitted
    Xt, yt = _data(1000, seed=1)
    full, ablated = _accuracy(model.predict_proba(Xt), yt), _accuracy(model.predict_proba(Xt, ablate="gp"), yt)
    assert full - ablated > 0.35


@pytest.mark.accuracy
def test_the_output_penalty_alone_keeps_the_gp_in_use():
    """Without the warm-up the network takes over part of the work (offset_penalty=0: accuracy 0.90 but 0.67 with
    q(f0) ablated); a strong output penalty alone keeps the GP doing it (0.86 and 0.53)."""
    X, y = _data()
    Xt, yt = _data(1000, seed=1)
    torch.manual_seed(0)
    model = ETGP(X, y, num_classes=3, num_inducing=30, warmup_epochs=0, offset_penalty=0.1)
    gpkit.fit(model, epochs=80, seed=0)
    full, ablated = _accuracy(model.predict_proba(Xt), yt), _accuracy(model.predict_proba(Xt, ablate="gp"), yt)
    assert full > 0.8
    assert full - ablated > 0.3


def test_probabilities_and_mc_dropout(fitted):
    model, X, _ = fitted
    probs = model.predict_proba(X[:50], num_dropout_samples=8)
    assert probs.shape == (50, 3) and (probs >= 0).all()
    assert torch.allclose(probs.sum(-1), torch.ones(50))
    assert not torch.allclose(probs, model.predict_proba(X[:50]))


def test_posterior_of_f0_and_a_botorch_acquisition(fitted):
    model = fitted[0]
    for shape in [(4, 2), (3, 4, 2), (2, 3, 1, 2)]:
        post = model.posterior(torch.rand(shape))
        assert isinstance(post, GPyTorchPosterior)
        assert post.mean.shape == (*shape[:-1], 1) and post.variance.shape == (*shape[:-1], 1)
    assert model.num_outputs == 1
    # the latent f0 is a smooth 1-D function: any BoTorch acquisition runs on it
    acqf = qUpperConfidenceBound(model, beta=2.0)
    bounds = torch.tensor([[-1.0, -1.0], [1.0, 1.0]])
    cand, _ = optimize_acqf(acqf, bounds=bounds, q=2, num_restarts=2, raw_samples=16, options={"maxiter": 5})
    assert cand.shape == (2, 2) and ((cand >= -1) & (cand <= 1)).all()
    with pytest.raises(ValueError, match="observation_noise"):
        model.posterior(torch.rand(3, 2), observation_noise=True)


def _count_gp_work(model, loss_fn, index):
    """Kernel calls, kernel entries, Cholesky calls and factorised matrices in one training step."""
    counts = {"kernel_calls": 0, "kernel_entries": 0, "cholesky_calls": 0, "cholesky_matrices": 0}
    kernels = [m for m in model.modules() if isinstance(m, gpytorch.kernels.Kernel)
               and not any(isinstance(c, gpytorch.kernels.Kernel) for c in m.children())]  # base kernels
    originals = {}
    for k in kernels:
        originals[k] = k.forward

        def counted(*args, _f=k.forward, **kwargs):
            out = _f(*args, **kwargs)
            counts["kernel_calls"] += 1
            counts["kernel_entries"] += out.numel()
            return out

        k.forward = counted
    chol, chol_ex = torch.linalg.cholesky, torch.linalg.cholesky_ex

    def _record(A):
        counts["cholesky_calls"] += 1
        counts["cholesky_matrices"] += A.numel() // (A.size(-1) * A.size(-2))

    def c1(A, *a, **k):
        _record(A)
        return chol(A, *a, **k)

    def c2(A, *a, **k):
        _record(A)
        return chol_ex(A, *a, **k)

    torch.linalg.cholesky, torch.linalg.cholesky_ex = c1, c2
    try:
        with gpytorch.settings.fast_computations(False, False, False):
            model.train()
            loss_fn(index).backward()
    finally:
        torch.linalg.cholesky, torch.linalg.cholesky_ex = chol, chol_ex
        for k, f in originals.items():
            k.forward = f
    return counts


def test_gp_work_per_step_does_not_grow_with_the_number_of_classes():
    X = torch.rand(400, 2)
    index = torch.arange(64)
    etgp, svgp = {}, {}
    for C in (3, 30, 300):
        y = torch.arange(400) % C
        model = ETGP(X, y, num_classes=C, num_inducing=20, inducing_points="random")
        etgp[C] = _count_gp_work(model, model.batch_loss, index)
        base = MulticlassSVGPBaseline(X[:20].clone(), C)
        mll = gpytorch.mlls.VariationalELBO(base.likelihood, base, num_data=400)
        svgp[C] = _count_gp_work(base, lambda i, b=base, m=mll, y=y: -m(b(X[i]), y[i]), index)
    assert etgp[3]["kernel_calls"] > 0 and etgp[3]["cholesky_calls"] > 0
    assert etgp[3] == etgp[30] == etgp[300]  # identical GP work whatever C
    # the C-GP SVGP baseline factorises C matrices and evaluates C times the kernel entries
    assert svgp[300]["cholesky_matrices"] == 100 * svgp[3]["cholesky_matrices"]
    assert svgp[300]["kernel_entries"] == 100 * svgp[3]["kernel_entries"]
    assert svgp[3]["kernel_entries"] == 3 * etgp[3]["kernel_entries"]


def test_constant_flows_and_float32():
    X, y = _data(120)
    model = ETGP(X.float(), y, num_classes=3, num_inducing=10, flow=sinh_arcsinh_affine(3))
    gpkit.fit(model, epochs=3, seed=0)
    probs = model.predict_proba(X.float())
    assert probs.dtype == torch.float32 and torch.allclose(probs.sum(-1), torch.ones(120, dtype=torch.float32))
    assert model.posterior(X[:5].float()).mean.dtype == torch.float32


def test_default_flow_starts_at_identity():
    """Before training the flows are the identity: all C logits equal f0, so every class has probability 1/C."""
    X, y = _data(100)
    model = ETGP(X, y, num_classes=3, num_inducing=10)
    assert torch.allclose(model.predict_proba(X), torch.full((100, 3), 1 / 3))


def test_float_labels_with_integer_values_and_n_by_1_labels():
    X, y = _data(60)
    model = ETGP(X, y.double().unsqueeze(-1), num_classes=3, num_inducing=5)
    assert model.train_targets.dtype == torch.long and model.train_targets.shape == (60,)


def test_bad_inputs():
    X, y = _data(50)
    with pytest.raises(ValueError, match="train_Y labels must lie in 0..num_classes-1"):
        ETGP(X, y + 1, num_classes=3)
    with pytest.raises(ValueError, match="train_Y labels"):
        ETGP(X, y - 1, num_classes=3)
    with pytest.raises(ValueError, match="train_Y must hold integer"):
        ETGP(X, y + 0.5, num_classes=4)
    with pytest.raises(TypeError, match="train_Y"):
        ETGP(X, y > 0, num_classes=2)
    with pytest.raises(ValueError, match="train_Y must be n = 50"):
        ETGP(X, y[:40], num_classes=3)
    Xn = X.clone()
    Xn[3, 1] = float("nan")
    with pytest.raises(ValueError, match="train_X contains NaN"):
        ETGP(Xn, y, num_classes=3)
    with pytest.raises(TypeError, match="train_X"):
        ETGP(X.numpy(), y, num_classes=3)
    with pytest.raises(ValueError, match="num_classes"):
        ETGP(X, y, num_classes=1)
    with pytest.raises(ValueError, match="num_inducing"):
        ETGP(X, y, num_classes=3, num_inducing=51)
    with pytest.raises(ValueError, match="num_flows=2 but num_classes=3"):
        ETGP(X, y, num_classes=3, flow=AffineFlow(2))
    with pytest.raises(ValueError, match="network takes 5 inputs"):
        ETGP(X, y, num_classes=3, flow=InputDependentFlow(AffineFlow(3), 5))
    model = ETGP(X, y, num_classes=3, num_inducing=5)
    with pytest.raises(ValueError, match="X must be a tensor of shape"):
        model.predict_proba(torch.rand(4, 3))
    with pytest.raises(ValueError, match="X contains NaN"):
        model.predict_proba(torch.full((2, 2), float("nan")))
    with pytest.raises(ValueError, match="ablate"):
        model.predict_proba(X, ablate="nn")
    with pytest.raises(TypeError, match="X must be a torch.Tensor"):
        model.predict_proba(X.numpy())
    with pytest.raises(ValueError, match="chunk"):
        model.predict_proba(X, chunk=0)
    with pytest.raises(TypeError, match="covar_module"):
        ETGP(X, y, num_classes=3, covar_module="rbf")
    with pytest.raises(TypeError, match="seed"):
        ETGP(X, y, num_classes=3, seed=1.5)
    with pytest.raises(ValueError, match="hidden"):
        ETGP(X, y, num_classes=3, hidden=(0,))


def test_inputs_are_standardised_for_the_gp_and_the_flows():
    """The model sees standardised inputs: fitted on ``a X + b``, it predicts at ``a X* + b`` what the model
    fitted on ``X`` predicts at ``X*`` (posterior of f0 and class probabilities)."""
    X, y = _data(120)
    Xs = torch.rand(20, 2) * 2 - 1
    scale, shift = torch.tensor([100.0, 0.01]), torch.tensor([50.0, -3.0])
    models = []
    for inputs in (X, X * scale + shift):
        torch.manual_seed(0)
        model = ETGP(inputs, y, num_classes=3, num_inducing=10, warmup_epochs=1)
        gpkit.fit(model, epochs=3, seed=0)
        models.append(model)
    plain, moved = models
    post, post_moved = plain.posterior(Xs), moved.posterior(Xs * scale + shift)
    assert post.mean.abs().max() > 1e-3  # trained: q(f0) is not the prior
    assert torch.allclose(post.mean, post_moved.mean, atol=1e-6)
    assert torch.allclose(post.variance, post_moved.variance, atol=1e-6)
    probs = plain.predict_proba(Xs)
    assert not torch.allclose(probs, torch.full_like(probs, 1 / 3), atol=1e-3)
    assert torch.allclose(probs, moved.predict_proba(Xs * scale + shift), atol=1e-6)


@pytest.mark.slow
@pytest.mark.accuracy
def test_default_path_fit_with_no_options():
    X, y = _data(400)
    Xt, yt = _data(1000, seed=1)
    model = ETGP(X, y, num_classes=3)
    gpkit.fit(model)
    assert _accuracy(model.predict_proba(Xt), yt) > 0.9
