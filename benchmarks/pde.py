"""GP-HM benchmark (``gpkit bench pde``): Kronecker GP PDE solver vs GP-SE/GP-Matérn, PINN, RFF-PINN, dense GP.

Every case of the spec's table is solved on CPU with a stated budget; the FINAL relative L2 error
||u_pred - u|| / ||u|| on 2000 (1-D) or 100 x 100 (2-D) evaluation points is reported (no checkpoint is
chosen with the exact solution). GP solvers: Adam (lr 1e-2, cosine schedule) on the full negative log
joint, then ``polish`` rounds (Gauss–Newton on the grid values + closed-form tau, v) where the grid has at
most 4096 points. The PINNs use plain PyTorch with a fixed Adam budget.
"""

from __future__ import annotations

import math
import time

import torch

import gpkit
from gpkit.pde import Advection, AllenCahn, KroneckerPDESolver, Poisson, dense_negative_log_joint

TWO_PI = 2 * math.pi


def _box(lo, hi, d):
    return torch.tensor([[lo] * d, [hi] * d], dtype=torch.float64)


def cases():
    """(name, problem, grid points per dim, max_frequency) for every row of the spec's table."""
    s, c = torch.sin, torch.cos
    return [
        (
            "poisson1d sin(100x)",
            Poisson.from_solution(lambda X: s(100 * X[:, 0]), _box(0, TWO_PI, 1)),
            400,
            20.0,
        ),
        (
            "poisson1d sin x+0.1sin20x+0.05sin100x",
            Poisson.from_solution(
                lambda X: s(X[:, 0]) + 0.1 * s(20 * X[:, 0]) + 0.05 * s(100 * X[:, 0]), _box(0, 1, 1)
            ),
            900,
            30.0,
        ),
        (
            "poisson1d sin6x cos100x",
            Poisson.from_solution(lambda X: s(6 * X[:, 0]) * c(100 * X[:, 0]), _box(0, TWO_PI, 1)),
            400,
            20.0,
        ),
        (
            "poisson1d x sin200x",
            Poisson.from_solution(lambda X: X[:, 0] * s(200 * X[:, 0]), _box(0, TWO_PI, 1)),
            900,
            50.0,
        ),
        (
            "poisson1d sin500x-2(x-0.5)^2",
            Poisson.from_solution(lambda X: s(500 * X[:, 0]) - 2 * (X[:, 0] - 0.5) ** 2, _box(0, 1, 1)),
            400,
            100.0,
        ),
        (
            "allencahn1d sin(100x)",
            AllenCahn.from_solution(lambda X: s(100 * X[:, 0]), _box(0, TWO_PI, 1)),
            400,
            20.0,
        ),
        (
            "allencahn1d sin6x cos100x",
            AllenCahn.from_solution(lambda X: s(6 * X[:, 0]) * c(100 * X[:, 0]), _box(0, TWO_PI, 1)),
            400,
            20.0,
        ),
        (
            "poisson2d sin100x sin100y",
            Poisson.from_solution(lambda X: s(100 * X[:, 0]) * s(100 * X[:, 1]), _box(0, TWO_PI, 2)),
            400,
            20.0,
        ),
        (
            "poisson2d sin6xcos20x+sin6ycos20y",
            Poisson.from_solution(
                lambda X: s(6 * X[:, 0]) * c(20 * X[:, 0]) + s(6 * X[:, 1]) * c(20 * X[:, 1]),
                _box(0, TWO_PI, 2),
            ),
            200,
            20.0,
        ),
        (
            "allencahn2d prod(sin z+0.1sin20z+cos100z)",
            AllenCahn.from_solution(lambda X: (s(X) + 0.1 * s(20 * X) + c(100 * X)).prod(-1), _box(0, 1, 2)),
            400,
            30.0,
        ),
        (
            "advection 200u_x+u_y",
            Advection.from_solution(lambda X: s(X[:, 0] - 200 * X[:, 1]), _box(0, 1, 2)),
            200,
            40.0,
        ),
    ]


def _eval_points(problem):
    lo, hi = problem.bounds
    if problem.dim == 1:
        return torch.linspace(lo[0], hi[0], 2000, dtype=torch.float64).unsqueeze(-1)
    g = [torch.linspace(a, b, 100, dtype=torch.float64) for a, b in zip(lo, hi)]
    return torch.stack(torch.meshgrid(*g, indexing="ij"), -1).reshape(-1, 2)


def _rel_l2(pred, u):
    return float((pred - u).norm() / u.norm())


