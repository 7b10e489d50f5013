"""SE and Matérn-5/2 kernels with the derivative interface of :class:`StationaryDerivativeKernel`."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .stationary_derivative_kernel import StationaryDerivativeKernel


class RBFDerivativeKernel(StationaryDerivativeKernel):
    r"""
    Squared-exponential kernel :math:`k(d) = \exp(-d^2 / 2\ell^2)` per dimension (GPyTorch lengthscale),
    with closed-form :meth:`derivative_covariance`. The GP-SE baseline of GP-HM.
    """

    has_lengthscale = True

    def profile(self, d: Tensor, order: int = 0) -> Tensor:
        self._check_order(order)
        ell = self.lengthscale  # shape: (*batch, 1, A)
        z = d / ell
        k = torch.exp(-0.5 * z**2)
        if order == 0:
            return k
        if order == 1:
            return -z / ell * k
        return (z**2 - 1) / ell**2 * k


class Matern52DerivativeKernel(StationaryDerivativeKernel):
    r"""
    Matérn-5/2 kernel :math:`k(d) = (1 + t + t^2/3) e^{-t}`, :math:`t = \sqrt5 |d| / \ell`, per dimension,
    with closed-form :meth:`derivative_covariance` (twice differentiable, exact at :math:`d = 0`).
    The GP-Matérn baseline of GP-HM.
    """

    has_lengthscale = True

    def profile(self, d: Tensor, order: int = 0) -> Tensor:
        self._check_order(order)
        ell = self.lengthscale  # shape: (*batch, 1, A)
        t = math.sqrt(5.0) * d.abs() / ell
        e = torch.exp(-t)
        if order == 0:
            return (1 + t + t**2 / 3) * e
        c = -5.0 / (3.0 * ell**2)
        if order == 1:
            return c * d * (1 + t) * e
        return c * (1 + t - t**2) * e
