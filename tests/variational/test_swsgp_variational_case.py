"""NearestInducingVariationalStrategy + LocalCholeskyVariationalDistribution in GPyTorch's VariationalTestCase."""

import unittest
from functools import partial

import gpytorch
import torch
from gpytorch.test.variational_test_case import VariationalTestCase

from gpkit.variational import LocalCholeskyVariationalDistribution, NearestInducingVariationalStrategy


class TestNearestInducingVariationalStrategy(VariationalTestCase, unittest.TestCase):
    @property
    def batch_shape(self):
        return torch.Size([])

    @property
    def distribution_cls(self):
        return partial(LocalCholeskyVariationalDistribution, num_factor_neighbors=3)

    @property
    def strategy_cls(self):
        return partial(NearestInducingVariationalStrategy, num_neighbors=6)

    @property
    def likelihood_cls(self):
        return gpytorch.likelihoods.GaussianLikelihood

    @property
    def mll_cls(self):
        return gpytorch.mlls.VariationalELBO

    @property
    def event_shape(self):
        return torch.Size([32])

    def test_eval_iteration(self, *args, **kwargs):
        cg_mock, _cholesky_mock, ciq_mock = super().test_eval_iteration(*args, **kwargs)
        self.assertFalse(cg_mock.called)
        self.assertFalse(ciq_mock.called)

    def test_training_iteration(self, *args, **kwargs):
        cg_mock, _cholesky_mock, ciq_mock = super().test_training_iteration(*args, **kwargs)
        self.assertFalse(cg_mock.called)
        self.assertFalse(ciq_mock.called)

    def test_kl_is_never_stale(self):
        model, likelihood = self._make_model_and_likelihood(
            distribution_cls=self.distribution_cls, strategy_cls=self.strategy_cls
        )
        self._training_iter(model, likelihood)
        model.eval()
        with self.assertRaisesRegex(RuntimeError, "training-mode call"):
            model.variational_strategy.kl_divergence()

    # SWSGP has no batched models, and conditions through BoTorch (gpkit.models.base), not GPyTorch's OVC
    _unsupported = "no batch shapes / GPyTorch fantasy models for SWSGP"
    test_eval_smaller_pred_batch = unittest.skip(_unsupported)(VariationalTestCase.test_eval_smaller_pred_batch)
    test_eval_larger_pred_batch = unittest.skip(_unsupported)(VariationalTestCase.test_eval_larger_pred_batch)
    test_training_iteration_batch_inducing = unittest.skip(_unsupported)(
        VariationalTestCase.test_training_iteration_batch_inducing)
    test_training_iteration_batch_model = unittest.skip(_unsupported)(
        VariationalTestCase.test_training_iteration_batch_model)
    test_training_all_batch_zero_mean = unittest.skip(_unsupported)(VariationalTestCase.test_training_all_batch_zero_mean)
    test_fantasy_call = unittest.skip(_unsupported)(VariationalTestCase.test_fantasy_call)
    test_fantasy_call_batch_inducing = unittest.skip(_unsupported)(VariationalTestCase.test_fantasy_call_batch_inducing)
    test_fantasy_call_batch_data = unittest.skip(_unsupported)(VariationalTestCase.test_fantasy_call_batch_data)
    test_fantasy_call_batch_model = unittest.skip(_unsupported)(VariationalTestCase.test_fantasy_call_batch_model)
