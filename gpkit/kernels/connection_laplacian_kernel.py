r"""RVGP's kernel: a low-rank GP prior for tangent vector fields from connection-Laplacian eigenpairs."""

from __future__ import annotations

import math

import torch
from gpytorch.constraints import Interval, Positive
from gpytorch.kernels import Kernel
from linear_operator.operators import LowRankRootLinearOperator, MatmulLinearOperator
from torch import Tensor

__all__ = ["ConnectionLaplacianKernel", "spectral_density"]

SPECTRA = ("matern", "se")


def spectral_density(eigenvalues: Tensor, kappa: Tensor, nu: Tensor | None, spectrum: str = "matern") -> Tensor:
    r"""Unnormalised log spectral density ``log S(lambda)``.

    Matérn: :math:`S(\lambda) = (2\nu/\kappa^2 + \lambda)^{-\nu}`; SE (heat kernel):
    :math:`S(\lambda) = \exp(-\kappa^2 \lambda / 2)`.

    :param eigenvalues: ``k`` Laplacian eigenvalues (``>= 0``).
    :param kappa: ``(*batch, 1, 1)`` length scales.
    :param nu: ``(*batch, 1)`` smoothness (Matérn only).
    :return: ``(*batch, k)``.
    """
    kappa = kappa.squeeze(-1)  # shape: (*batch, 1)
    if spectrum == "matern":
        return -nu * torch.log(2 * nu / kappa**2 + eigenvalues)
    return -0.5 * kappa**2 * eigenvalues


