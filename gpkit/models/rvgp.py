"""RVGP: exact GP regression of tangent vector fields on a point cloud's latent manifold (Peach et al., ICLR 2024)."""

from __future__ import annotations

import math

import gpytorch
import torch
from botorch.models.model import Model
from botorch.posteriors.gpytorch import GPyTorchPosterior
from linear_operator.operators import DiagLinearOperator, LowRankRootLinearOperator
from torch import Tensor

from gpkit.kernels.connection_laplacian_kernel import ConnectionLaplacianKernel
from gpkit.manifolds.geometry import ManifoldGeometry, positional_encodings
from gpkit.manifolds.graph import check_points
from gpkit.manifolds.spectrum import auto_num_eigenpairs, cluster_cut
from gpkit.models._woodbury import WoodburyNLL
from gpkit.neighbors import maximin_order

__all__ = ["RVGP"]

_JITTER = {torch.float64: 1e-8, torch.float32: 1e-5}


class RVGP(Model):
    r"""Gaussian process for a tangent vector field over the latent manifold of a point cloud.

    Pre-processing (:class:`~gpkit.manifolds.ManifoldGeometry`): kNN graph of all ``points``, local-PCA
    tangent frames, Procrustes connections, the connection Laplacian and its smallest eigenpairs (whole
    eigenvalue clusters). The prior is :class:`~gpkit.kernels.ConnectionLaplacianKernel`, rank ``k``, so
    with ``n`` training nodes in ``D`` dimensions exact inference is Woodbury in weight space: the Gram
    ``Phi^T Phi`` (``k x k``) is formed once in ``O(n D k^2)`` and each marginal-likelihood evaluation
    costs ``O(k^3)``; no ``nD x nD`` matrix is ever formed. The model is transductive: prediction is at
    graph nodes (indices into ``points``).

    ``gpkit.fit(model)`` maximises the exact marginal likelihood (``loss()``, full batch; Adam, lr 0.1,
    200 steps; L-BFGS stalls on this objective) over
    ``kappa``, ``nu``, ``outputscale`` and the noise variance.

    With ``num_inducing = m`` (the sparse variant) ``m`` training nodes chosen by maximin ordering act as
    inducing nodes (their ``d`` tangent coordinates are the inducing variables) and the loss is Titsias'
    collapsed bound: ``O(m d k^2 + (m d)^3)`` per step after the same ``O(n D k^2)`` Gram, worth it only
    when ``k`` is much larger than ``m d``; with ``m >= n`` and ``k >= n d`` it is the exact GP.

    :param points: ``N x D`` all nodes (training and test), finite.
    :param train_index: LongTensor ``n`` of distinct training nodes.
    :param train_vectors: ``n x D`` observed (ambient) vectors at those nodes.
    :param num_eigenpairs: basis size ``k`` (moved up to the end of its eigenvalue cluster). Default:
        :func:`~gpkit.manifolds.auto_num_eigenpairs` (``n * d``, at most ``max_eigenpairs``).
    :param num_neighbors: k of the kNN graph.
    :param dim: intrinsic dimension (default: estimated by local PCA).
    :param frames: ``N x D x d`` known tangent frames (instead of local PCA).
    :param spectrum: ``"matern"`` or ``"se"``.
    :param nu: initial Matérn smoothness.
    :param num_inducing: inducing nodes of the sparse variant (None: exact inference).
    :param likelihood: a ``GaussianLikelihood`` (default: a new one).
    :param max_eigenpairs: cap of the automatic basis size.
    :param geometry: a pre-built :class:`~gpkit.manifolds.ManifoldGeometry` of ``points`` to reuse
        (its eigenpairs too, if it has at least the wanted number: the leading ones up to a cluster end).
    """

    def __init__(
        self,
        points: Tensor,
        train_index: Tensor,
        train_vectors: Tensor,
        num_eigenpairs: int | None = None,
        num_neighbors: int = 10,
        dim: int | None = None,
        frames: Tensor | None = None,
        spectrum: str = "matern",
        nu: float = 1.5,
        num_inducing: int | None = None,
        likelihood: gpytorch.likelihoods.GaussianLikelihood | None = None,
        max_eigenpairs: int = 500,
        geometry: ManifoldGeometry | None = None,
    ) -> None:
        super().__init__()
        points = check_points(points, "points")
        train_index = self._check_index(train_index, points.shape[0], "train_index")
        train_vectors = self._check_vectors(train_vectors, train_index.numel(), points)
        if num_eigenpairs is not None and (
            isinstance(num_eigenpairs, bool) or not isinstance(num_eigenpairs, int) or num_eigenpairs < 1
        ):
            raise ValueError(f"num_eigenpairs must be None or a positive int, got {num_eigenpairs!r}")
        if num_inducing is not None and (isinstance(num_inducing, bool) or not isinstance(num_inducing, int) or num_inducing < 1):
            raise ValueError(f"num_inducing must be None or a positive int, got {num_inducing!r}")
        if isinstance(max_eigenpairs, bool) or not isinstance(max_eigenpairs, int) or max_eigenpairs < 1:
            raise ValueError(f"max_eigenpairs must be a positive int, got {max_eigenpairs!r}")
        if likelihood is not None and not isinstance(likelihood, gpytorch.likelihoods.GaussianLikelihood):
            raise TypeError(f"likelihood must be a gpytorch GaussianLikelihood, got {type(likelihood).__name__}")
        if geometry is None:
            geometry = ManifoldGeometry.from_points(points, num_neighbors, dim, frames)
        elif geometry.points.shape != points.shape or not torch.equal(geometry.points.to(points), points):
            raise ValueError("geometry was built on different points than points (rebuild it, or pass the same tensor)")
        n, d = train_index.numel(), geometry.dim
        k = num_eigenpairs or auto_num_eigenpairs(n, d, points.shape[0] * d, max_eigenpairs)
        k = min(k, points.shape[0] * d - 1)
        if geometry.eigenvalues is None or geometry.eigenvalues.numel() < k:
            geometry.compute_eigenpairs(k)
        # a reused geometry may hold more pairs than asked: keep the leading ones up to a cluster end (when
        # enough of the spectrum beyond k is known to see the cluster's end; else all of them)
        held = geometry.eigenvalues.numel()
        k = cluster_cut(geometry.eigenvalues.cpu().numpy(), k) if held >= k + 16 else held
        self.geometry = geometry
        scale = float(train_vectors.square().sum(-1).mean()) / d  # mean squared tangent coordinate
        self.covar_module = ConnectionLaplacianKernel(
            positional_encodings(geometry.frames, geometry.eigenvectors[:, :k]), geometry.eigenvalues[:k],
            spectrum, nu=nu, outputscale=max(scale, 1e-12),
        )
        self.likelihood = likelihood or gpytorch.likelihoods.GaussianLikelihood(
            noise_constraint=gpytorch.constraints.GreaterThan(1e-6 * max(scale, 1e-12))
        )
        if likelihood is None:
            self.likelihood.noise = 0.05 * max(scale, 1e-12)
        self.likelihood.to(points)
        self.points = points
        self.register_buffer("train_index", train_index)
        self.register_buffer("train_vectors", train_vectors)
        y = train_vectors.reshape(-1)  # shape: (n D,), node-major
        Phi = self.covar_module.features(train_index)  # shape: (n D, k)
        self.register_buffer("_gram", Phi.T @ Phi)  # shape: (k, k)
        self.register_buffer("_Phi_y", Phi.T @ y)  # shape: (k,)
        self._yy, self._num_obs = float(y @ y), y.numel()
        self.inducing_index = None
        if num_inducing is not None:
            order, _ = maximin_order(points[train_index], duplicates="ignore")
            self.inducing_index = train_index[order[: min(num_inducing, n)]]
            # inducing variables: the field's tangent coordinates T_z^T f_z (the normal part has no variance)
            Tz, Pz = geometry.frames[self.inducing_index], self.covar_module.encodings[self.inducing_index]
            self.register_buffer("_Phi_z", (Tz.transpose(1, 2) @ Pz).reshape(-1, Pz.shape[-1]))  # shape: (m d, k)
        self.fit_defaults = {"optimizer": "adam", "lr": 0.1, "max_iter": 200, "tol": 1e-6, "patience": 20}

    # ------------------------------------------------------------------ input checks
    @staticmethod
    def _check_index(index: Tensor, num_nodes: int, name: str) -> Tensor:
        if not isinstance(index, Tensor):
            raise TypeError(f"{name} must be a LongTensor, got {type(index).__name__}")
        if index.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"{name} must be a LongTensor of node indices, got dtype {index.dtype}")
        if index.dim() != 1 or index.numel() == 0:
            raise ValueError(f"{name} must be a non-empty 1-D tensor, got shape {tuple(index.shape)}")
        if int(index.min()) < 0 or int(index.max()) >= num_nodes:
            raise IndexError(f"{name} has entries outside [0, {num_nodes}) (the rows of points)")
        if torch.unique(index).numel() != index.numel():
            raise ValueError(f"{name} has repeated entries; each training node may appear once")
        return index.long()

    @staticmethod
    def _check_vectors(vectors: Tensor, n: int, points: Tensor) -> Tensor:
        if not isinstance(vectors, Tensor):
            raise TypeError(f"train_vectors must be a torch.Tensor, got {type(vectors).__name__}")
        if vectors.shape != (n, points.shape[1]):
            raise ValueError(
                f"train_vectors must be n_train x D = {n} x {points.shape[1]} (one ambient vector per "
                f"train_index entry), got {tuple(vectors.shape)}"
            )
        if not torch.isfinite(vectors).all():
            raise ValueError("train_vectors contains NaN or inf")
        return vectors.to(points)

    def _query_index(self, index: Tensor, name: str = "index") -> Tensor:
        if not isinstance(index, Tensor):
            raise TypeError(f"{name} must be a LongTensor of node indices, got {type(index).__name__}")
        if index.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"{name} must be a LongTensor of node indices, got dtype {index.dtype}")
        if index.dim() == 0 or index.shape[-1] == 0:
            raise ValueError(f"{name} must have shape (..., q) with q >= 1, got {tuple(index.shape)}")
        N = self.points.shape[0]
        if int(index.min()) < 0 or int(index.max()) >= N:
            raise IndexError(f"{name} has entries outside [0, {N}) (the rows of points)")
        return index.long().to(self.points.device)

    # ------------------------------------------------------------------ inference
    @property
    def num_outputs(self) -> int:
        return 1

    @property
    def num_eigenpairs(self) -> int:
        return self.covar_module.eigenvalues.numel()

    def _weights(self) -> dict:
        """Whitened weight-space posterior: features ``F`` of the training data (``A = Phi sqrt(s)``, or
        ``K_xz L_z^{-T}`` for inducing nodes), capacitance ``C = I + F^T F / sigma^2 = L L^T``, ``F^T y``."""
        s = self.covar_module.spectral_weights()  # shape: (k,)
        noise = self.likelihood.noise.squeeze()
        r = s.sqrt()
        if self.inducing_index is None:
            FtF = r[:, None] * self._gram * r
            Fty = r * self._Phi_y
            extra = {}
        else:
            B = self._Phi_z * s  # shape: (m d, k); K_zz = B Phi_z^T
            Kzz = B @ self._Phi_z.T
            Lz = torch.linalg.cholesky(Kzz + _JITTER[s.dtype] * Kzz.diagonal().mean() * torch.eye(Kzz.shape[0]).to(s))
            FtF = torch.linalg.solve_triangular(Lz, torch.linalg.solve_triangular(Lz, B @ self._gram @ B.T, upper=False).T, upper=False)
            Fty = torch.linalg.solve_triangular(Lz, (B @ self._Phi_y).unsqueeze(-1), upper=False).squeeze(-1)
            extra = {"Lz": Lz, "trace_gap": (s * self._gram.diagonal()).sum() - FtF.diagonal().sum()}
        C = torch.eye(FtF.shape[0]).to(FtF) + FtF / noise
        L = torch.linalg.cholesky(C)
        v = torch.linalg.solve_triangular(L, Fty.unsqueeze(-1), upper=False).squeeze(-1)
        return {"s": s, "noise": noise, "L": L, "v": v, **extra}

    def loss(self) -> Tensor:
        """Negative exact log marginal likelihood per observed coordinate (incl. 0.5 log 2 pi); for the sparse
        variant the negative collapsed bound."""
        if self.inducing_index is None:
            r = self.covar_module.spectral_weights().sqrt()
            return WoodburyNLL.apply(r, self.likelihood.noise.squeeze(), self._gram, self._Phi_y, self._yy, self._num_obs)
        w = self._weights()
        m, noise = self._num_obs, w["noise"]
        quad = (self._yy - w["v"].square().sum() / noise) / noise
        logdet = m * torch.log(noise) + 2 * torch.log(w["L"].diagonal()).sum()
        nll = 0.5 * (quad + logdet + m * math.log(2 * math.pi)) + 0.5 * w["trace_gap"] / noise
        return nll / m

    def _test_features(self, index: Tensor, w: dict) -> tuple[Tensor, Tensor | None]:
        """Test features in the whitened weight space and (sparse variant) the root of ``K_** - Q_**``."""
        A = self.covar_module.root(index)  # shape: (..., q D, k)
        if self.inducing_index is None:
            return A, None
        Az = self._Phi_z * w["s"].sqrt()  # shape: (m d, k)
        Kxz = A @ Az.T
        F = torch.linalg.solve_triangular(w["Lz"], Kxz.transpose(-1, -2), upper=False).transpose(-1, -2)
        G = torch.linalg.solve_triangular(w["Lz"], Az, upper=False)  # shape: (m d, k)
        return F, A - (A @ G.T) @ G

    def posterior(
        self, X: Tensor, output_indices=None, observation_noise: bool = False, posterior_transform=None, **kwargs
    ) -> GPyTorchPosterior:
        """Joint Gaussian posterior of the vectors at nodes ``X`` (a LongTensor ``(..., q)``), flattened
        node-major to ``q D`` outputs (event shape ``q D x 1``) with full covariance (low rank).

        :param observation_noise: add the learned noise variance.
        """
        index = self._query_index(X, "X")
        w = self._weights()
        F, resid = self._test_features(index, w)
        mean = (F @ torch.linalg.solve_triangular(w["L"].T, w["v"].unsqueeze(-1), upper=True)).squeeze(-1) / w["noise"]
        root = torch.linalg.solve_triangular(w["L"], F.transpose(-1, -2), upper=False).transpose(-1, -2)
        if resid is not None:
            root = torch.cat([root, resid], -1)
        covar = LowRankRootLinearOperator(root)
        if observation_noise:
            covar = covar + DiagLinearOperator(w["noise"].expand(mean.shape))
        posterior = GPyTorchPosterior(gpytorch.distributions.MultivariateNormal(mean, covar))
        return posterior_transform(posterior) if posterior_transform is not None else posterior

    @torch.no_grad()
    def predict(self, index: Tensor) -> Tensor:
        """Posterior mean vectors at nodes ``index`` (``q``): ``q x D``, tangent to the frames."""
        index = self._query_index(index)
        if index.dim() != 1:
            raise ValueError(f"index must be 1-D, got shape {tuple(index.shape)}")
        return self.posterior(index).mean.reshape(index.numel(), -1)

    @torch.no_grad()
    def marginals(self, index: Tensor, observation_noise: bool = True) -> tuple[Tensor, Tensor]:
        """Per-node predictive mean ``q x D`` and ``D x D`` covariance blocks ``q x D x D`` (with the noise
        added when ``observation_noise``)."""
        index = self._query_index(index)
        D = self.points.shape[1]
        post = self.posterior(index)
        root = post.distribution.lazy_covariance_matrix.root.to_dense()  # shape: (q D, r)
        R = root.reshape(index.numel(), D, -1)
        cov = R @ R.transpose(-1, -2)
        if observation_noise:
            cov = cov + self.likelihood.noise.squeeze() * torch.eye(D).to(cov)
        return post.mean.reshape(index.numel(), D), cov