def run_gp(problem, grid, freq, kernel, iters, rounds=3, cg_iters=200, device="cpu") -> dict:
    """Adam on the negative log joint, then the residual-only finish: collocation solve for linear 2-D problems,
    otherwise Gauss–Newton polish rounds (dense Jacobian up to 4096 grid points, CG beyond)."""
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    start = time.perf_counter()
    solver = KroneckerPDESolver(problem, grid, max_frequency=freq, kernel=kernel, jitter=1e-9).to(device)
    gpkit.fit(solver, max_iter=iters, progress=False)
    sync()
    adam_seconds = time.perf_counter() - start
    X = _eval_points(problem).to(device)
    before = _rel_l2(solver.predict(X), problem.solution(X))
    start_finish = time.perf_counter()
    if problem.dim == 2 and solver._constant_linear_terms() is not None:
        solver.solve_collocation()
        finish = "collocation"
    else:
        solver.polish(rounds, cg_iters=cg_iters)
        finish = f"{rounds} polish"
    sync()
    seconds = adam_seconds + time.perf_counter() - start_finish
    return {
        "rel_l2": _rel_l2(solver.predict(X), problem.solution(X)),
        "seconds": seconds,
        "iterations": iters,
        "seconds_per_adam_iteration": adam_seconds / iters,
        "grid": grid,
        "finish": finish,
        "relative_residual": solver.relative_residual,
        "rel_l2_adam_only": before,
    }


