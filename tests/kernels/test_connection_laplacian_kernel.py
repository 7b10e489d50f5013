"""ConnectionLaplacianKernel: GPyTorch's kernel test suite on node indices, and low rank == dense."""

from __future__ import annotations

import unittest

import pytest
import torch
from gpytorch.test.base_kernel_test_case import BaseKernelTestCase
from linear_operator.operators import LowRankRootLinearOperator

from gpkit.kernels import ConnectionLaplacianKernel
from gpkit.manifolds import ManifoldGeometry, fibonacci_sphere

N, D, K = 60, 3, 8


def _kernel(**kwargs):
    g = torch.Generator().manual_seed(0)
    P = torch.randn(N, D, K, generator=g, dtype=torch.get_default_dtype())
    lam = torch.linspace(0, 3, K, dtype=torch.get_default_dtype())
    kernel = ConnectionLaplacianKernel(P, lam, **kwargs)
    with torch.no_grad():  # distinct parameters per batch member
        kernel.raw_lengthscale.add_(torch.rand(kernel.raw_lengthscale.shape, generator=g))
    return kernel


class TestConnectionLaplacianKernel(BaseKernelTestCase, unittest.TestCase):
    """Inputs are node indices ``(..., n, 1)``; outputs ``n D x n D`` (``num_outputs_per_input = D``)."""

    def create_kernel_no_ard(self, **kwargs):
        return _kernel(**kwargs)

    def _index(self, *shape):
        return torch.randint(0, N, (*shape, 1), generator=torch.Generator().manual_seed(1)).to(torch.get_default_dtype())

    def create_data_no_batch(self):
        return self._index(50)

    def create_data_single_batch(self):
        return self._index(2, 3)

    def create_data_double_batch(self):
        return self._index(3, 2, 50)

    # The suite's active-dims tests select several input columns; this kernel takes one (the node index).
    def test_active_dims_list(self):
        x = torch.cat([self._index(20), torch.rand(20, 2)], -1)
        kernel = self.create_kernel_no_ard(active_dims=[0])
        self.assertAllClose(kernel(x).to_dense(), self.create_kernel_no_ard()(x[:, :1]).to_dense())

    def test_active_dims_range(self):
        x = torch.cat([torch.rand(20, 2), self._index(20)], -1)
        kernel = self.create_kernel_no_ard(active_dims=range(2, 3))
        self.assertAllClose(kernel(x).to_dense(), self.create_kernel_no_ard()(x[:, 2:]).to_dense())


@pytest.mark.parametrize("spectrum", ["matern", "se"])
def test_low_rank_equals_dense_kernel(spectrum):
    g = ManifoldGeometry.from_points(fibonacci_sphere(200), 8, num_eigenpairs=30)
    kernel = ConnectionLaplacianKernel(g.encodings(), g.eigenvalues, spectrum, nu=2.0, outputscale=1.3)
    lam, P = g.eigenvalues, g.encodings()
    kappa, nu = kernel.lengthscale.squeeze(), 2.0
    S = (2 * nu / kappa**2 + lam) ** -nu if spectrum == "matern" else torch.exp(-0.5 * kappa**2 * lam)
    s = 1.3 * S / S.sum()
    i, j = torch.tensor([3, 17, 150, 42]), torch.tensor([5, 17, 199])
    dense = torch.einsum("adk,k,bek->adbe", P[i], s, P[j]).reshape(12, 9)  # K_ab = P_a diag(s) P_b^T
    cross = kernel(i.double().unsqueeze(-1), j.double().unsqueeze(-1))
    assert torch.allclose(cross.to_dense(), dense, atol=1e-12)
    square = kernel(i.double().unsqueeze(-1))
    assert isinstance(square.evaluate_kernel(), LowRankRootLinearOperator)
    dense_ii = torch.einsum("adk,k,bek->adbe", P[i], s, P[i]).reshape(12, 12)
    assert torch.allclose(square.to_dense(), dense_ii, atol=1e-12)
    assert torch.allclose(kernel(i.double().unsqueeze(-1), diag=True), dense_ii.diagonal(), atol=1e-12)
    # mean prior variance per tangent coordinate is the outputscale
    all_nodes = torch.arange(200.0).unsqueeze(-1)
    assert torch.allclose(kernel(all_nodes, diag=True).sum() / (200 * 2), torch.tensor(1.3))


def test_float32_and_bad_inputs():
    kernel = _kernel().float()
    x = torch.arange(5.0).unsqueeze(-1)
    assert kernel(x).to_dense().dtype == torch.float32
    with pytest.raises(IndexError, match="out of range"):
        kernel(torch.tensor([[0.0], [60.0]])).to_dense()
    with pytest.raises(ValueError, match="integer node indices"):
        kernel(torch.tensor([[0.5]])).to_dense()
    with pytest.raises(ValueError, match="spectrum"):
        ConnectionLaplacianKernel(torch.zeros(4, 3, 2), torch.zeros(2), "rbf")
    with pytest.raises(ValueError, match="eigenvalues"):
        ConnectionLaplacianKernel(torch.zeros(4, 3, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="nu must be in"):
        ConnectionLaplacianKernel(torch.zeros(4, 3, 2), torch.zeros(2), nu=-1.0)
