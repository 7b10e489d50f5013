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
