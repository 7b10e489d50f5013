"""Spectral mixture kernels with log-domain weights and closed-form derivatives (GP-HM)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .stationary_derivative_kernel import StationaryDerivativeKernel


class _MixtureDerivativeKernel(StationaryDerivativeKernel):
    r"""
    Shared parameterisation: ``Q`` components with log weights :math:`\log w_q`, log inverse
    lengthscales :math:`l_q` (:math:`s_q = e^{l_q}`) and frequencies :math:`\mu_q` in cycles per unit.

    Weights live in the log domain with no prior on them: a flat prior on :math:`\log w` is the
    Jeffreys prior on :math:`w`, which drives superfluous components to zero weight.

    :param num_mixtures: Number of components ``Q``.
    :param max_frequency: Frequencies are initialised at ``linspace(0, max_frequency, Q)``.
    :param ard_num_dims: Number of input dimensions with their own parameters (``None``: shared).
    :param batch_shape: Batch shape of the parameters.
    """

    def __init__(
        self,
        num_mixtures: int = 30,
        max_frequency: float = 1.0,
        ard_num_dims: int | None = None,
        batch_shape: torch.Size | None = None,
        **kwargs,
    ):
        if not isinstance(num_mixtures, int) or num_mixtures < 1:
            raise ValueError(f"num_mixtures must be a positive int, got {num_mixtures!r}.")
        if not (
            isinstance(max_frequency, (int, float)) and max_frequency > 0 and math.isfinite(max_frequency)
        ):
            raise ValueError(f"max_frequency must be a positive finite number, got {max_frequency!r}.")
        super().__init__(
            ard_num_dims=ard_num_dims,
            batch_shape=torch.Size([]) if batch_shape is None else batch_shape,
            **kwargs,
        )
        self.num_mixtures = num_mixtures
        shape = (*self.batch_shape, self._num_param_dims, num_mixtures)
        dtype = torch.get_default_dtype()
        self.register_parameter("log_weights", torch.nn.Parameter(torch.full(shape, -math.log(num_mixtures))))
        self.register_parameter("log_scales", torch.nn.Parameter(torch.zeros(shape)))
        freqs = torch.linspace(0.0, float(max_frequency), num_mixtures, dtype=dtype).expand(shape).clone()
        self.register_parameter("frequencies", torch.nn.Parameter(freqs))

    @property
    def weights(self) -> Tensor:
        """Mixture weights :math:`w_q`, shape ``(*batch, A, Q)``."""
        return self.log_weights.exp()

    def _component_terms(self, d: Tensor, s: Tensor, order: int) -> tuple[Tensor, Tensor, Tensor]:
        """The envelope m and its first two derivatives at d (only those needed for ``order``)."""
        raise NotImplementedError

    def profile(self, d: Tensor, order: int = 0) -> Tensor:
        self._check_order(order)
        d = d.unsqueeze(-1)  # shape: (*batch, S, A, 1)
        s = self.log_scales.exp().unsqueeze(-3)  # shape: (*batch, 1, A, Q)
        omega = 2 * math.pi * self.frequencies.unsqueeze(-3)
        w = self.log_weights.exp().unsqueeze(-3)
        m0, m1, m2 = self._component_terms(d, s, order)
        cos = torch.cos(omega * d)
        if order == 0:
            g = m0 * cos
        elif order == 1:
            g = m1 * cos - m0 * omega * torch.sin(omega * d)
        else:
            g = (m2 - m0 * omega**2) * cos - 2 * m1 * omega * torch.sin(omega * d)
        return (w * g).sum(-1)


class SpectralMixtureDerivativeKernel(_MixtureDerivativeKernel):
    r"""
    Gaussian spectral mixture kernel (GP-HM-GM) per input dimension,

    .. math::
        k(d) = \sum_{q=1}^Q w_q \exp(-s_q d^2) \cos(2\pi \mu_q d),

    with closed-form :meth:`derivative_covariance`. Multi-dimensional inputs give the product over
    dimensions.

    Example:
        >>> kernel = SpectralMixtureDerivativeKernel(num_mixtures=30, max_frequency=20.0)
        >>> x = torch.linspace(0, 1, 50).unsqueeze(-1)
        >>> d2k = kernel.derivative_covariance(x, x, order1=2)  # cov(f''(x), f(x'))
    """

    def _component_terms(self, d, s, order):
        a = torch.exp(-s * d**2)
        m1 = -2 * s * d * a if order >= 1 else None
        m2 = (4 * s**2 * d**2 - 2 * s) * a if order >= 2 else None
        return a, m1, m2


class StudentTMixtureDerivativeKernel(_MixtureDerivativeKernel):
    r"""
    Student-t spectral mixture kernel (GP-HM-StM): Matérn-5/2 envelopes times cosines per dimension,

    .. math::
        k(d) = \sum_{q=1}^Q w_q \left(1 + \sqrt5 s_q|d| + \tfrac53 s_q^2 d^2\right)
        e^{-\sqrt5 s_q |d|} \cos(2\pi\mu_q d).

    The envelope is twice differentiable at :math:`d = 0`; its derivatives are written in terms of
    :math:`|d|` so the diagonal of the second-derivative kernel is exact.
    """

    def _component_terms(self, d, s, order):
        t = math.sqrt(5.0) * s * d.abs()
        e = torch.exp(-t)
        m0 = (1 + t + t**2 / 3) * e
        m1 = -(5.0 / 3.0) * s**2 * d * (1 + t) * e if order >= 1 else None
        m2 = -(5.0 / 3.0) * s**2 * (1 + t - t**2) * e if order >= 2 else None
        return m0, m1, m2
