"""NearestInducingVariationalStrategy and LocalCholeskyVariationalDistribution against their exact limits."""

import gpytorch
import pytest
import torch
from gpytorch.variational import CholeskyVariationalDistribution, UnwhitenedVariationalStrategy

from gpkit.models import SWSGP
from gpkit.variational import LocalCholeskyVariationalDistribution, NearestInducingVariationalStrategy


def _data(n=40, d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, d, generator=g)
    Y = torch.sin(6 * X.sum(-1, keepdim=True)) + 0.1 * torch.randn(n, 1, generator=g)
    return X, Y


def _random_q(model, seed=1, scale=0.3):
    """Random mean and a random factor on the stored pattern."""
    g = torch.Generator().manual_seed(seed)
    q = model.variational_strategy.local_distribution
    with torch.no_grad():
        q.variational_mean.copy_(torch.randn(q.num_inducing, generator=g))
        q.log_diag.copy_(0.3 * torch.randn(q.num_inducing, generator=g) - 0.5)
        q.off_diag.copy_(scale * torch.randn(q.off_diag.shape, generator=g) * q.factor_mask)
    return q


class _SVGP(gpytorch.models.ApproximateGP):
    """GPyTorch's unwhitened SVGP with the same prior as SWSGP's default."""

    def __init__(self, Z):
        q = CholeskyVariationalDistribution(Z.size(0))
        super().__init__(UnwhitenedVariationalStrategy(self, Z, q, learn_inducing_locations=True))
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.MaternKernel(nu=2.5, ard_num_dims=Z.size(-1)))

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def _svgp_like(model):
    q = model.variational_strategy.local_distribution
    ref = _SVGP(model.variational_strategy.inducing_points.detach().clone())
    ref.load_state_dict({"covar_module." + k: v for k, v in model.covar_module.state_dict().items()}, strict=False)
    with torch.no_grad():
        ref.mean_module.constant.copy_(model.mean_module.constant)
        ref.variational_strategy._variational_distribution.variational_mean.copy_(q.variational_mean)
        ref.variational_strategy._variational_distribution.chol_variational_covar.copy_(q.to_dense())
        ref.variational_strategy.variational_params_initialized.fill_(1)
    return ref


def test_factor_is_the_sub_block_of_the_sparse_factor():
    Z = torch.rand(30, 2)
    q = LocalCholeskyVariationalDistribution(30, 4)
    q.set_pattern(Z)
    with torch.no_grad():
        q.off_diag.copy_(torch.randn(q.off_diag.shape))
        q.log_diag.copy_(torch.randn(30))
    dense = q.to_dense()
    assert torch.equal(dense, dense.tril())
    assert int(dense.tril(-1).ne(0).sum()) == int(q.factor_mask.sum())  # only stored entries are non-zero
    index = torch.tensor([[1, 4, 7, 20], [0, 2, 3, 29]])
    block = q.factor(index)
    for b in range(2):
        assert torch.allclose(block[b], dense[index[b]][:, index[b]])
    mask = torch.tensor([[True, True, False, True], [True] * 4])
    masked = q.factor(index, mask)
    assert torch.allclose(masked[0, 2], torch.eye(4)[2]) and torch.allclose(masked[0, :, 2], torch.eye(4)[2])


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_h_equals_m_matches_unwhitened_svgp(likelihood):
    X, Y = _data()
    M = 12
    if likelihood == "bernoulli":
        Y, lik = (Y > 0).to(Y), gpytorch.likelihoods.BernoulliLikelihood()
    else:
        lik = gpytorch.likelihoods.GaussianLikelihood()
    model = SWSGP(X, Y, outcome_transform=None, likelihood=lik, num_inducing=M, num_neighbors=M, num_factor_neighbors=M - 1)
    with torch.no_grad():
        model.covar_module.base_kernel.lengthscale = torch.tensor([[0.3, 0.5]])
        model.mean_module.constant.fill_(0.2)
    _random_q(model)
    ref = _svgp_like(model)
    model.train(), ref.train()
    batch = torch.arange(0, 40, 3)
    y = Y.squeeze(-1)
    elbo = gpytorch.mlls.VariationalELBO(lik, model, num_data=40)(model(X[batch]), y[batch])
    elbo_ref = gpytorch.mlls.VariationalELBO(lik, ref, num_data=40)(ref(X[batch]), y[batch])
    assert torch.allclose(elbo, elbo_ref, rtol=1e-9, atol=1e-9)
    assert torch.allclose(model.batch_loss(batch), -elbo, rtol=1e-9)
    model.eval(), ref.eval()
    Xt = torch.rand(5, 2)
    joint, joint_ref = model(Xt), ref(Xt)  # 5 * H <= max_joint_inducing: joint covariance
    assert torch.allclose(joint.mean, joint_ref.mean, atol=1e-9)
    assert torch.allclose(joint.covariance_matrix, joint_ref.covariance_matrix, atol=1e-9)
    Xt = torch.rand(200, 2)
    marg, marg_ref = model(Xt), ref(Xt)  # many inputs: exact marginals
    assert torch.allclose(marg.mean, marg_ref.mean, atol=1e-9)
    assert torch.allclose(marg.variance, marg_ref.variance, atol=1e-9)


