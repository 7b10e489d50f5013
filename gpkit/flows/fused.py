r"""A fused training kernel for the default ETGP flow: sinh-arcsinh followed by affine, then the log-softmax.

:math:`\log \mathrm{softmax}_y(\alpha_c \sinh(b_c \operatorname{asinh}(f) - a_c) + \beta_c)` for all ``Q``
quadrature nodes, ``B`` inputs and ``C`` classes, with a hand-written backward: autograd would keep about a
dozen ``Q x B x C`` intermediates and run twice as many passes over them (the cost that grows with C). Here the
forward makes two transcendental passes (``sinh``, ``exp``) and the backward none (``cosh`` from
:math:`\sqrt{1 + \sinh^2}`, the softmax kept from the forward); the reductions over ``Q`` and ``C`` are
batched matrix products.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["sal_log_softmax"]


class _SALLogSoftmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u: Tensor, a: Tensor, b: Tensor, alpha: Tensor, beta: Tensor, labels: Tensor) -> Tensor:
        # u: (Q, B) = asinh(f0); a, b, alpha, beta: (B, C); labels: (B,) long -> (Q, B)
        s = (u.unsqueeze(-1) * b).sub_(a).sinh_()  # (Q, B, C)
        logits = (s * alpha).add_(beta)
        index = labels.expand(u.shape).unsqueeze(-1)
        top = logits.amax(dim=-1, keepdim=True)  # (Q, B, 1)
        chosen = logits.gather(-1, index) - top
        probs = logits.sub_(top).exp_()  # one exp pass, in place of the logits
        total = probs.sum(-1, keepdim=True)
        probs.div_(total)  # the softmax
        out = (chosen - total.log()).squeeze(-1)
        ctx.save_for_backward(u, b, alpha, s, probs, index)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        if getattr(ctx, "consumed", False):
            raise RuntimeError("sal_log_softmax's backward reuses its buffers in place; it cannot run twice")
        ctx.consumed = True
        u, b, alpha, s, probs, index = ctx.saved_tensors
        # every Q x B x C buffer is reused in place: fresh allocations of that size cost more than the arithmetic
        g = probs.mul_(-grad_out.unsqueeze(-1))  # d/d logits = grad (onehot - softmax)
        g.scatter_add_(-1, index, grad_out.unsqueeze(-1))
        grad_beta = g.sum(0)
        grad_alpha = (g * s).sum(0)
        g_inner = g.mul_(alpha).mul_(s.mul_(s).add_(1.0).sqrt_())  # d/d (b u - a), cosh = sqrt(1 + sinh^2)
        gi = g_inner.permute(1, 0, 2)  # (B, Q, C) for the batched reductions
        grad_a = -g_inner.sum(0)
        grad_b = torch.bmm(u.t().unsqueeze(1), gi).squeeze(1)  # sum_q g u_q: (B, C)
        grad_u = torch.bmm(gi, b.unsqueeze(-1)).squeeze(-1).t()  # sum_c g b_c: (Q, B)
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
    a, b, alpha, beta = (p.expand(shape) for p in (a, b, alpha, beta))
    return _SALLogSoftmax.apply(torch.asinh(f), a, b, alpha, beta, labels.long())
