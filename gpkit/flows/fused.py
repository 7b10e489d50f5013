r"""A fused training kernel for the default ETGP flow: sinh-arcsinh followed by affine, then the log-softmax.

:math:`\log \mathrm{softmax}_y(\alpha_c \sinh(b_c \operatorname{asinh}(f) - a_c) + \beta_c)` for all ``Q``
quadrature nodes, ``B`` inputs and ``C`` classes, with a hand-written backward: autograd would keep about a
dozen ``B x Q x C`` intermediates and run twice as many passes over them (the cost that grows with C). Here the
forward makes two transcendental passes (one ``exp`` gives both ``sinh`` and ``cosh``, one ``exp`` the
softmax) and the backward none; the softmax is kept unnormalised from the forward, and every pass runs on a
contiguous ``B x Q x C`` layout.

On the CPU, a fresh ``B x Q x C`` buffer costs more than the arithmetic on it (the allocator hands such blocks
back to the operating system and every page faults again), so the kernel's three ``B x Q x C`` buffers come from
a small pool: a buffer returns to it only after the backward that used it, so no buffer in use is ever shared.
The pool holds the buffers of the last shape only (three ``B x Q x C`` tensors, e.g. 60 MB for B = 256, Q = 10,
C = 1000 in float64); :func:`clear_buffers` empties it.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["clear_buffers", "sal_log_softmax"]

_POOL: dict[tuple, list[Tensor]] = {}


def clear_buffers() -> None:
    """Release the CPU buffers :func:`sal_log_softmax` keeps for reuse."""
    _POOL.clear()


def _buffer(shape: torch.Size, like: Tensor) -> Tensor:
    if like.device.type != "cpu":  # CUDA's caching allocator already reuses blocks
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    key = (tuple(shape), like.dtype)
    free = _POOL.get(key)
    if free:
        return free.pop()
    return torch.empty(shape, dtype=like.dtype)


def _release(*buffers: Tensor) -> None:
    t = buffers[0]
    if t.device.type != "cpu":
        return
    key = (tuple(t.shape), t.dtype)
    if key not in _POOL:
        _POOL.clear()  # keep the last shape only
        _POOL[key] = []
    free = _POOL[key]
    free.extend(b for b in buffers if len(free) < 3)


class _SALLogSoftmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u: Tensor, a: Tensor, b: Tensor, alpha: Tensor, beta: Tensor, labels: Tensor) -> Tensor:
        # u: (B, Q) = asinh(f0); a, b, alpha, beta: (B, C); labels: (B,) long -> (B, Q)
        B, Q, C = u.size(0), u.size(1), a.size(-1)
        shape = torch.Size((B, Q, C))
        # with e = exp(b u - a): 2 sinh = e - 1/e and 2 cosh = e + 1/e, one exp for both
        sinh2 = torch.addcmul(a.neg().unsqueeze(1), u.unsqueeze(-1), b.unsqueeze(1), out=_buffer(shape, u)).exp_()
        cosh2 = torch.reciprocal(sinh2, out=_buffer(shape, u))
        sinh2.sub_(cosh2)
        torch.add(sinh2, cosh2, alpha=2.0, out=cosh2)  # (e - 1/e) + 2/e
        half_alpha = 0.5 * alpha
        probs = torch.addcmul(beta.unsqueeze(1), sinh2, half_alpha.unsqueeze(1), out=_buffer(shape, u))  # logits
        index = labels.view(B, 1, 1).expand(B, Q, 1)
        top = probs.amax(dim=-1, keepdim=True)  # (B, Q, 1)
        chosen = probs.gather(-1, index) - top
        total = probs.sub_(top).exp_().sum(-1, keepdim=True)  # unnormalised softmax, in place of the logits
        out = (chosen - total.log()).squeeze(-1)
        ctx.save_for_backward(u, b, half_alpha, sinh2, cosh2, probs, total, index)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        if getattr(ctx, "consumed", False):
            raise RuntimeError("sal_log_softmax's backward reuses its buffers in place; it cannot run twice")
        ctx.consumed = True
        u, b, half_alpha, sinh2, cosh2, probs, total, index = ctx.saved_tensors
        grad_out = grad_out.unsqueeze(-1)  # (B, Q, 1)
        g = probs.mul_(-grad_out / total)  # d/d logits = grad (onehot - softmax), in place
        g.scatter_add_(-1, index, grad_out)
        grad_beta = g.sum(1)
        grad_alpha = sinh2.mul_(g).sum(1).mul_(0.5)
        g_inner = cosh2.mul_(g.mul_(half_alpha.unsqueeze(1)))  # d/d (b u - a) = g alpha cosh
        grad_a = -g_inner.sum(1)
        grad_b = torch.bmm(u.unsqueeze(1), g_inner).squeeze(1)  # sum_q g u_q: (B, C)
        grad_u = torch.mul(g_inner, b.unsqueeze(1), out=sinh2).sum(-1)  # sum_c g b_c: (B, Q)
        _release(sinh2, cosh2, probs)
        return grad_u, grad_a, grad_b, grad_alpha, grad_beta, None


def sal_log_softmax(f: Tensor, a: Tensor, b: Tensor, alpha: Tensor, beta: Tensor, labels: Tensor) -> Tensor:
    r""":math:`\log \mathrm{softmax}(\alpha \sinh(b \operatorname{asinh}(f) - a) + \beta)_y`.

    :param f: latent values ``(Q, B)`` (e.g. quadrature nodes for ``B`` inputs).
    :param a: skew, ``(B, C)`` or ``(C,)`` (broadcast).
    :param b: tail weight (> 0), like ``a``.
    :param alpha: scale (> 0), like ``a``.
    :param beta: shift, like ``a``.
    :param labels: ``(B,)`` class indices.
    :return: ``(Q, B)`` log-probabilities of the labels.
    """
    if f.dim() != 2:
        raise ValueError(f"f must be Q x B, got shape {tuple(f.shape)}")
    shape = (f.size(1), a.size(-1))
    dtype = f.dtype
    for p in (a, b, alpha, beta):
        dtype = torch.promote_types(dtype, p.dtype)
    a, b, alpha, beta = (p.to(dtype).expand(shape) for p in (a, b, alpha, beta))
    u = torch.asinh(f.to(dtype)).t().contiguous()  # (B, Q)
    return _SALLogSoftmax.apply(u, a, b, alpha, beta, labels.long()).t()
