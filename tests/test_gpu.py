"""Checks that need a CUDA device (``pytest -m gpu``); the default run excludes them."""

import gpytorch
import pytest
import torch

import gpkit

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_fit_trains_a_variational_gp_on_cuda():
    device = torch.device("cuda")
    X = torch.rand(500, 2, device=device)
    y = torch.sin(6 * X[:, 0]) + 0.05 * torch.randn(500, device=device)

    class SVGP(gpytorch.models.ApproximateGP):
        def __init__(self, Z):
            q = gpytorch.variational.CholeskyVariationalDistribution(Z.shape[0])
            super().__init__(gpytorch.variational.VariationalStrategy(self, Z, q, learn_inducing_locations=True))
            self.mean_module = gpytorch.means.ConstantMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel())

        def forward(self, x):
            return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    likelihood = gpytorch.likelihoods.GaussianLikelihood().to(device)
    model = SVGP(X[:32].clone()).to(device)
    gpkit.fit(model, train_X=X, train_Y=y, likelihood=likelihood, epochs=30, batch_size=100, lr=0.05)
    with torch.no_grad():
        rmse = (model(X).mean - torch.sin(6 * X[:, 0])).pow(2).mean().sqrt()
    assert rmse < 0.1
