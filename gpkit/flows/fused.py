r"""A fused training kernel for the default ETGP flow: sinh-arcsinh followed by affine, then the log-softmax,
averaged over quadrature nodes.

:math:`\sum_q w_q \log \mathrm{softmax}_y(\alpha_c \sinh(b_c \operatorname{asinh}(f_q) - a_c) + \beta_c)` for
``B`` inputs, ``Q`` nodes and ``C`` classes. The output is one number per input, so the kernel's Jacobian with
respect to every ``B x C`` parameter is ``B x C`` too: the forward computes it (sums over the nodes) and the
backward only scales it by the incoming gradient. Nothing of size ``B x Q x C`` outlives the forward, which
therefore runs on chunks of inputs small enough for the ``B x Q x C`` intermediates to stay in the CPU cache;
per chunk it makes two transcendental passes (one ``exp`` gives both ``sinh`` and ``cosh``, one ``exp`` the
softmax) and every sum over the nodes is one batched matrix product. What the backward keeps is ``4 x B x C``
(the earlier kernel, whose output was per node, kept three ``B x Q x C`` tensors for its backward).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["sal_expected_log_softmax"]

_CHUNK_ELEMENTS = 2**17  # B x Q x C elements per chunk: 3 buffers of them fit the CPU's L2/L3 cache


def _chunk(u: Tensor, w: Tensor, a: Tensor, b: Tensor, alpha: Tensor, beta: Tensor, index: Tensor,
           buf: Tensor, out: Tensor, d_u: Tensor | None, d_params: Tensor | None) -> None:
    """The kernel on ``n`` inputs: ``u (n, Q)``, ``w (Q,)``, parameters ``(n, C)``, ``index (n, Q, 1)``, work space
    ``buf (3, >= n, Q, C)``. Writes the ``(n,)`` weighted log-probabilities into ``out`` and, given ``d_u (n, Q)``
    and ``d_params (4, n, C)``, their derivatives with respect to ``u`` and ``a, b, alpha, beta``."""
    n, Q = u.shape
    s2, c2, e = buf[:, :n].unbind(0)  # contiguous (n, Q, C): 2 sinh, 2 cosh, the unnormalised softmax
    half_alpha = 0.5 * alpha
    # with x = exp(b u - a): 2 sinh = x - 1/x and 2 cosh = x + 1/x, one exp for both
    torch.addcmul(a.unsqueeze(1), u.unsqueeze(-1), b.unsqueeze(1), value=-1, out=c2).exp_()  # 1/x
    torch.reciprocal(c2, out=s2)
    s2.sub_(c2)
    torch.add(s2, c2, alpha=2.0, out=c2)  # (x - 1/x) + 2/x
    torch.addcmul(beta.unsqueeze(1), s2, half_alpha.unsqueeze(1), out=e)  # logits
    top = e.amax(dim=-1, keepdim=True)  # (n, Q, 1)
    chosen = e.gather(-1, index)
    total = e.sub_(top).exp_().sum(-1, keepdim=True)
    torch.mv(chosen.sub_(top).sub_(total.log()).view(n, Q), w, out=out)
    if d_u is None:
        return
    # d/d logit_qc = w_q (onehot_c - softmax_qc): a dense part -r_q e_qc (r = w / total) and a one-hot part
    r = w / total.view(n, Q)
    onehot = index[:, 0]  # (n, 1): the label's column
    s2_y, c2_y = s2.gather(-1, index).view(n, Q), c2.gather(-1, index).view(n, Q)
    s2.mul_(e)
    c2.mul_(e)
    d_a, d_b, d_alpha, d_beta = d_params
    # the sums over the nodes, as batched products with r (and r u)
    torch.bmm(r.unsqueeze(1), e, out=d_beta.unsqueeze(1)).neg_()
    d_beta.scatter_add_(-1, onehot, w.sum().expand(n, 1))
    torch.bmm(r.unsqueeze(1), s2, out=d_alpha.unsqueeze(1)).neg_()
    d_alpha.scatter_add_(-1, onehot, (s2_y @ w).unsqueeze(-1)).mul_(0.5)
    # d/d (b u - a)_qc = w_q (onehot_c - softmax_qc) alpha_c cosh_qc, summed over q (-> a) or weighted by u_q (-> b)
    torch.bmm(r.unsqueeze(1), c2, out=d_a.unsqueeze(1))
    d_a.scatter_add_(-1, onehot, (-c2_y @ w).unsqueeze(-1)).mul_(half_alpha)
    torch.bmm((r * u).unsqueeze(1), c2, out=d_b.unsqueeze(1)).neg_()
    d_b.scatter_add_(-1, onehot, ((c2_y * u) @ w).unsqueeze(-1)).mul_(half_alpha)
    alpha_b = alpha * b
    c_sum = torch.bmm(alpha_b.unsqueeze(1), c2.transpose(1, 2)).view(n, Q)  # sum_c alpha_c b_c e_qc 2 cosh_qc
    torch.mul(w * c2_y, alpha_b.gather(-1, onehot), out=d_u).sub_(r * c_sum).mul_(0.5)


class _SALExpectedLogSoftmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u: Tensor, w: Tensor, a: Tensor, b: Tensor, alpha: Tensor, beta: Tensor,
                labels: Tensor) -> Tensor:
        # u: (B, Q) = asinh(f); w: (Q,); a, b, alpha, beta: (B, C); labels: (B,) long -> (B,)
        B, Q, C = u.size(0), u.size(1), a.size(-1)
        rows = max(1, min(B, _CHUNK_ELEMENTS // (Q * C)))
        buf = torch.empty(3, rows, Q, C, dtype=u.dtype, device=u.device)
        index = labels.view(B, 1, 1).expand(B, Q, 1)
        out = u.new_empty(B)
        d_u = d_params = None
        if any(ctx.needs_input_grad[:1] + ctx.needs_input_grad[2:6]):
            d_u, d_params = u.new_empty(B, Q), u.new_empty(4, B, C)
        for start in range(0, B, rows):
            part = slice(start, start + rows)
            _chunk(u[part], w, a[part], b[part], alpha[part], beta[part], index[part], buf, out[part],
                   None if d_u is None else d_u[part], None if d_params is None else d_params[:, part])
        if d_u is not None:
            ctx.save_for_backward(d_u, d_params)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        d_u, d_params = ctx.saved_tensors
        g = grad_out.unsqueeze(-1)  # (B, 1)
        d_a, d_b, d_alpha, d_beta = (g * d_params).unbind(0)
        return g * d_u, None, d_a, d_b, d_alpha, d_beta, None


def sal_expected_log_softmax(f: Tensor, weights: Tensor, a: Tensor, b: Tensor, alpha: Tensor, beta: Tensor,
                             labels: Tensor) -> Tensor:
    r""":math:`\sum_q w_q \log \mathrm{softmax}(\alpha \sinh(b \operatorname{asinh}(f_q) - a) + \beta)_y` per input.

    Differentiable in ``f`` and the four parameters (not in the weights).

    :param f: latent values ``(Q, B)`` (e.g. quadrature nodes for ``B`` inputs).
    :param weights: ``(Q,)`` weights of the nodes.
    :param a: skew, ``(B, C)`` or ``(C,)`` (broadcast).
    :param b: tail weight (> 0), like ``a``.
    :param alpha: scale (> 0), like ``a``.
    :param beta: shift, like ``a``.
    :param labels: ``(B,)`` class indices.
    :return: ``(B,)`` weighted sums over the nodes of the labels' log-probabilities.
    """
    if f.dim() != 2:
        raise ValueError(f"f must be Q x B, got shape {tuple(f.shape)}")
    if weights.shape != f.shape[:1]:
        raise ValueError(f"weights must have shape ({f.size(0)},) to match f, got {tuple(weights.shape)}")
    shape = (f.size(1), a.size(-1))
    dtype = f.dtype
    for p in (a, b, alpha, beta):
        dtype = torch.promote_types(dtype, p.dtype)
    a, b, alpha, beta = (p.to(dtype).expand(shape) for p in (a, b, alpha, beta))
    u = torch.asinh(f.to(dtype)).t()  # (B, Q)
    return _SALExpectedLogSoftmax.apply(u, weights.detach().to(dtype), a, b, alpha, beta, labels.long())