class ConnectionLaplacianKernel(Kernel):
    r"""Covariance of a tangent vector field between graph nodes (Peach et al., ICLR 2024):

    .. math::
        K_{ij} = P_i \, \mathrm{diag}(s) \, P_j^\top, \qquad
        s = \sigma_f \, S(\lambda) / \textstyle\sum_l S(\lambda_l),

    a ``D x D`` block per pair of nodes, with ``P_i`` (``D x k``) the positional encodings
    (:func:`gpkit.manifolds.positional_encodings`) and ``S`` a Matérn or SE spectral density of the
    connection Laplacian's eigenvalues. Since ``P_i`` spans the tangent plane at node ``i``, every sample
    and every posterior mean is tangent. The normalisation makes ``outputscale`` the mean prior variance
    per tangent coordinate.

    Inputs are node indices as a float tensor ``(..., n, 1)``; the output is ``(n D) x (m D)`` in
    node-major order (row ``i * D + c`` = coordinate ``c`` at node ``i``), returned as a
    ``LowRankRootLinearOperator`` (rank ``k``) for ``x1 is x2`` so that adding noise gives Woodbury solves
    and log determinants, else a ``MatmulLinearOperator``.

    :param encodings: ``N x D x k`` positional encodings (fixed, moved by ``.to()``).
    :param eigenvalues: ``k`` eigenvalues.
    :param spectrum: ``"matern"`` or ``"se"``.
    :param kappa: initial length scale (on the scale of ``1 / sqrt(lambda)``); default
        ``sqrt(2 nu / lambda_{k/4})`` (Matérn) or ``sqrt(2 / lambda_{k/4})`` (SE).
    :param nu: initial Matérn smoothness (trainable, in ``(0.1, 10)``).
    :param outputscale: initial ``sigma_f``.
    """

    has_lengthscale = True

    def __init__(
        self,
        encodings: Tensor,
        eigenvalues: Tensor,
        spectrum: str = "matern",
        kappa: float | None = None,
        nu: float = 1.5,
        outputscale: float = 1.0,
        **kwargs,
    ) -> None:
        if spectrum not in SPECTRA:
            raise ValueError(f"spectrum must be one of {SPECTRA}, got {spectrum!r}")
        if encodings.dim() != 3 or eigenvalues.shape != (encodings.shape[-1],):
            raise ValueError(
                f"encodings must be N x D x k and eigenvalues k, got {tuple(encodings.shape)} and "
                f"{tuple(eigenvalues.shape)}"
            )
        if not 0.1 < float(nu) < 10.0:
            raise ValueError(f"nu must be in (0.1, 10) (the range the smoothness is trained in), got {nu!r}")
        super().__init__(**kwargs)
        self.spectrum = spectrum
        # Not buffers: GPyTorch expands and indexes buffers as batch-shaped; these are shared. _apply moves them.
        self.encodings = encodings
        self.eigenvalues = eigenvalues.clamp_min(0)
        self.register_parameter("raw_nu", torch.nn.Parameter(torch.zeros(*self.batch_shape, 1)))
        self.register_constraint("raw_nu", Interval(0.1, 10.0))
        self.register_parameter("raw_outputscale", torch.nn.Parameter(torch.zeros(self.batch_shape)))
        self.register_constraint("raw_outputscale", Positive())
        k = eigenvalues.numel()
        lam_ref = float(eigenvalues[k // 4].clamp_min(1e-8)) if k > 1 else 1.0
        self.nu = nu
        self.outputscale = outputscale
        self.lengthscale = kappa if kappa is not None else math.sqrt((2 * nu if spectrum == "matern" else 2.0) / lam_ref)
        if spectrum == "se":
            self.raw_nu.requires_grad_(False)
        self.to(encodings)

    def _apply(self, fn, *args, **kwargs):
        self.encodings, self.eigenvalues = fn(self.encodings), fn(self.eigenvalues)
        return super()._apply(fn, *args, **kwargs)

    @property
    def nu(self) -> Tensor:
        return self.raw_nu_constraint.transform(self.raw_nu)

    @nu.setter
    def nu(self, value) -> None:
        value = torch.as_tensor(value).to(self.raw_nu)
        self.initialize(raw_nu=self.raw_nu_constraint.inverse_transform(value.expand_as(self.raw_nu)))

    @property
    def outputscale(self) -> Tensor:
        return self.raw_outputscale_constraint.transform(self.raw_outputscale)

    @outputscale.setter
    def outputscale(self, value) -> None:
        value = torch.as_tensor(value).to(self.raw_outputscale)
        self.initialize(raw_outputscale=self.raw_outputscale_constraint.inverse_transform(value.expand_as(self.raw_outputscale)))

    @property
    def num_nodes(self) -> int:
        return self.encodings.shape[0]

    def num_outputs_per_input(self, x1: Tensor, x2: Tensor) -> int:
        return self.encodings.shape[1]

    def spectral_weights(self) -> Tensor:
        """``s = outputscale * S(lambda) / sum S``, shape ``(*batch, k)``."""
        log_s = spectral_density(self.eigenvalues, self.lengthscale, self.nu, self.spectrum)
        return self.outputscale.unsqueeze(-1) * torch.softmax(log_s, dim=-1)

    def features(self, index: Tensor) -> Tensor:
        """Unweighted features ``P[index]`` flattened node-major: ``(..., n) -> (..., n D, k)``."""
        if index.is_floating_point():
            if not torch.equal(index, index.round()):
                raise ValueError("ConnectionLaplacianKernel inputs must be integer node indices")
            index = index.long()
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.num_nodes):
            raise IndexError(f"node index out of range [0, {self.num_nodes})")
        P = self.encodings[index]  # shape: (..., n, D, k)
        return P.reshape(*index.shape[:-1], index.shape[-1] * P.shape[-2], P.shape[-1])

    def root(self, index: Tensor) -> Tensor:
        """``P[index] diag(sqrt(s))``: ``(..., n) -> (..., n D, k)``, broadcast with the kernel's batch shape."""
        return self.features(index) * self.spectral_weights().sqrt().unsqueeze(-2)

    def forward(self, x1: Tensor, x2: Tensor, diag: bool = False, last_dim_is_batch: bool = False, **params):
        if last_dim_is_batch:
            raise NotImplementedError("ConnectionLaplacianKernel does not support last_dim_is_batch")
        if x1.shape[-1] != 1 or x2.shape[-1] != 1:
            raise ValueError(f"inputs must be node indices of shape (..., n, 1), got {tuple(x1.shape)}")
        R1 = self.root(x1[..., 0])
        if diag:
            return R1.square().sum(-1)
        if x1.shape == x2.shape and torch.equal(x1, x2):
            return LowRankRootLinearOperator(R1)
        R2 = self.root(x2[..., 0])
        return MatmulLinearOperator(R1, R2.transpose(-1, -2))