def test_exact_gp_limit_with_optimal_q():
    X, Y = _data(n=25)
    y = Y.squeeze(-1)
    n = X.size(0)
    model = SWSGP(X, Y, outcome_transform=None, num_inducing=n, num_neighbors=n, num_factor_neighbors=n - 1,
                  inducing_points=X, likelihood=gpytorch.likelihoods.GaussianLikelihood())  # no noise prior
    model.variational_strategy.jitter_val = 1e-12
    noise = 0.05
    with torch.no_grad():
        model.likelihood.noise = noise
        model.covar_module.base_kernel.lengthscale = 0.4
        model.mean_module.constant.fill_(0.1)
    # optimal q(u) = p(f | y) when Z = X
    K = model.covar_module(X).to_dense()
    A = K + noise * torch.eye(n)
    mean = 0.1 + K @ torch.linalg.solve(A, y - 0.1)
    S = K - K @ torch.linalg.solve(A, K)
    q = model.variational_strategy.local_distribution
    q.load_dense(torch.linalg.cholesky(S))
    with torch.no_grad():
        q.variational_mean.copy_(mean)
    model.train()
    elbo = gpytorch.mlls.VariationalELBO(model.likelihood, model, num_data=n)(model(X), y)
    exact_lml = torch.distributions.MultivariateNormal(0.1 * torch.ones(n), A).log_prob(y) / n
    assert torch.allclose(elbo, exact_lml, rtol=1e-6)
    # predictions equal the exact GP posterior
    model.eval()
    Xt = torch.rand(4, 2)
    pred = model(Xt)
    Kt = model.covar_module(Xt, X).to_dense()
    exact_mean = 0.1 + Kt @ torch.linalg.solve(A, y - 0.1)
    exact_cov = model.covar_module(Xt).to_dense() - Kt @ torch.linalg.solve(A, Kt.T)
    assert torch.allclose(pred.mean, exact_mean, atol=1e-6)
    assert torch.allclose(pred.covariance_matrix, exact_cov, atol=1e-6)


def test_per_point_marginals_and_kl_with_h_less_than_m():
    X, Y = _data()
    model = SWSGP(X, Y, outcome_transform=None, num_inducing=20, num_neighbors=5)
    q = _random_q(model)
    vs = model.variational_strategy
    vs.jitter_val = 1e-8
    Xb = torch.rand(7, 2)
    model.train()
    out = model(Xb)
    idx = vs.neighbors(Xb)
    Z = vs.inducing_points.detach()
    # each input's neighbours are its 5 nearest inducing points
    assert torch.equal(idx, torch.cdist(Xb, Z).topk(5, largest=False).indices.sort(-1).values)
    L = q.to_dense()
    kls = []
    for i in range(7):
        a = idx[i]
        Kaa = model.covar_module(Z[a]).to_dense() + vs.jitter_val * torch.eye(5)
        kia = model.covar_module(Xb[i : i + 1], Z[a]).to_dense()
        mu = model.mean_module.constant
        La = L[a][:, a]
        interp = torch.linalg.solve(Kaa, kia.T)
        mean = mu + interp.T @ (q.variational_mean[a] - mu)
        var = model.covar_module(Xb[i : i + 1]).to_dense() - kia @ interp + interp.T @ La @ La.T @ interp
        assert torch.allclose(out.mean[i], mean.squeeze(), atol=1e-10)
        assert torch.allclose(out.variance[i], var.squeeze(), atol=1e-10)
        qd = torch.distributions.MultivariateNormal(q.variational_mean[a], scale_tril=La)
        pd = torch.distributions.MultivariateNormal(mu.expand(5), Kaa)
        kls.append(torch.distributions.kl_divergence(qd, pd))
    assert torch.allclose(vs.kl_divergence(), torch.stack(kls).mean(), rtol=1e-8)


def test_joint_prediction_uses_union_of_neighbour_sets():
    X, Y = _data()
    model = SWSGP(X, Y, outcome_transform=None, num_inducing=20, num_neighbors=4)
    q = _random_q(model)
    vs = model.variational_strategy
    vs.jitter_val = 1e-8
    model.eval()
    Xq = torch.rand(3, 2)
    out = model(Xq)
    union = vs.neighbors(Xq).flatten().unique()  # sorted
    Z, L = vs.inducing_points.detach(), q.to_dense()
    mu = model.mean_module.constant
    Kuu = model.covar_module(Z[union]).to_dense() + vs.jitter_val * torch.eye(union.numel())
    Kxu = model.covar_module(Xq, Z[union]).to_dense()
    interp = torch.linalg.solve(Kuu, Kxu.T)
    Lu = L[union][:, union]
    mean = mu + interp.T @ (q.variational_mean[union] - mu)
    cov = model.covar_module(Xq).to_dense() - Kxu @ interp + interp.T @ Lu @ Lu.T @ interp
    assert torch.allclose(out.mean, mean, atol=1e-10)
    assert torch.allclose(out.covariance_matrix, cov, atol=1e-10)
    # a single input gets the same marginal jointly and alone
    single = model(Xq[1:2])
    model.variational_strategy.max_joint_inducing = 0  # force per-input marginals
    assert torch.allclose(model(Xq[1:2]).variance, single.variance, atol=1e-12)