class PINN(torch.nn.Module):
    """Plain tanh MLP (optionally on random Fourier features, the RFF-PINN)."""

    def __init__(self, d, width=64, depth=3, rff_scale=None):
        super().__init__()
        self.register_buffer("B", None if rff_scale is None else rff_scale * torch.randn(d, width // 2))
        layers, n_in = [], d if rff_scale is None else width
        for _ in range(depth):
            layers += [torch.nn.Linear(n_in, width), torch.nn.Tanh()]
            n_in = width
        self.net = torch.nn.Sequential(*layers, torch.nn.Linear(width, 1))

    def forward(self, X):
        if self.B is not None:
            z = X @ self.B
            X = torch.cat([torch.sin(z), torch.cos(z)], -1)
        return self.net(X).squeeze(-1)


def run_pinn(problem, grid, freq, steps, rff, device="cpu"):
    torch.manual_seed(0)
    start = time.perf_counter()
    lo, hi = problem.bounds.to(device)
    model = PINN(problem.dim, rff_scale=TWO_PI * freq / 2 if rff else None).double().to(device)
    n_col = grid if problem.dim == 1 else 4096
    X_b = (
        torch.stack([lo, hi])
        if problem.dim == 1
        else torch.cat(
            [
                torch.stack([torch.full((200,), lo[0]), torch.linspace(lo[1], hi[1], 200)], -1),
                torch.stack([torch.full((200,), hi[0]), torch.linspace(lo[1], hi[1], 200)], -1),
                torch.stack([torch.linspace(lo[0], hi[0], 200), torch.full((200,), lo[1])], -1),
                torch.stack([torch.linspace(lo[0], hi[0], 200), torch.full((200,), hi[1])], -1),
            ]
        )
        .double()
        .to(device)
    )
    g_b = problem.boundary(X_b)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        X = lo + (hi - lo) * torch.rand(n_col, problem.dim, dtype=torch.float64, device=device)
        X.requires_grad_(True)
        u = model(X)
        grad = torch.autograd.grad(u.sum(), X, create_graph=True)[0]
        derivs = {(): u}
        for key in problem.derivatives:
            if len(key) == 1:
                derivs[key] = grad[:, key[0]]
            elif len(key) == 2:
                derivs[key] = torch.autograd.grad(grad[:, key[0]].sum(), X, create_graph=True)[0][:, key[1]]
        r = problem.residual(derivs, X, problem.source(X.detach()))
        loss = (
            r.pow(2).mean() / problem.source(X.detach()).pow(2).mean().clamp_min(1.0)
            + 100 * (model(X_b) - g_b).pow(2).mean()
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - start
    Xe = _eval_points(problem).to(device)
    with torch.no_grad():
        return _rel_l2(model(Xe), problem.solution(Xe)), seconds


def scaling(bench, sizes_dense, sizes_kron, device="cpu"):
    """Seconds and memory of one loss + gradient evaluation, Kronecker vs dense, on n x n grids."""
    problem = Poisson.from_solution(lambda X: torch.sin(6 * X[:, 0]) * torch.sin(6 * X[:, 1]), _box(0, 1, 2))
    for n in sorted(set(sizes_dense) | set(sizes_kron)):
        solver = KroneckerPDESolver(
            problem, n, num_components=30, max_frequency=0.2 * (n - 1), jitter=1e-6
        ).to(device)
        rows = {}
        if n in sizes_kron:
            m = bench.measure(lambda s=solver: s.loss().backward(), repeats=2, warmup=1)
            rows["kronecker"] = m
        if n in sizes_dense:
            m = bench.measure(lambda s=solver: dense_negative_log_joint(s)[0].backward(), repeats=1, warmup=0)
            rows["dense"] = m
        for method, m in rows.items():
            bench.add(
                f"scaling {n}x{n} (N={n * n})",
                f"GP-HM {method}",
                seconds_per_iteration=m.seconds,
                peak_memory_mb=m.peak_memory_mb,
                grid_points=n * n,
            )


def main(bench):
    quick, device = bench.quick, bench.device
    all_cases = cases()
    if quick:
        all_cases = [all_cases[0]]
    budget = {
        "gp_1d": 300 if quick else 800,
        "gp_2d": 400,
        "baseline": 200,
        "rounds": 3,
        "pinn_1d": 200 if quick else 1000,
        "pinn_2d": 500,
        "grid_2d": 300,
    }
    for name, problem, grid, freq in all_cases:
        one_d = problem.dim == 1
        g = grid if one_d else min(grid, budget["grid_2d"])  # 400^2 grids shrunk to 300^2 on CPU
        width = (problem.bounds[1, 0] - problem.bounds[0, 0]).item()
        f = min(freq, 0.49 * (g - 1) / width)
        iters = budget["gp_1d"] if one_d else budget["gp_2d"]
        bench.add(name, "GP-HM", **run_gp(problem, g, f, "gm", iters, budget["rounds"], device=device))
        for kern_b, label in (("se", "GP-SE"), ("matern", "GP-Matern")):
            bench.add(
                name,
                label,
                **run_gp(problem, g, f, kern_b, budget["baseline"], budget["rounds"], device=device),
            )
        steps = budget["pinn_1d"] if one_d else budget["pinn_2d"]
        for rff, label in ((False, "PINN"), (True, "RFF-PINN")):
            err, sec = run_pinn(problem, g, f, steps, rff, device=device)
            bench.add(name, label, rel_l2=err, seconds=sec, iterations=steps)
    bench.compare("GP-HM", ["GP-SE", "GP-Matern", "PINN", "RFF-PINN"], ["rel_l2"])
    src = "Fang et al. 2024 reference logs (best of 21 checkpoints vs. the test solution, 100k Adam its)"
    bench.published("poisson2d sin100x sin100y", "GP-HM-GM reference (300^2)", src, rel_l2=4.7e-6)
    bench.published("poisson2d sin100x sin100y", "GP-HM-GM reference (200^2)", src, rel_l2=9.7e-4)
    bench.published("poisson1d sin6x cos100x", "GP-HM-StM reference (N=300)", src, rel_l2=3.9e-6)
    bench.published(
        "poisson1d sin(100x)",
        "GP-HM-StM reference (H200)",
        "spec: JAX reference code on an H200",
        rel_l2=3.2e-6,
        seconds=241,
        iterations=100000,
    )
    cuda = device.type == "cuda"
    if cuda and not quick:
        # the headline 2-D case on the reference's grid with a longer budget (GPU only)
        name, problem, grid, freq = cases()[7]
        for n, iters in ((400, 3000), (300, 3000)):
            bench.add(f"{name} @{n}^2", "GP-HM", **run_gp(problem, n, freq, "gm", iters, device=device))
    scaling(
        bench,
        sizes_dense=[8, 16] if quick else [8, 16, 24, 32, 40] + ([48, 56] if cuda else []),
        sizes_kron=[8, 16, 64]
        if quick
        else [8, 16, 24, 32, 40, 100, 200, 400] + ([600, 800] if cuda else []),
        device=device,
    )
    bench.note(
        f"Budgets: GP-HM (spectral mixture, Q=30, jitter 1e-9) {budget['gp_1d']} Adam iterations "
        f"in 1-D and {budget['gp_2d']} in 2-D (lr 1e-2, cosine schedule), then a residual-only finish: "
        f"{budget['rounds']} Gauss–Newton polish rounds (closed-form tau, v), or for linear 2-D problems the "
        f"collocation solve (Sylvester equation). GP-SE / GP-Matérn: {budget['baseline']} iterations + the same "
        f"finish. 2-D grids are capped at {budget['grid_2d']}^2 (the table's 400^2 cases run at 300^2), and "
        "max_frequency is capped at 0.49 x Nyquist. PINN / RFF-PINN: width 64, depth 3, Adam lr 1e-3, "
        f"{budget['pinn_1d']} (1-D) / {budget['pinn_2d']} (2-D) steps. Every error is the FINAL iterate, never a "
        "checkpoint chosen with the exact solution; rel_l2_adam_only is the same run before the finish step (the "
        "finish lowers the joint loss but can move a poorly fitted SE/Matérn GP to a worse solution). Scaling rows: one loss + gradient on an n x n grid; the Kronecker "
        "cost grows like N^1.5 (per-factor n^3 work and n x n by n x n products), the dense GP like N^3."
    )
