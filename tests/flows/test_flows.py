"""Element-wise flows: invertibility, log-det against autograd, identity initialisation, composition."""

import math

import pytest
import torch

from gpkit.flows import (
    AffineFlow,
    ArcsinhFlow,
    BoxCoxFlow,
    ComposedFlow,
    InputDependentFlow,
    SinhArcsinhFlow,
    TanhFlow,
    TukeyGHFlow,
    sinh_arcsinh_affine,
)

FLOWS = [AffineFlow, SinhArcsinhFlow, BoxCoxFlow, ArcsinhFlow, TukeyGHFlow, TanhFlow]


def _perturbed(flow, scale=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return flow


def _inputs(shape, seed=1):
    f = 3 * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return f


@pytest.mark.parametrize("cls", FLOWS)
def test_inverse_and_log_det_against_autograd(cls):
    flow = _perturbed(cls(4))
    f = _inputs((50, 4)).requires_grad_(True)
    y = flow(f)
    assert y.shape == f.shape
    assert torch.allclose(flow.inverse(y), f, atol=1e-8)
    (grad,) = torch.autograd.grad(y.sum(), f)
    assert (grad > 0).all()  # increasing
    assert torch.allclose(flow.log_abs_det_jacobian(f), grad.log(), atol=1e-9)


@pytest.mark.parametrize("cls", FLOWS)
def test_raw_parameters_per_input_broadcast(cls):
    """Per-input raw parameters (n, C, P) act like n separate constant flows."""
    flow = cls(3)
    raw = flow.identity_raw() + 0.4 * torch.randn(6, 3, flow.num_parameters)
    f = _inputs((2, 6, 3))  # a leading quadrature-like dimension
    y = flow(f, raw)
    for i in range(6):
        single = cls(3)
        with torch.no_grad():
            single.raw_parameters.copy_(raw[i])
        assert torch.allclose(y[:, i], single(f[:, i]), atol=1e-12)
    assert torch.allclose(flow.inverse(y, raw), f, atol=1e-8)


@pytest.mark.parametrize("cls", FLOWS)
def test_identity_initialisation(cls):
    flow = cls(5)
    f = _inputs((20, 5))
    if getattr(cls, "exact_identity", True):
        assert torch.allclose(flow(f), f, atol=1e-12)
        assert torch.allclose(flow.log_abs_det_jacobian(f), torch.zeros_like(f), atol=1e-12)
    elif cls is TukeyGHFlow:  # softplus keeps h > 0: starts at h = 1e-3
        small = f[f.abs() < 3]
        assert torch.allclose(TukeyGHFlow(1)(small.unsqueeze(-1)).squeeze(-1), small, rtol=5e-3)


def test_positivity_by_softplus():
    flow = SinhArcsinhFlow(2)
    with torch.no_grad():
        flow.raw_parameters[:, 1] = -50.0  # very negative raw b
    assert (flow.constrained()["b"] > 0).all()


def test_composed_flow_forward_inverse_and_log_det():
    flow = ComposedFlow([_perturbed(SinhArcsinhFlow(3)), _perturbed(AffineFlow(3), seed=2), _perturbed(TanhFlow(3), seed=3)])
    assert flow.num_parameters == 2 + 2 + 3 and flow.raw_parameters.shape == (3, 7)
    f = _inputs((40, 3)).requires_grad_(True)
    y = flow(f)
    manual = f
    for part in flow.flows:
        manual = part(manual)
    assert torch.allclose(y, manual)
    assert torch.allclose(flow.inverse(y), f, atol=1e-8)
    (grad,) = torch.autograd.grad(y.sum(), f)
    assert torch.allclose(flow.log_abs_det_jacobian(f), grad.log(), atol=1e-9)
    # explicit raw parameters split over the parts
    raw = flow.identity_raw().expand(40, 3, 7)
    assert torch.allclose(flow(f, raw), f, atol=1e-12)
    sal = sinh_arcsinh_affine(3, depth=2)
    assert len(sal.flows) == 4 and torch.allclose(sal(f), f, atol=1e-12)


def test_input_dependent_flow_identity_and_prefit():
    flow = InputDependentFlow(sinh_arcsinh_affine(4), input_dim=3, hidden=(16, 16), dropout=0.3)
    x, f = torch.randn(30, 3), _inputs((30, 4))
    assert flow.raw(x).shape == (30, 4, 4)
    assert torch.allclose(flow(f, x), f, atol=1e-12)  # exact identity at initialisation
    # a randomly initialised network, then pre-fit to output the identity
    with torch.no_grad():
        for p in flow.network.parameters():
            p.normal_(0, 0.3)
    before = (flow.raw(x) - flow.flow.raw_parameters).pow(2).mean()
    flow.prefit_identity(x, max_iter=300, lr=0.01)
    flow.eval()
    after = (flow.raw(x) - flow.flow.raw_parameters).pow(2).mean()
    assert after < 0.05 * before
    y = flow(f, x)
    assert torch.allclose(flow.inverse(y, x), f, atol=1e-8)
    assert flow.penalty() > 0
    flow.offset_penalty = 2.0
    expected = flow.penalty() + flow.network(x).pow(2).sum(-1).mean()
    torch.testing.assert_close(flow.penalty(x), expected)  # the penalty from the hidden features, exactly
    torch.testing.assert_close(flow.penalty(features=flow.features(x)), expected)
    torch.testing.assert_close(flow.raw(x), flow.offset(x) + flow.flow.raw_parameters)  # theta0 in the bias
    torch.testing.assert_close(flow.raw(x, features=flow.features(x)), flow.raw(x))


def test_input_dependent_parameters_vary_with_x():
    flow = InputDependentFlow(AffineFlow(2), input_dim=1, hidden=(), dropout=0.0)
    with torch.no_grad():
        flow.network[-1].weight.fill_(1.0)
    x = torch.tensor([[0.0], [1.0]])
    f = torch.ones(2, 2)
    y = flow(f, x)
    assert not torch.allclose(y[0], y[1])


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_flows"):
        AffineFlow(0)
    with pytest.raises(ValueError, match="raw parameters"):
        AffineFlow(2)(torch.zeros(3, 2), torch.zeros(3, 2, 5))
    with pytest.raises(ValueError, match="same num_flows"):
        ComposedFlow([AffineFlow(2), AffineFlow(3)])
    with pytest.raises(TypeError, match="flows"):
        ComposedFlow([])
    with pytest.raises(ValueError, match="dropout"):
        InputDependentFlow(AffineFlow(2), 3, dropout=1.0)
    with pytest.raises(ValueError, match="activation"):
        InputDependentFlow(AffineFlow(2), 3, activation="gelu2")
    with pytest.raises(ValueError, match="offset_penalty"):
        InputDependentFlow(AffineFlow(2), 3, offset_penalty=-1.0)
    with pytest.raises(TypeError, match="flow"):
        InputDependentFlow(torch.nn.Linear(2, 2), 3)
    with pytest.raises(ValueError, match="columns"):
        InputDependentFlow(AffineFlow(2), 3).raw(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="hidden"):  # a zero-width layer would cut the network off from x
        InputDependentFlow(AffineFlow(2), 3, hidden=(0,))
    with pytest.raises(TypeError, match="hidden"):
        InputDependentFlow(AffineFlow(2), 3, hidden=50)


@pytest.mark.parametrize("shape", [(5, 7, 6), (4, 40, 3500)])  # the second runs several chunks
def test_fused_sal_expected_log_softmax_matches_autograd(shape):
    """The default flow's training kernel (forward and its hand-written Jacobians) equals the autograd
    composition: sum_q w_q log softmax_y(G(f_q)), for values and for the gradients of f and the raw parameters."""
    from gpkit.flows import fused

    torch.manual_seed(0)
    Q, B, C = shape
    f = (2 * torch.randn(Q, B, dtype=torch.float64)).requires_grad_(True)
    raw = (0.5 * torch.randn(B, C, 4, dtype=torch.float64)).requires_grad_(True)
    w = torch.rand(Q, dtype=torch.float64)
    y = torch.randint(0, C, (B,))
    flow = sinh_arcsinh_affine(C).double()
    (sal, affine), parts = flow.flows, flow.split_raw(raw)
    p1, p2 = sal.constrained(parts[0]), affine.constrained(parts[1])
    out = fused.sal_expected_log_softmax(f, w, p1["a"], p1["b"], p2["alpha"], p2["beta"], y)
    logits = flow(f.unsqueeze(-1), raw)
    ref = (torch.log_softmax(logits, -1).gather(-1, y.expand(Q, B).unsqueeze(-1)).squeeze(-1) * w[:, None]).sum(0)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    v = torch.randn(B, dtype=torch.float64)
    g_out = torch.autograd.grad((out * v).sum(), [f, raw])
    g_ref = torch.autograd.grad((ref * v).sum(), [f, raw])
    for a, b in zip(g_out, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # constant (C,) parameters broadcast over the batch, float32 too
    flow32 = sinh_arcsinh_affine(C).float()
    p1, p2 = flow32.flows[0].constrained(), flow32.flows[1].constrained()
    out = fused.sal_expected_log_softmax(f.detach().float(), w.float(), p1["a"], p1["b"], p2["alpha"], p2["beta"], y)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.full((B,), -math.log(C) * w.sum().item(), dtype=torch.float32))
    with pytest.raises(ValueError, match="weights"):
        fused.sal_expected_log_softmax(f, w[:-1], p1["a"], p1["b"], p2["alpha"], p2["beta"], y)
