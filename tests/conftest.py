"""Shared fixtures for gpkit's tests: float64 by default, fixed seeds, one thread per worker."""

import os

import pytest
import torch

torch.set_default_dtype(torch.float64)
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def shared_data_dir():
    """The shared real-data folder, or skip when this checkout has none."""
    from pathlib import Path

    folder = Path(os.environ.get("GPKIT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    if not folder.is_dir():
        pytest.skip(f"shared data folder {folder} not present")
    return folder


# ------------------------------------------------------------------ tests that must fail without training
# Every model-accuracy test carries ``@pytest.mark.accuracy``. With ``GPKIT_NOOP_FIT=1`` gpkit.fit is replaced by
# a no-op (before test modules are imported) and every accuracy test becomes a strict xfail: a test that still
# passes without training is reported as a failure. CI runs ``GPKIT_NOOP_FIT=1 pytest -m accuracy``.
NOOP_FIT = os.environ.get("GPKIT_NOOP_FIT") == "1"


def _noop_fit(obj, **options):
    obj.eval()
    return obj


def pytest_configure(config):
    if NOOP_FIT:
        import gpkit
        import gpkit.training

        gpkit.fit = _noop_fit
        gpkit.training.fit = _noop_fit


def pytest_collection_modifyitems(config, items):
    if not NOOP_FIT:
        return
    for item in items:
        if item.get_closest_marker("accuracy") is not None:
            item.add_marker(pytest.mark.xfail(strict=True, reason="gpkit.fit is a no-op: this test must fail"))
