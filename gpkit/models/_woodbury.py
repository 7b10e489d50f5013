"""The exact negative log marginal likelihood of a rank-k weight-space GP with hand-written gradients."""

from __future__ import annotations

import math

import torch
from torch import Tensor


class WoodburyNLL(torch.autograd.Function):
    r"""``-log N(y | 0, Phi diag(r^2) Phi^T + noise I) / m`` from the Gram ``G = Phi^T Phi``, ``b = Phi^T y``
    and ``yy = y^T y`` only.

    With ``C = I + R G R / noise`` (``R = diag(r)``), ``M = C^{-1}``, ``c = R b``, ``u = M c``, ``q = c^T u``:
    ``2 m f = yy / noise - q / noise^2 + m log noise + log det C + m log 2 pi``. The backward pass uses
    the closed forms ``d log det C / d r = 2 diag(G R M) / noise``, ``d log det C / d noise = -(k - tr M) / noise``,
    ``dq / dr = 2 u * (b - G R u / noise)``, ``dq / d noise = (q - u^T u) / noise``: ``O(k^2)`` after the
    ``O(k^3)`` Cholesky and inverse of the forward pass (autograd through the Cholesky costs several times more).
    """

    @staticmethod
    def forward(ctx, r: Tensor, noise: Tensor, G: Tensor, b: Tensor, yy: float, m: int) -> Tensor:
        k = r.numel()
        C = torch.eye(k, dtype=r.dtype, device=r.device) + r[:, None] * G * r / noise
        L = torch.linalg.cholesky(C)
        M = torch.cholesky_inverse(L)
        c = r * b
        u = M @ c
        q = c @ u
        logdet = 2 * torch.log(L.diagonal()).sum()
        f = 0.5 * (yy / noise - q / noise**2 + m * torch.log(noise) + logdet + m * math.log(2 * math.pi)) / m
        ctx.save_for_backward(r, noise, G, b, M, u, q)
        ctx.yy, ctx.m = yy, m
        return f

    @staticmethod
    def backward(ctx, grad: Tensor):
        r, noise, G, b, M, u, q = ctx.saved_tensors
        yy, m = ctx.yy, ctx.m
        GR = G * r  # G R
        dlogdet_r = 2 * (GR * M).sum(-1) / noise  # diag(G R M) = row sums of (G R) o M (M symmetric)
        dlogdet_noise = -(r.numel() - M.diagonal().sum()) / noise
        dq_r = 2 * u * (b - (GR @ u) / noise)
        dq_noise = (q - u @ u) / noise
        df_r = 0.5 * (-dq_r / noise**2 + dlogdet_r) / m
        df_noise = 0.5 * (-yy / noise**2 - dq_noise / noise**2 + 2 * q / noise**3 + m / noise + dlogdet_noise) / m
        return grad * df_r, grad * df_noise, None, None, None, None