def test_gradients_match_finite_differences():
    X, Y = _data(n=30)
    model = SWSGP(X, Y, outcome_transform=None, num_inducing=15, num_neighbors=4)
    _random_q(model)
    model.refresh_neighbors()  # fixed neighbour sets: the loss is smooth in every parameter
    batch = torch.arange(0, 30, 2)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("inducing_points" in n for n in names) and any("local_rows" in n for n in names)
    loss = model.batch_loss(batch)
    grads = torch.autograd.grad(loss, params)
    g = torch.Generator().manual_seed(3)
    directions = [torch.randn(p.shape, generator=g) for p in params]
    eps = 1e-6
    with torch.no_grad():
        for p, v in zip(params, directions):
            p.add_(eps * v)
        up = model.batch_loss(batch)
        for p, v in zip(params, directions):
            p.sub_(2 * eps * v)
        down = model.batch_loss(batch)
        for p, v in zip(params, directions):
            p.add_(eps * v)
    fd = (up - down) / (2 * eps)
    analytic = sum((gr * v).sum() for gr, v in zip(grads, directions))
    assert torch.allclose(fd, analytic, rtol=1e-5, atol=1e-8)
    assert all(torch.isfinite(gr).all() and gr.abs().sum() > 0 for gr in grads)


def test_batch_shapes():
    X, Y = _data()
    model = SWSGP(X, Y, outcome_transform=None, num_inducing=20, num_neighbors=4)
    model.train()
    out = model(torch.rand(2, 3, 6, 2))
    assert out.mean.shape == (2, 3, 6) and out.variance.shape == (2, 3, 6)
    assert model.variational_strategy.kl_divergence().shape == (2, 3)
    model.eval()
    out = model(torch.rand(5, 3, 2))
    assert out.mean.shape == (5, 3) and out.covariance_matrix.shape == (5, 3, 3)
    assert (torch.linalg.eigvalsh(out.covariance_matrix) > -1e-10).all()


def test_bad_arguments():
    Z = torch.rand(10, 2)
    q = LocalCholeskyVariationalDistribution(10, 3)
    with pytest.raises(ValueError, match="num_neighbors"):
        NearestInducingVariationalStrategy(None, Z, q, num_neighbors=11)
    with pytest.raises(ValueError, match="inducing points"):
        NearestInducingVariationalStrategy(None, torch.rand(9, 2), q, num_neighbors=3)
    with pytest.raises(ValueError, match="num_inducing"):
        LocalCholeskyVariationalDistribution(0, 3)
    with pytest.raises(ValueError, match="pattern"):
        q.load_dense(torch.ones(10, 10).tril())


def test_position_table_matches_binary_search(monkeypatch):
    """LocalCholeskyVariationalDistribution.local finds stored columns with a position table (small batches)
    or a binary search (large ones): the same blocks, padding and gradients either way."""
    from gpkit.variational import local_cholesky_variational_distribution as lcvd

    g = torch.Generator().manual_seed(0)
    M, K = 60, 6
    q = LocalCholeskyVariationalDistribution(M, K)
    q.set_pattern(torch.rand(M, 2, generator=g))
    with torch.no_grad():
        q.off_diag.copy_(torch.randn(q.off_diag.shape, generator=g))
        q.log_diag.copy_(torch.randn(M, generator=g))
    # three active sets of 8 (sorted): the first holds rows 0-2 (whose unused slots point at no column),
    # the last has padding (its largest entry repeated) masked out
    index = torch.stack([torch.randperm(M, generator=g)[:8].sort().values for _ in range(3)]).view(3, 1, 8)
    index[0, 0] = torch.cat([torch.arange(3), torch.randperm(M - 3, generator=g)[:5].sort().values + 3])
    index[2, 0, 5:] = index[2, 0, 4]
    mask = torch.ones(3, 1, 8, dtype=torch.bool)
    mask[2, 0, 5:] = False
    weights = torch.randn(3, 1, 8, 8, generator=g)
    out = {}
    for name, size in (("table", lcvd._TABLE_SIZE), ("search", 0)):
        monkeypatch.setattr(lcvd, "_TABLE_SIZE", size)
        q.zero_grad()
        mean, factor = q.local(index, mask)
        (factor * weights).sum().backward()
        out[name] = (mean.detach(), factor.detach(), q.local_rows.grad.clone())
    for a, b in zip(out["table"], out["search"]):
        assert torch.equal(a, b)
    dense = q.to_dense().detach()
    for i in range(2):  # the unpadded sets are sub-blocks of the full factor
        assert torch.equal(out["table"][1][i, 0], dense[index[i, 0]][:, index[i, 0]])
    assert int(out["table"][1].tril(-1).ne(0).sum()) > 0  # stored off-diagonal entries were found
