"""Element-wise flows: affine, sinh-arcsinh, Box-Cox, arcsinh, Tukey g-and-h and tanh.

Each holds ``num_flows`` flows acting on the last input dimension; see :class:`~gpkit.flows.ElementwiseFlow`
for the parameter convention (raw ``(..., num_flows, P)``, positivity by softplus).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor

from gpkit.flows.base import ComposedFlow, ElementwiseFlow

__all__ = [
    "AffineFlow",
    "ArcsinhFlow",
    "BoxCoxFlow",
    "SinhArcsinhFlow",
    "TanhFlow",
    "TukeyGHFlow",
    "sinh_arcsinh_affine",
]


def _monotone_inverse(fn: Callable[[Tensor], Tensor], y: Tensor, iterations: int = 100) -> Tensor:
    """Solve ``fn(f) = y`` element-wise for an increasing ``fn`` by bracketing and bisection (no gradient)."""
    with torch.no_grad():
        lo, hi = torch.full_like(y, -1.0), torch.full_like(y, 1.0)
        for _ in range(64):  # widen the bracket until fn(lo) <= y <= fn(hi)
            low, high = fn(lo) > y, fn(hi) < y
            if not (low.any() or high.any()):
                break
            lo = torch.where(low, 2 * lo, lo)
            hi = torch.where(high, 2 * hi, hi)
        for _ in range(iterations):
            mid = (lo + hi) / 2
            above = fn(mid) > y
            hi, lo = torch.where(above, mid, hi), torch.where(above, lo, mid)
    return (lo + hi) / 2


class AffineFlow(ElementwiseFlow):
    r""":math:`G(f) = \alpha f + \beta`, :math:`\alpha > 0`; identity at :math:`\alpha = 1, \beta = 0`."""

    parameter_names = ("alpha", "beta")
    positive = ("alpha",)
    identity: ClassVar[dict[str, float]] = {"alpha": 1.0, "beta": 0.0}

    def _forward(self, f, alpha, beta):
        return alpha * f + beta

    def _inverse(self, y, alpha, beta):
        return (y - beta) / alpha

    def _log_derivative(self, f, alpha, beta):
        return torch.log(alpha).expand(torch.broadcast_shapes(f.shape, alpha.shape))


class SinhArcsinhFlow(ElementwiseFlow):
    r""":math:`G(f) = \sinh(b \operatorname{asinh}(f) - a)`, :math:`b > 0`; identity at :math:`a = 0, b = 1`.

    :math:`a` skews, :math:`b` sets the tail weight (Jones & Pewsey, 2009).
    """

    parameter_names = ("a", "b")
    positive = ("b",)
    identity: ClassVar[dict[str, float]] = {"a": 0.0, "b": 1.0}

    def _forward(self, f, a, b):
        return torch.sinh(b * torch.asinh(f) - a)

    def _inverse(self, y, a, b):
        return torch.sinh((torch.asinh(y) + a) / b)

    def _log_derivative(self, f, a, b):
        inner = b * torch.asinh(f) - a
        # log cosh(x) = |x| + log1p(exp(-2|x|)) - log 2, stable for large |x|
        log_cosh = inner.abs() + torch.log1p(torch.exp(-2 * inner.abs())) - math.log(2.0)
        return log_cosh + torch.log(b) - 0.5 * torch.log1p(f * f)


def sinh_arcsinh_affine(num_flows: int = 1, depth: int = 1) -> ComposedFlow:
    """``depth`` sinh-arcsinh flows, each followed by an affine flow (the SAL flow of TGP/ETGP)."""
    parts = []
    for _ in range(depth):
        parts += [SinhArcsinhFlow(num_flows), AffineFlow(num_flows)]
    return ComposedFlow(parts)


class BoxCoxFlow(ElementwiseFlow):
    r"""Signed Box-Cox, :math:`G(f) = (\operatorname{sgn}(f) |f|^\lambda - 1) / \lambda + 1`, :math:`\lambda > 0`.

    The ``+ 1`` makes :math:`\lambda = 1` the identity. :math:`G'(0)` is infinite for :math:`\lambda < 1` and
    zero for :math:`\lambda > 1`, so the log-derivative is :math:`\pm\infty` exactly at :math:`f = 0`.
    """

    parameter_names = ("lam",)
    positive = ("lam",)
    identity: ClassVar[dict[str, float]] = {"lam": 1.0}

    def _forward(self, f, lam):
        return (torch.sign(f) * f.abs().pow(lam) - 1) / lam + 1

    def _inverse(self, y, lam):
        z = lam * (y - 1) + 1
        return torch.sign(z) * z.abs().pow(1 / lam)

    def _log_derivative(self, f, lam):
        return (lam - 1) * torch.log(f.abs())


class ArcsinhFlow(ElementwiseFlow):
    r""":math:`G(f) = a + b \operatorname{asinh}((f - c) / d)`, :math:`b, d > 0`.

    It has no identity setting; it starts at :math:`a = c = 0, b = d = 1` (:math:`G = \operatorname{asinh}`).
    """

    parameter_names = ("a", "b", "c", "d")
    positive = ("b", "d")
    identity: ClassVar[dict[str, float]] = {"a": 0.0, "b": 1.0, "c": 0.0, "d": 1.0}
    exact_identity = False

    def _forward(self, f, a, b, c, d):
        return a + b * torch.asinh((f - c) / d)

    def _inverse(self, y, a, b, c, d):
        return c + d * torch.sinh((y - a) / b)

    def _log_derivative(self, f, a, b, c, d):
        z = (f - c) / d
        return torch.log(b) - torch.log(d) - 0.5 * torch.log1p(z * z)


class TukeyGHFlow(ElementwiseFlow):
    r"""Tukey g-and-h, :math:`G(f) = \frac{e^{g f} - 1}{g} e^{h f^2 / 2}` (:math:`f e^{h f^2/2}` at
    :math:`g = 0`), :math:`h > 0`: :math:`g` skews, :math:`h` thickens the tails.

    Increasing for every :math:`g` and :math:`h \ge 0`. The identity is :math:`g = h = 0`; softplus keeps
    :math:`h` positive, so it starts at :math:`h = 10^{-3}` (:math:`|G(f) - f| < 0.005 |f|` for :math:`|f| < 3`).
    The inverse has no closed form and is solved by bisection (without gradient).
    """

    parameter_names = ("g", "h")
    positive = ("h",)
    identity: ClassVar[dict[str, float]] = {"g": 0.0, "h": 1e-3}
    exact_identity = False

    @staticmethod
    def _skew(f, g):
        # (exp(g f) - 1) / g, and its series where |g f| is tiny
        gf = g * f
        small = gf.abs() < 1e-6
        safe_g = torch.where(small, torch.ones_like(g), g)
        return torch.where(small, f * (1 + gf / 2), torch.expm1(gf) / safe_g)

    def _forward(self, f, g, h):
        return self._skew(f, g) * torch.exp(h * f * f / 2)

    def _inverse(self, y, g, h):
        return _monotone_inverse(lambda f: self._forward(f, g, h), y)

    def _log_derivative(self, f, g, h):
        # G' = e^{h f^2/2} (e^{g f} + h f (e^{g f} - 1) / g), both terms >= 0
        return h * f * f / 2 + torch.log(torch.exp(g * f) + h * f * self._skew(f, g))


class TanhFlow(ElementwiseFlow):
    r""":math:`G(f) = f + \frac{a}{b} \tanh(b (f + c))`, :math:`a > -1` (softplus - 1), :math:`b > 0`.

    :math:`G' = 1 + a\,\mathrm{sech}^2(b (f + c)) > 0`, so :math:`G` is increasing; identity at :math:`a = 0`.
    The inverse is solved by bisection (without gradient).
    """

    parameter_names = ("a", "b", "c")
    positive = ("b",)
    identity: ClassVar[dict[str, float]] = {"a": 0.0, "b": 1.0, "c": 0.0}

    def constrain(self, values):
        params = super().constrain(values)
        params["a"] = torch.nn.functional.softplus(params["a"] + math.log(math.e - 1)) - 1  # identity raw a = 0
        return params

    def _forward(self, f, a, b, c):
        return f + a / b * torch.tanh(b * (f + c))

    def _inverse(self, y, a, b, c):
        return _monotone_inverse(lambda f: self._forward(f, a, b, c), y)

    def _log_derivative(self, f, a, b, c):
        return torch.log1p(a / torch.cosh(b * (f + c)).pow(2))
