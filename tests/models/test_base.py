"""VariationalGPModel (the BoTorch base of gpkit's variational models), exercised through SWSGP."""

import copy
import warnings

import gpytorch
import pytest
import torch
from botorch.exceptions.warnings import InputDataWarning
from botorch.models.transforms.input import Normalize
from botorch.models.transforms.outcome import Standardize
from botorch.posteriors.gpytorch import GPyTorchPosterior
from botorch.utils.testing import BotorchTestCase

import gpkit
from gpkit.models import SWSGP
from gpkit.models.base import ConditionedVariationalGP, VariationalGPModel


def _data(n=60, d=2, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, d, generator=g, dtype=dtype)
    Y = torch.sin(6 * X[:, :1]) * torch.cos(3 * X[:, 1:2]) + 0.05 * torch.randn(n, 1, generator=g, dtype=dtype)
    return X, Y


def _model(X, Y, **kw):
    kw.setdefault("num_inducing", 30)
    kw.setdefault("num_neighbors", 30)
    return SWSGP(X, Y, **kw)


class TestVariationalGPModel(BotorchTestCase):
    def test_is_a_botorch_and_gpytorch_model(self):
        X, Y = _data()
        model = _model(X, Y)
        self.assertIsInstance(model, VariationalGPModel)
        self.assertIsInstance(model, gpytorch.models.ApproximateGP)
        self.assertEqual(model.num_outputs, 1)
        self.assertEqual(model.batch_shape, torch.Size([]))
        self.assertIs(model.subset_output([0]), model)
        with self.assertRaisesRegex(ValueError, "single output"):
            model.subset_output([1])
        with self.assertRaisesRegex(ValueError, "output_indices"):
            model.posterior(X[:2], output_indices=[1])

    def test_posterior_shapes(self):
        X, Y = _data()
        model = _model(X, Y)
        for shape in [(4, 2), (3, 4, 2), (2, 3, 1, 2)]:
            post = model.posterior(torch.rand(shape, dtype=X.dtype))
            self.assertIsInstance(post, GPyTorchPosterior)
            self.assertEqual(post.mean.shape, (*shape[:-1], 1))
        noise = torch.full((3, 4, 1), 0.5, dtype=X.dtype)
        Xt = torch.rand(3, 4, 2, dtype=X.dtype)
        latent, noisy = model.posterior(Xt), model.posterior(Xt, observation_noise=noise)
        # an explicit noise is in the outcome-transformed space
        scale = model.outcome_transform.stdvs.squeeze() ** 2
        self.assertAllClose(noisy.variance - latent.variance, 0.5 * scale.expand(3, 4, 1))

    def test_bad_arguments(self):
        X, Y = _data()
        with self.assertRaisesRegex(TypeError, "likelihood"):
            _model(X, Y, likelihood="gaussian")
        with self.assertRaisesRegex(TypeError, "covar_module"):
            _model(X, Y, covar_module="matern")
        with self.assertRaisesRegex(TypeError, "outcome_transform"):
            _model(X, Y, outcome_transform="standardize")
        with self.assertRaisesRegex(TypeError, "train_X"):
            _model(X.long(), Y)
        with self.assertRaisesRegex(ValueError, "train_Y"):
            _model(X, Y[:-1])
        with self.assertRaisesRegex(ValueError, "train_X"):
            _model(X[:0], Y[:0])
        model = _model(X, Y)
        with self.assertRaisesRegex(ValueError, "X must"):
            model.posterior(torch.rand(3))
        with self.assertRaisesRegex(ValueError, "Y must"):
            model.condition_on_observations(X[:2], Y[:3])

    def test_dtypes_and_detached_inputs(self):
        X, Y = _data()
        model = _model(X.float(), Y)  # float32 X, float64 Y: promoted to float64
        self.assertEqual(model.train_inputs[0].dtype, torch.float64)
        post = model.posterior(X[:3].float())
        self.assertEqual(post.mean.dtype, torch.float64)
        self.assertTrue(torch.isfinite(post.variance).all())
        Xg, Yg = X.clone().requires_grad_(True), Y.clone().requires_grad_(True)
        model = _model(Xg, Yg)
        self.assertFalse(model.train_inputs[0].requires_grad or model.train_targets.requires_grad)
        gpkit.fit(model, max_iter=3)
        self.assertIsNone(Xg.grad)
        model = _model(X.float(), Y.float())
        self.assertEqual(model.posterior(X[:2]).mean.dtype, torch.float32)

    def test_input_and_outcome_transforms(self):
        X, Y = _data()
        lo, hi = torch.tensor([-50.0, 10.0], dtype=X.dtype), torch.tensor([50.0, 30.0], dtype=X.dtype)
        raw_X = lo + (hi - lo) * X
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = _model(raw_X, 1e3 * Y + 7, input_transform=Normalize(d=2, bounds=torch.stack([lo, hi])), outcome_transform=Standardize(m=1))
        self.assertFalse([w for w in caught if issubclass(w.category, InputDataWarning)])
        self.assertAllClose(model.train_inputs[0], X, atol=1e-12)  # Normalize with the given bounds
        ref = _model(X, Y)
        Xt = torch.rand(5, 2, dtype=X.dtype)
        post, post_ref = model.posterior(lo + (hi - lo) * Xt), ref.posterior(Xt)
        self.assertAllClose(post.mean, 1e3 * post_ref.mean + 7, rtol=1e-8)
        self.assertAllClose(post.variance, 1e6 * post_ref.variance, rtol=1e-8)
        with self.assertWarns(InputDataWarning):
            _model(raw_X * 1e3, Y)

    def test_condition_on_observations_is_exact_gaussian_conditioning(self):
        X, Y = _data()
        model = _model(X, Y)
        Xn = torch.rand(3, 2, dtype=X.dtype)
        Yn = torch.randn(3, 1, dtype=X.dtype)
        cond = model.condition_on_observations(Xn, Yn)
        self.assertIsInstance(cond, ConditionedVariationalGP)
        Xt = torch.rand(4, 2, dtype=X.dtype)
        # dense reference in model space: the joint latent over [Xn, Xt], then condition on (Xn, Yn)
        model.eval()
        joint = model(torch.cat([Xn, Xt]))
        m, K = joint.mean, joint.covariance_matrix
        tf = model.outcome_transform
        y = ((Yn - tf.means) / tf.stdvs).squeeze(-1)
        A = K[:3, :3] + model.likelihood.noise * torch.eye(3, dtype=X.dtype)
        mean = m[3:] + K[3:, :3] @ torch.linalg.solve(A, y - m[:3])
        cov = K[3:, 3:] - K[3:, :3] @ torch.linalg.solve(A, K[:3, 3:])
        post = cond.posterior(Xt)
        self.assertAllClose(post.mean.squeeze(-1), tf.means.squeeze() + tf.stdvs.squeeze() * mean, atol=1e-8)
        self.assertAllClose(post.distribution.covariance_matrix, tf.stdvs.squeeze() ** 2 * cov, atol=1e-8)
        # conditioning twice equals conditioning once on both
        twice = cond.condition_on_observations(Xt[:2], Yn[:2])
        once = model.condition_on_observations(torch.cat([Xn, Xt[:2]]), torch.cat([Yn, Yn[:2]]))
        self.assertAllClose(twice.posterior(Xt).mean, once.posterior(Xt).mean, atol=1e-8)
        # batched fantasies: Y with a leading sample dimension
        Yf = torch.randn(5, 3, 1, dtype=X.dtype)
        fant = model.condition_on_observations(Xn, Yf)
        self.assertEqual(fant.batch_shape, torch.Size([5]))
        self.assertEqual(fant.posterior(Xt).mean.shape, (5, 4, 1))
        self.assertAllClose(fant.posterior(Xt).mean[2], model.condition_on_observations(Xn, Yf[2]).posterior(Xt).mean)

    def test_state_dict_round_trip_and_deepcopy(self):
        X, Y = _data()
        model = gpkit.fit(_model(X, Y), max_iter=30)
        fresh = _model(X, Y)
        fresh.load_state_dict(model.state_dict())
        Xt = torch.rand(6, 2, dtype=X.dtype)
        self.assertAllClose(fresh.posterior(Xt).mean, model.posterior(Xt).mean)
        clone = copy.deepcopy(model)
        self.assertAllClose(clone.posterior(Xt).variance, model.posterior(Xt).variance)


@pytest.mark.accuracy
@pytest.mark.parametrize("scale", [1e-8, 1e6])
def test_targets_of_any_scale_predict_well(scale):
    X, Y = _data(n=80)
    Xt, Yt = _data(n=100, seed=1)
    torch.manual_seed(0)
    model = gpkit.fit(_model(X, scale * Y + 3 * scale), max_iter=300, lr=0.03)
    post = model.posterior(Xt)
    err = (post.mean - (scale * Yt + 3 * scale)).pow(2).mean().sqrt() / (scale * Yt).std()
    assert err < 0.2
    z = (post.mean - scale * Yt - 3 * scale).abs() / model.posterior(Xt, observation_noise=True).variance.sqrt()
    assert (z < 3).float().mean() > 0.9
    # internally standardised: the same fit as on unit-scale targets
    torch.manual_seed(0)
    unit = gpkit.fit(_model(X, Y + 3), max_iter=300, lr=0.03)
    assert torch.allclose(post.mean / scale, unit.posterior(Xt).mean, rtol=1e-6, atol=1e-6)
