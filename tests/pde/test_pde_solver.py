"""KroneckerPDESolver: Kronecker loss equals the dense loss, convergence on a manufactured problem, bad inputs."""

import math

import pytest
import torch

import gpkit
from gpkit.pde import (
    Advection,
    AllenCahn,
    KroneckerPDESolver,
    PDEProblem,
    Poisson,
    autodiff_derivatives,
    dense_negative_log_joint,
)


def _perturb(solver):
    torch.manual_seed(1)
    with torch.no_grad():
        for p in solver.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return solver


def _problems():
    b1 = torch.tensor([[0.0], [1.0]])
    b2 = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    b3 = torch.tensor([[0.0] * 3, [1.0] * 3])
    return {
        "poisson-1d": Poisson.from_solution(lambda X: torch.sin(6 * X[:, 0]), b1),
        "allen-cahn-1d": AllenCahn.from_solution(lambda X: torch.sin(6 * X[:, 0]), b1),
        "poisson-2d": Poisson.from_solution(lambda X: torch.sin(3 * X[:, 0]) * torch.cos(2 * X[:, 1]), b2),
        "allen-cahn-2d": AllenCahn.from_solution(lambda X: torch.sin(3 * X[:, 0]) * X[:, 1], b2),
        "advection-2d": Advection.from_solution(
            lambda X: torch.sin(X[:, 0] - 20 * X[:, 1]), b2, velocity=(20.0, 1.0)
        ),
        "poisson-3d": Poisson.from_solution(lambda X: X.sin().prod(-1), b3),
    }


@pytest.mark.parametrize("name", list(_problems()))
@pytest.mark.parametrize("kernel", ["gm", "student-t", "se", "matern"])
def test_kronecker_loss_and_gradient_match_dense(name, kernel):
    problem = _problems()[name]
    sizes = {1: 9, 2: (6, 5), 3: (4, 3, 4)}[problem.dim]
    solver = _perturb(KroneckerPDESolver(problem, sizes, num_components=3, max_frequency=0.5, kernel=kernel))
    loss = solver.loss()
    grads = torch.autograd.grad(loss, list(solver.parameters()))
    dense, dense_derivs = dense_negative_log_joint(solver)
    dense_grads = torch.autograd.grad(dense, list(solver.parameters()))
    torch.testing.assert_close(loss, dense, rtol=1e-7, atol=1e-6)
    for g, dg in zip(grads, dense_grads):
        torch.testing.assert_close(g, dg, rtol=1e-6, atol=1e-6 * (1 + dg.abs().max().item()))
    with torch.no_grad():
        derivs = solver.grid_derivatives()
    for key, field in derivs.items():
        torch.testing.assert_close(field, dense_derivs[key].detach(), rtol=1e-6, atol=1e-8)


def test_from_solution_sources_by_autodiff():
    X = torch.rand(5, 2)
    p = Poisson.from_solution(
        lambda X: torch.sin(3 * X[:, 0]) * X[:, 1] ** 3, torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    )
    expected = -9 * torch.sin(3 * X[:, 0]) * X[:, 1] ** 3 + 6 * torch.sin(3 * X[:, 0]) * X[:, 1]
    torch.testing.assert_close(p.source(X), expected)
    a = AllenCahn.from_solution(lambda X: torch.sin(2 * X[:, 0]), torch.tensor([[0.0], [1.0]]))
    u = torch.sin(2 * X[:, :1]).squeeze(-1)
    torch.testing.assert_close(a.source(X[:, :1]), -4 * u + u * (u**2 - 1))
    adv = Advection.from_solution(
        lambda X: torch.sin(X[:, 0] - 200 * X[:, 1]), torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    )
    torch.testing.assert_close(adv.source(X), torch.zeros(5), atol=1e-10, rtol=0)
    # a generic PDE written from u and its derivatives: u_x + u = f
    generic = PDEProblem.from_solution(
        lambda X: X[:, 0] ** 2,
        torch.tensor([[0.0], [1.0]]),
        operator=lambda d, X: d[(0,)] + d[()],
        derivatives=[(0,), ()],
    )
    torch.testing.assert_close(generic.source(X[:, :1]), 2 * X[:, 0] + X[:, 0] ** 2)
    derivs = autodiff_derivatives(lambda X: X[:, 0] * X[:, 1], X, [(0, 1)])
    torch.testing.assert_close(derivs[(0, 1)], torch.ones(5))


def test_low_frequency_poisson_converges():
    problem = Poisson.from_solution(lambda X: torch.sin(2 * math.pi * X[:, 0]), torch.tensor([[0.0], [1.0]]))
    solver = KroneckerPDESolver(
        problem, 40, num_components=5, max_frequency=3.0, kernel="student-t", jitter=1e-9
    )
    gpkit.fit(solver, max_iter=500, lr=2e-2, progress=False)
    solver.polish(rounds=2)
    X = torch.rand(200, 1)
    u = problem.solution(X)
    error = (solver.predict(X) - u).norm() / u.norm()
    assert error < 1e-4
    assert solver.predict(X).shape == (200,)


def test_should_stop_uses_only_the_residual():
    problem = Poisson.from_solution(lambda X: torch.sin(2 * X[:, 0]), torch.tensor([[0.0], [1.0]]))
    solver = KroneckerPDESolver(
        problem, 12, num_components=3, max_frequency=1.0, residual_tol=1e-2, patience=5
    )
    problem.solution = None  # the rule must not need the exact solution
    gpkit.fit(solver, max_iter=3000, lr=2e-2, progress=False)
    assert len(solver.fit_history) < 3000
    assert solver.relative_residual <= 1e-2 or len(solver.fit_history) - solver._best[1] >= 5
    # the zero initial state of a source-free problem has zero residual but not a fitted boundary
    advection = Advection.from_solution(
        lambda X: torch.sin(X[:, 0] - 2 * X[:, 1]), torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    )
    solver = KroneckerPDESolver(advection, 8, num_components=2, max_frequency=0.5, residual_tol=1e-3)
    gpkit.fit(solver, max_iter=20, progress=False)
    assert len(solver.fit_history) == 20


