"""Synthetic GP regression/classification data with known latent function (no data folder needed)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .dataset import Dataset, random_split

KERNELS = ("rbf", "matern05", "matern15", "matern25", "rq")
LIKELIHOODS = ("gaussian", "studentt", "bernoulli", "poisson")


def kernel_module(kernel: str, lengthscale: torch.Tensor, outputscale: float = 1.0, alpha: float = 0.5):
    """The GPyTorch kernel for ``kernel`` with fixed ARD ``lengthscale`` (``d``) and ``outputscale``.

    :param kernel: one of ``"rbf"``, ``"matern05"``, ``"matern15"``, ``"matern25"``, ``"rq"``.
    :param alpha: shape of the rational-quadratic kernel.
    """
    from gpytorch.kernels import MaternKernel, RBFKernel, RQKernel, ScaleKernel

    d = lengthscale.numel()
    if kernel == "rbf":
        base = RBFKernel(ard_num_dims=d)
    elif kernel in ("matern05", "matern15", "matern25"):
        base = MaternKernel(nu={"matern05": 0.5, "matern15": 1.5, "matern25": 2.5}[kernel], ard_num_dims=d)
    elif kernel == "rq":
        base = RQKernel(ard_num_dims=d)
        base.alpha = alpha
    else:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    base.lengthscale = lengthscale.reshape(1, d)
    module = ScaleKernel(base)
    module.outputscale = outputscale
    return module.to(lengthscale)


def synthetic_gp(
    n: int = 1000,
    d: int = 2,
    kernel: str = "matern15",
    lengthscale: float | Sequence[float] | None = None,
    outputscale: float = 1.0,
    noise: float | None = None,
    seed: int = 0,
    likelihood: str = "gaussian",
    df: float = 2.0,
    alpha: float = 0.5,
    nugget: float = 1e-6,
    test_fraction: float = 0.2,
    dtype: torch.dtype = torch.float64,
) -> Dataset:
    """A draw from a GP prior observed through a likelihood (DKLGP simulation design).

    ``X ~ U[0, 1]^d``; ``f ~ N(0, K + nugget I)`` with ``K`` the scaled ``kernel`` Gram matrix; then
    ``gaussian``: ``y = f + sqrt(noise) e`` (``noise`` = variance, default 0.01);
    ``studentt``: ``y = f + noise * t_df`` (``noise`` = scale, default 0.1, ``df`` default 2);
    ``bernoulli``: ``y ~ Bernoulli(sigmoid(f))`` in {0., 1.}; ``poisson``: ``y ~ Poisson(exp(f))``.
    The DKLGP sim1 is ``synthetic_gp(2500, 5, "matern15")`` (lengthscales 0.25, 0.5, ..., 1.25).

    :param lengthscale: scalar or ``d`` values; default ``linspace(0.25, 1.25, d)``.
    :param seed: seeds both the inputs/latent draw and the noise (reproducible).
    :param test_fraction: share of the random test split (default 0.2: an 80/20 split).
    :return: :class:`Dataset` with ``X`` ``n x d``, ``y`` ``n``, ``extras["f"]`` the latent values and
        ``extras["covar_module"]`` the true kernel.
    """
    if n < 2 or d < 1:
        raise ValueError(f"n must be >= 2 and d >= 1, got n={n}, d={d}")
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
    # draw in float64 (a float32 Cholesky of a smooth Gram fails), then cast: same draw for every dtype
    out_dtype, dtype = dtype, torch.float64
    if lengthscale is None:
        ls = torch.linspace(0.25, 1.25, d, dtype=dtype) if d > 1 else torch.full((1,), 0.25, dtype=dtype)
    else:
        ls = torch.as_tensor(lengthscale, dtype=dtype).reshape(-1).expand(d).clone()
    if (ls <= 0).any():
        raise ValueError(f"lengthscale must be positive, got {ls.tolist()}")
    gen = torch.Generator().manual_seed(seed)
    X = torch.rand(n, d, generator=gen, dtype=dtype)
    covar = kernel_module(kernel, ls, outputscale, alpha)
    with torch.no_grad():
        K = covar(X).to_dense()
        K.diagonal().add_(nugget)
        f = torch.linalg.cholesky(K) @ torch.randn(n, generator=gen, dtype=dtype)
    if noise is None:
        noise = 0.1 if likelihood == "studentt" else 0.01
    if likelihood == "gaussian":
        y = f + noise**0.5 * torch.randn(n, generator=gen, dtype=dtype)
    elif likelihood == "studentt":
        # t = z / sqrt(chi2_df / df) with chi2_df = 2 * Gamma(df / 2)
        z = torch.randn(n, generator=gen, dtype=dtype)
        g = torch._standard_gamma(torch.full((n,), df / 2, dtype=dtype), generator=gen)
        y = f + noise * z / torch.sqrt(2 * g / df)
    elif likelihood == "bernoulli":
        y = (torch.rand(n, generator=gen, dtype=dtype) < torch.sigmoid(f)).to(dtype)
    else:
        y = torch.poisson(f.exp(), generator=gen).to(dtype)
    splits = random_split(n, test_fraction, seed=seed)
    extras = {
        "f": f,
        "covar_module": covar,
        "lengthscale": ls,
        "outputscale": outputscale,
        "noise": noise,
        "likelihood": likelihood,
        "kernel": kernel,
        "df": df,
        "seed": seed,
    }
    desc = (
        f"GP draw: X ~ U[0,1]^{d}, f ~ GP(0, {outputscale} * {kernel}(lengthscale={[round(v, 4) for v in ls.tolist()]})"
        f" + {nugget} I), {likelihood} observations; {round(100 * (1 - test_fraction))}/"
        f"{round(100 * test_fraction)} random split (seed {seed})."
    )
    extras.update(f=f.to(out_dtype), lengthscale=ls.to(out_dtype), covar_module=covar.to(out_dtype))
    return Dataset("synthetic-gp", X.to(out_dtype), y.to(out_dtype), splits, extras, desc)


def synthetic_classification(
    n: int = 1000,
    d: int = 2,
    num_classes: int = 3,
    kernel: str = "rbf",
    lengthscale: float = 0.3,
    seed: int = 0,
    test_fraction: float = 0.2,
    dtype: torch.dtype = torch.float64,
) -> Dataset:
    """Multi-class labels ``y = argmax_c f_c(x)`` for ``num_classes`` independent GP draws on ``U[0,1]^d``.

    :return: :class:`Dataset` with ``y`` long labels and ``extras["f"]`` the ``n x C`` latents.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    out_dtype, dtype = dtype, torch.float64
    gen = torch.Generator().manual_seed(seed)
    X = torch.rand(n, d, generator=gen, dtype=dtype)
    covar = kernel_module(kernel, torch.full((d,), float(lengthscale), dtype=dtype))
    with torch.no_grad():
        K = covar(X).to_dense()
        K.diagonal().add_(1e-6)
        f = torch.linalg.cholesky(K) @ torch.randn(n, num_classes, generator=gen, dtype=dtype)
    y = f.argmax(-1)
    extras = {"f": f.to(out_dtype), "num_classes": num_classes, "seed": seed}
    desc = f"{num_classes}-class labels argmax of independent GP draws ({kernel}, lengthscale {lengthscale})."
    return Dataset(
        "synthetic-classification", X.to(out_dtype), y, random_split(n, test_fraction, seed), extras, desc
    )
