"""benchmarks/etgp.py's partial-run switches and its `converged` column (no training)."""

import importlib.util
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "etgp.py"


@pytest.fixture(scope="module")
def etgp_bench():
    spec = importlib.util.spec_from_file_location("etgp_bench", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cfg():
    return {"sets": ("letter", "mnist", "vowel"), "splits": (0,), "extra_splits": {"letter": (1,)},
            "baselines": ("SVGP (C GPs)",), "baselines_for": {"vowel": ("LMC (8 GPs)",)}}


def test_partial_run_switches(etgp_bench, monkeypatch):
    monkeypatch.setenv("GPKIT_ETGP_SETS", "satimage, segment")
    monkeypatch.setenv("GPKIT_ETGP_SPLITS", "0,1")
    monkeypatch.setenv("GPKIT_ETGP_BASELINES", "SVGP (C GPs),Dirichlet SVGP")
    cfg = etgp_bench._partial(_cfg())
    assert cfg["sets"] == ("satimage", "segment")
    assert cfg["splits"] == (0, 1) and cfg["extra_splits"] == {}
    assert cfg["baselines"] == ("SVGP (C GPs)", "Dirichlet SVGP") and cfg["baselines_for"] is None


def test_partial_run_defaults_and_errors(etgp_bench, monkeypatch):
    for name in ("SETS", "SPLITS", "BASELINES"):
        monkeypatch.delenv(f"GPKIT_ETGP_{name}", raising=False)
    assert etgp_bench._partial(_cfg()) == _cfg()
    monkeypatch.setenv("GPKIT_ETGP_SETS", "letterr")
    with pytest.raises(ValueError, match="letterr"):
        etgp_bench._partial(_cfg())


class _Model:
    def __init__(self):
        self.fit_defaults = {"epochs": 150, "batch_size": 256}


def test_converged_is_stopped_before_the_step_cap(etgp_bench):
    # n = 1500: 6 batches of 256, cap max(150 x 6, 3000) = 3000 steps = 500 epochs
    assert etgp_bench._converged(_Model(), 1500, 499, {}) is True
    assert etgp_bench._converged(_Model(), 1500, 500, {}) is False
    # a baseline without fit_defaults: gpkit.fit's 20 epochs, cap 3000 steps
    assert etgp_bench._converged(object(), 528, 999, {"batch_size": 256}) is True
    assert etgp_bench._converged(object(), 528, 1000, {"batch_size": 256}) is False
    assert etgp_bench._converged(_Model(), 1500, 8, {"epochs": 8}) is None


def test_max_train_switch(etgp_bench, monkeypatch):
    monkeypatch.setenv("GPKIT_ETGP_MAX_TRAIN", "full")
    assert etgp_bench._partial({**_cfg(), "max_train": 1500})["max_train"] is None
    monkeypatch.setenv("GPKIT_ETGP_MAX_TRAIN", "4000")
    assert etgp_bench._partial({**_cfg(), "max_train": 1500})["max_train"] == 4000
    monkeypatch.setenv("GPKIT_ETGP_MAX_TRAIN", "all")
    with pytest.raises(ValueError, match="GPKIT_ETGP_MAX_TRAIN"):
        etgp_bench._partial(_cfg())


def test_converged_reads_the_models_min_steps(etgp_bench):
    class Floor:  # ETGP's defaults: a 5000-step floor above the 3000-step cap
        fit_defaults = {"epochs": 150, "batch_size": 256, "min_steps": 5000}

    # n = 1500: 6 batches per epoch, cap max(900, 3000, 5000) = 5000 steps = 834 epochs
    assert etgp_bench._converged(Floor(), 1500, 833, {}) is True
    assert etgp_bench._converged(Floor(), 1500, 834, {}) is False
