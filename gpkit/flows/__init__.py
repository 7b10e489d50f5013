"""Element-wise invertible flows (``forward``, ``inverse``, ``log_abs_det_jacobian``), composable, with
constant or input-dependent parameters; used by :class:`~gpkit.likelihoods.ETGPLikelihood`."""

from gpkit.flows.base import ComposedFlow, ElementwiseFlow, inverse_softplus
from gpkit.flows.elementwise import (
    AffineFlow,
    ArcsinhFlow,
    BoxCoxFlow,
    SinhArcsinhFlow,
    TanhFlow,
    TukeyGHFlow,
    sinh_arcsinh_affine,
)
from gpkit.flows.input_dependent import InputDependentFlow

__all__ = [
    "AffineFlow",
    "ArcsinhFlow",
    "BoxCoxFlow",
    "ComposedFlow",
    "ElementwiseFlow",
    "InputDependentFlow",
    "SinhArcsinhFlow",
    "TanhFlow",
    "TukeyGHFlow",
    "inverse_softplus",
    "sinh_arcsinh_affine",
]
