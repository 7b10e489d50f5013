"""The multi-class GPyTorch baselines of the ETGP benchmark: they train with gpkit.fit and give probabilities."""

import pytest
import torch

import gpkit
from gpkit.baselines import DirichletSVGPBaseline, MulticlassSVGPBaseline


@pytest.mark.parametrize("kind", ["independent", "lmc", "dirichlet"])
def test_baseline_trains_and_predicts(kind):
    X = torch.rand(120, 2)
    y = (X[:, 0] * 3).floor().long().clamp(0, 2)
    Z = X[:10].clone()
    if kind == "dirichlet":
        model = DirichletSVGPBaseline(Z, X, y, 3)
        gpkit.fit(model, epochs=2, batch_size=60)
    else:
        model = MulticlassSVGPBaseline(Z, 3, num_latents=2 if kind == "lmc" else None)
        gpkit.fit(model, train_X=X, train_Y=y, likelihood=model.likelihood, epochs=2, batch_size=60)
    assert len(model.fit_history) == 2
    probs = model.predict_proba(X[:7])
    assert probs.shape == (7, 3) and torch.allclose(probs.sum(-1), torch.ones(7))