def test_bad_inputs():
    problem = Poisson.from_solution(lambda X: torch.sin(100 * X[:, 0]), torch.tensor([[0.0], [2 * math.pi]]))
    with pytest.warns(UserWarning, match="Nyquist"):
        KroneckerPDESolver(problem, 50, num_components=3, max_frequency=20.0)
    with pytest.raises(ValueError, match="bounds"):
        Poisson.from_solution(lambda X: X[:, 0], torch.tensor([[1.0], [0.0]]))
    with pytest.raises(ValueError, match="bounds"):
        Poisson.from_solution(lambda X: X[:, 0], torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="grid_size"):
        KroneckerPDESolver(problem, 2)
    with pytest.raises(ValueError, match="grid_size"):
        KroneckerPDESolver(problem, (10, 10))
    with pytest.raises(ValueError, match="kernel"):
        KroneckerPDESolver(problem, 10, kernel="cubic")
    with pytest.raises(ValueError, match="max_frequency"):
        KroneckerPDESolver(problem, 10, max_frequency=-1.0)
    with pytest.raises(TypeError, match="problem"):
        KroneckerPDESolver("poisson", 10)
    solver = KroneckerPDESolver(problem, 10, num_components=2)
    with pytest.raises(ValueError, match="X"):
        solver.predict(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="velocity"):
        Advection(None, lambda X: X[:, 0], torch.tensor([[0.0, 0.0], [1.0, 1.0]]), velocity=(1.0,))


def _small_solver(dim=1, **kwargs):
    if dim == 1:
        problem = Poisson.from_solution(lambda X: torch.sin(4 * X[:, 0]), torch.tensor([[0.0], [1.0]]))
        sizes = 12
    else:
        problem = Poisson.from_solution(
            lambda X: torch.sin(3 * X[:, 0]) * torch.cos(2 * X[:, 1]), torch.tensor([[0.0, 0.0], [1.0, 1.0]])
        )
        sizes = (7, 6)
    return _perturb(KroneckerPDESolver(problem, sizes, num_components=3, max_frequency=1.0, **kwargs))


@pytest.mark.parametrize("dim", [1, 2])
def test_polish_step_is_the_exact_minimiser_over_grid_values(dim):
    """For a linear PDE one Gauss–Newton step minimises the loss over W at fixed kernel, tau and v."""
    for method in ("dense", "cg"):
        solver = _small_solver(dim)
        log_tau, log_v = solver.log_tau.detach().clone(), solver.log_v.detach().clone()
        solver.polish(rounds=1, method=method, cg_iters=2000)
        with torch.no_grad():
            solver.log_tau.copy_(log_tau)
            solver.log_v.copy_(log_v)
        (grad,) = torch.autograd.grad(solver.loss(), solver.W)
        assert grad.abs().max() < 1e-6 * max(1.0, solver.W.abs().max().item()), method


@pytest.mark.parametrize("dim", [1, 2])
def test_solve_collocation_zero_interior_residual(dim):
    solver = _small_solver(dim)
    solver.solve_collocation()
    with torch.no_grad():
        U = solver.U
        r = solver.problem.residual(solver.grid_derivatives(), solver.grid_points, solver.source_values)
    interior = ~solver.boundary_mask
    assert r[interior].abs().max() < 1e-6 * solver.source_values.abs().max()
    torch.testing.assert_close(U[solver.boundary_mask], solver.boundary_values)


@pytest.mark.parametrize("dim", [1, 2])
def test_newton_collocation_for_allen_cahn(dim):
    bounds = torch.tensor([[0.0] * dim, [1.0] * dim])
    problem = AllenCahn.from_solution(lambda X: torch.sin(3 * X).prod(-1) + 0.5, bounds)
    solver = KroneckerPDESolver(problem, 12 if dim == 1 else (9, 8), num_components=3, max_frequency=1.0)
    solver.solve_collocation()
    with torch.no_grad():
        derivs = solver.grid_derivatives()
        derivs[()] = solver.U
        r = problem.residual(derivs, solver.grid_points, solver.source_values)
    assert r[~solver.boundary_mask].abs().max() < 1e-6 * solver.source_values.abs().max()


def test_collocation_and_polish_bad_inputs():
    problem = Poisson.from_solution(lambda X: X.sin().prod(-1), torch.tensor([[0.0] * 3, [1.0] * 3]))
    solver = KroneckerPDESolver(problem, 4, num_components=2, max_frequency=0.5)
    with pytest.raises(NotImplementedError, match="2-D"):
        solver.solve_collocation()
    with pytest.raises(ValueError, match="method"):
        solver.polish(method="newton")


def test_float32_runs():
    problem = Poisson.from_solution(lambda X: torch.sin(3 * X[:, 0]), torch.tensor([[0.0], [1.0]]))
    solver = KroneckerPDESolver(problem, 16, num_components=3, max_frequency=2.0, dtype=torch.float32)
    gpkit.fit(solver, max_iter=5, progress=False)
    assert solver.W.dtype == torch.float32
    assert torch.isfinite(solver.predict(torch.rand(4, 1, dtype=torch.float32))).all()
