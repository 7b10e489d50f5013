"""DKLGP on a CUDA device (run with ``pytest -m gpu``): same answers as on the CPU, BoTorch works."""

import gpytorch
import pytest
import torch
from botorch.acquisition.logei import qLogExpectedImprovement
from botorch.optim import optimize_acqf

import gpkit
from gpkit.datasets import synthetic_gp
from gpkit.models import DKLGP

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("likelihood", ["gaussian", "studentt"])
def test_cuda_matches_cpu(likelihood):
    ds = synthetic_gp(600, 3, "matern15", likelihood=likelihood, seed=0)
    out = []
    for device in ["cpu", "cuda"]:
        lik = (
            gpytorch.likelihoods.GaussianLikelihood()
            if likelihood == "gaussian"
            else gpytorch.likelihoods.StudentTLikelihood()
        )
        X, y = ds.train_X.to(device), ds.train_y.to(device)
        model = DKLGP(X, y.unsqueeze(-1), likelihood=lik, rho=1.5)
        model.train()
        loss = model.batch_loss(torch.arange(0, 480, 7, device=device))
        loss.backward()
        grad = model.covar_module.raw_outputscale.grad.clone()
        gpkit.fit(model, epochs=2, seed=0, progress=False)
        post = model.posterior(ds.test_X[:6].to(device).reshape(2, 3, 3))
        out.append((loss.detach().cpu(), grad.cpu(), post.mean.detach().cpu(), post.variance.detach().cpu()))
        assert post.mean.device.type == device
    for a, b in zip(*out):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_cuda_botorch_and_float32():
    ds = synthetic_gp(500, 2, "matern15", seed=1)
    X, y = ds.train_X.cuda(), ds.train_y.cuda()
    model = DKLGP(X, y.unsqueeze(-1), rho=1.5)
    gpkit.fit(model, epochs=3, seed=0, progress=False)
    acqf = qLogExpectedImprovement(model, best_f=y.max())
    bounds = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64, device="cuda")
    cand, val = optimize_acqf(acqf, bounds, q=3, num_restarts=2, raw_samples=32, options={"maxiter": 5})
    assert cand.shape == (3, 2) and cand.device.type == "cuda" and torch.isfinite(val)
    m32 = DKLGP(X.float(), y.float().unsqueeze(-1), rho=1.5)
    gpkit.fit(m32, epochs=2, seed=0, progress=False)
    assert m32.posterior(X[:4].float()).mean.dtype == torch.float32
