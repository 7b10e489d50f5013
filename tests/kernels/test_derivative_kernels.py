"""Derivative kernels: GPyTorch's kernel test suite, finite differences (incl. the diagonal), Toeplitz grid path."""

import math
import unittest

import pytest
import torch
from gpytorch.kernels import MaternKernel, RBFKernel
from gpytorch.test.base_kernel_test_case import BaseKernelTestCase

from gpkit.kernels import (
    Matern52DerivativeKernel,
    RBFDerivativeKernel,
    SpectralMixtureDerivativeKernel,
    StudentTMixtureDerivativeKernel,
)


def _randomize(kernel):
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in kernel.named_parameters():
            p.add_(0.3 * torch.randn_like(p))
    return kernel


class TestSpectralMixtureDerivativeKernel(BaseKernelTestCase, unittest.TestCase):
    def create_kernel_no_ard(self, **kwargs):
        return SpectralMixtureDerivativeKernel(num_mixtures=4, max_frequency=2.0, **kwargs)

    def create_kernel_ard(self, num_dims, **kwargs):
        return SpectralMixtureDerivativeKernel(
            num_mixtures=4, max_frequency=2.0, ard_num_dims=num_dims, **kwargs
        )


class TestStudentTMixtureDerivativeKernel(BaseKernelTestCase, unittest.TestCase):
    def create_kernel_no_ard(self, **kwargs):
        return StudentTMixtureDerivativeKernel(num_mixtures=4, max_frequency=2.0, **kwargs)

    def create_kernel_ard(self, num_dims, **kwargs):
        return StudentTMixtureDerivativeKernel(
            num_mixtures=4, max_frequency=2.0, ard_num_dims=num_dims, **kwargs
        )


class TestRBFDerivativeKernel(BaseKernelTestCase, unittest.TestCase):
    def create_kernel_no_ard(self, **kwargs):
        return RBFDerivativeKernel(**kwargs)

    def create_kernel_ard(self, num_dims, **kwargs):
        return RBFDerivativeKernel(ard_num_dims=num_dims, **kwargs)


class TestMatern52DerivativeKernel(BaseKernelTestCase, unittest.TestCase):
    def create_kernel_no_ard(self, **kwargs):
        return Matern52DerivativeKernel(**kwargs)

    def create_kernel_ard(self, num_dims, **kwargs):
        return Matern52DerivativeKernel(ard_num_dims=num_dims, **kwargs)


KERNELS = {
    "gm": lambda: _randomize(SpectralMixtureDerivativeKernel(num_mixtures=5, max_frequency=3.0)),
    "student-t": lambda: _randomize(StudentTMixtureDerivativeKernel(num_mixtures=5, max_frequency=3.0)),
    "se": lambda: RBFDerivativeKernel(),
    "matern": lambda: Matern52DerivativeKernel(),
}


@pytest.mark.parametrize("name", list(KERNELS))
def test_derivatives_match_finite_differences_including_diagonal(name):
    kernel = KERNELS[name]()
    x1 = torch.linspace(-1.0, 1.0, 9).unsqueeze(-1)
    x2 = torch.cat([x1, torch.tensor([[0.37], [-0.81]])])  # x1 ⊂ x2: the diagonal d = 0 is included
    eps = 1e-4

    def k(a, b):
        return kernel.derivative_covariance(a, b).detach()

    with torch.no_grad():
        fd1 = (k(x1 + eps, x2) - k(x1 - eps, x2)) / (2 * eps)
        fd2 = (k(x1 + eps, x2) - 2 * k(x1, x2) + k(x1 - eps, x2)) / eps**2
        fd_prime = (k(x1, x2 + eps) - k(x1, x2 - eps)) / (2 * eps)
        fd_mixed = (
            k(x1 + eps, x2 + eps) - k(x1 + eps, x2 - eps) - k(x1 - eps, x2 + eps) + k(x1 - eps, x2 - eps)
        ) / (4 * eps**2)
        d10 = kernel.derivative_covariance(x1, x2, 1, 0)
        d20 = kernel.derivative_covariance(x1, x2, 2, 0)
        d01 = kernel.derivative_covariance(x1, x2, 0, 1)
        d11 = kernel.derivative_covariance(x1, x2, 1, 1)
    scale = d20.abs().max()
    torch.testing.assert_close(d10, fd1, atol=1e-6 * scale, rtol=1e-5)
    torch.testing.assert_close(d01, fd_prime, atol=1e-6 * scale, rtol=1e-5)
    torch.testing.assert_close(d20, fd2, atol=2e-5 * scale, rtol=1e-4)
    torch.testing.assert_close(d11, fd_mixed, atol=2e-5 * scale, rtol=1e-4)
    # diagonal of cov(f'', f) is exact at d = 0 (autodiff through |d| would get it wrong for Matérn)
    assert d20.diagonal().abs().min() > 0


def test_value_kernels_match_gpytorch():
    x = torch.randn(20, 1)
    se, matern = RBFDerivativeKernel(), Matern52DerivativeKernel()
    se.lengthscale, matern.lengthscale = 0.7, 0.4
    ref_se, ref_m = RBFKernel(), MaternKernel(nu=2.5)
    ref_se.lengthscale, ref_m.lengthscale = 0.7, 0.4
    torch.testing.assert_close(se(x).to_dense(), ref_se(x).to_dense())
    torch.testing.assert_close(matern(x).to_dense(), ref_m(x).to_dense())


def test_mixture_formulas():
    kernel = SpectralMixtureDerivativeKernel(num_mixtures=1, max_frequency=1.0)
    with torch.no_grad():
        kernel.log_weights.fill_(math.log(2.0))
        kernel.log_scales.fill_(math.log(3.0))
        kernel.frequencies.fill_(0.5)
    d = torch.tensor([[0.3]])
    expected = 2.0 * math.exp(-3.0 * 0.09) * math.cos(2 * math.pi * 0.5 * 0.3)
    assert kernel(d, torch.zeros(1, 1)).to_dense().item() == pytest.approx(expected, rel=1e-12)
    st = StudentTMixtureDerivativeKernel(num_mixtures=1, max_frequency=1.0)
    with torch.no_grad():
        st.log_weights.zero_()
        st.log_scales.fill_(math.log(3.0))
        st.frequencies.zero_()
    t = math.sqrt(5) * 3.0 * 0.3
    assert st(d, torch.zeros(1, 1)).to_dense().item() == pytest.approx(
        (1 + t + t * t / 3) * math.exp(-t), rel=1e-12
    )


@pytest.mark.parametrize("name", list(KERNELS))
@pytest.mark.parametrize("order", [0, 1, 2])
def test_grid_covariance_matches_dense(name, order):
    kernel = KERNELS[name]()
    x = 0.05 * torch.arange(17.0).unsqueeze(-1)
    dense = kernel.derivative_covariance(x, x, order, 0)
    torch.testing.assert_close(kernel.grid_covariance(17, 0.05, order), dense)


def test_bad_inputs():
    kernel = StudentTMixtureDerivativeKernel(num_mixtures=3)
    with pytest.raises(ValueError, match="order"):
        kernel.derivative_covariance(torch.zeros(3, 1), torch.zeros(3, 1), 2, 1)
    with pytest.raises(ValueError, match="one-dimensional"):
        kernel.derivative_covariance(torch.zeros(3, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="num_mixtures"):
        SpectralMixtureDerivativeKernel(num_mixtures=0)
    with pytest.raises(ValueError, match="max_frequency"):
        SpectralMixtureDerivativeKernel(max_frequency=-1.0)
