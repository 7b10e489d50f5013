"""Base class for stationary product kernels with closed-form derivative covariances."""

from __future__ import annotations

import torch
from gpytorch.kernels import Kernel
from torch import Tensor


class StationaryDerivativeKernel(Kernel):
    r"""
    A stationary kernel that is a product over input dimensions of a one-dimensional profile
    :math:`k(d)`, :math:`d = x_i - x'_i`, whose derivatives :math:`k'(d)` and :math:`k''(d)` are
    available in closed form.

    Subclasses implement :meth:`profile`. The value kernel behaves like any GPyTorch kernel; for
    one-dimensional inputs :meth:`derivative_covariance` returns the cross-covariances of the process
    and its derivatives,

    .. math::
        \operatorname{cov}\big(\partial^{a} f(x), \partial^{b} f(x')\big) = (-1)^{b}\, k^{(a + b)}(x - x'),

    for :math:`a + b \le 2` (``k``, ``dk/dx``, ``d²k/dx²``, ``d²k/dx dx'``). Derivatives are never taken by
    autodiff through :math:`|d|`, so the diagonal of ``d²k/dx²`` is exact.

    :param ard_num_dims: Number of input dimensions with their own parameters (``None``: shared).
    """

    max_derivative_order: int = 2

    @property
    def _num_param_dims(self) -> int:
        return 1 if self.ard_num_dims is None else self.ard_num_dims

    def profile(self, d: Tensor, order: int = 0) -> Tensor:
        r"""
        Evaluate the ``order``-th derivative of the one-dimensional profile.

        :param d: Signed differences, shape ``(*batch, S, A)`` with ``A`` 1 or ``ard_num_dims``.
        :param order: 0, 1 or 2.
        :return: :math:`k^{(order)}(d)` per dimension, shape ``(*batch, S, A)``.
        """
        raise NotImplementedError

    def _check_order(self, order: int) -> None:
        if order not in range(self.max_derivative_order + 1):
            raise ValueError(f"order must be in 0..{self.max_derivative_order}, got {order}.")

    def forward(self, x1: Tensor, x2: Tensor, diag: bool = False, last_dim_is_batch: bool = False, **params):
        if last_dim_is_batch:
            raise NotImplementedError("last_dim_is_batch is not supported.")
        if diag:
            d = x1 - x2  # shape: (*batch, n, D)
            return self.profile(d, 0).prod(dim=-1)
        n, m, dim = x1.shape[-2], x2.shape[-2], x1.shape[-1]
        d = x1.unsqueeze(-2) - x2.unsqueeze(-3)  # shape: (*batch, n, m, D)
        d = d.reshape(*d.shape[:-3], n * m, dim)
        k = self.profile(d, 0).prod(dim=-1)  # shape: (*batch, n * m)
        return k.reshape(*k.shape[:-1], n, m)

    def derivative_covariance(self, x1: Tensor, x2: Tensor, order1: int = 0, order2: int = 0) -> Tensor:
        r"""
        Cross-covariance :math:`\operatorname{cov}(\partial^{order1} f(x_1), \partial^{order2} f(x_2))`
        for one-dimensional inputs.

        :param x1: Inputs, shape ``(*batch, n, 1)`` or ``(n,)``.
        :param x2: Inputs, shape ``(*batch, m, 1)`` or ``(m,)``.
        :param order1: Derivative order with respect to ``x1``.
        :param order2: Derivative order with respect to ``x2``.
        :return: Dense covariance, shape ``(*batch, n, m)``.
        """
        x1, x2 = (x.unsqueeze(-1) if x.dim() == 1 else x for x in (x1, x2))
        if x1.shape[-1] != 1 or x2.shape[-1] != 1:
            raise ValueError(
                f"derivative_covariance needs one-dimensional inputs, got {x1.shape} and {x2.shape}."
            )
        self._check_order(order1 + order2)
        n, m = x1.shape[-2], x2.shape[-2]
        d = (x1 - x2.transpose(-1, -2)).reshape(*x1.shape[:-2], n * m, 1)
        k = self.profile(d, order1 + order2).squeeze(-1)
        return ((-1) ** order2 * k).reshape(*k.shape[:-1], n, m)

    def grid_covariance(self, num_points: int, spacing: float, order: int = 0) -> Tensor:
        r"""
        :math:`[k^{(order)}(x_a - x_b)]_{ab}` on a uniform grid :math:`x_a = a \cdot` ``spacing``.

        The profile is evaluated on the :math:`2N - 1` lags only (Toeplitz structure), so the cost is
        :math:`O(NQ + N^2)` instead of :math:`O(N^2 Q)`.

        :param num_points: Number of grid points ``N``.
        :param spacing: Grid spacing.
        :param order: Derivative order of the first argument (0, 1 or 2).
        :return: Dense matrix, shape ``(*batch, N, N)``.
        """
        self._check_order(order)
        if self._num_param_dims != 1:
            raise ValueError("grid_covariance is for one-dimensional kernels (ard_num_dims None or 1).")
        ref = next(iter(self.parameters()), None)
        kw = {"dtype": ref.dtype, "device": ref.device} if ref is not None else {}
        lags = spacing * torch.arange(-(num_points - 1), num_points, **kw)  # shape: (2N - 1,)
        values = self.profile(lags.unsqueeze(-1), order)[..., 0]  # shape: (*batch, 2N - 1)
        idx = torch.arange(num_points, device=lags.device)
        toeplitz_index = idx.unsqueeze(-1) - idx + (num_points - 1)  # shape: (N, N)
        return values[..., toeplitz_index]
