"""The VNNGP regression baseline takes the batched inputs BoTorch's acquisition optimisation passes."""

import gpytorch
import pytest
import torch
from botorch.acquisition.logei import qLogExpectedImprovement
from botorch.models.approximate_gp import ApproximateGPyTorchModel
from botorch.optim import optimize_acqf

import gpkit
from gpkit.baselines import VNNGPBaseline


def _vnngp(n=25, d=2):
    torch.manual_seed(0)
    X = torch.rand(n, d, dtype=torch.float64)
    y = torch.sin(6 * X).sum(-1)
    likelihood = gpytorch.likelihoods.GaussianLikelihood().double()
    covar = gpytorch.kernels.ScaleKernel(gpytorch.kernels.MaternKernel(2.5, ard_num_dims=d)).double()
    model = VNNGPBaseline(X, y, covar, likelihood, k=6, batch_size=n)
    gpkit.fit(model, max_iter=30, progress=False)
    return ApproximateGPyTorchModel(model, likelihood, num_outputs=1).eval(), X, y


def test_batched_posterior_matches_each_point():
    model, _, _ = _vnngp()
    X = torch.rand(4, 3, 2, dtype=torch.float64)  # shape: (b, q, d)
    post = model.posterior(X)
    assert post.mean.shape == (4, 3, 1)
    for i in range(4):
        for j in range(3):
            single = model.posterior(X[i, j : j + 1])
            torch.testing.assert_close(post.mean[i, j], single.mean[0])
            torch.testing.assert_close(post.variance[i, j], single.variance[0])
    # the joint covariance of a q-batch is diagonal, as GPyTorch's NNVariationalStrategy predicts
    cov = post.distribution.covariance_matrix  # shape: (b, q, q)
    torch.testing.assert_close(cov, torch.diag_embed(post.variance.squeeze(-1)))


@pytest.mark.parametrize("q", [1, 2])
def test_optimize_acqf_runs(q):
    model, X, y = _vnngp()
    acqf = qLogExpectedImprovement(model, best_f=y.max())
    bounds = torch.stack([torch.zeros(2), torch.ones(2)]).double()
    cand, value = optimize_acqf(acqf, bounds=bounds, q=q, num_restarts=2, raw_samples=16, options={"maxiter": 10})
    assert cand.shape == (q, 2) and torch.isfinite(value).all()
