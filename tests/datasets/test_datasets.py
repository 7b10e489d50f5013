"""Shared-folder data sets: shapes from the READMEs, splits, windows, folder resolution and errors."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

import gpkit.datasets as D
from gpkit.datasets.catalog import CATALOG
from gpkit.datasets.classification import CLASSIFICATION_SETS
from gpkit.datasets.manifolds import MESHES
from gpkit.cox import window_contains
from gpkit.datasets.point_processes import PP_SETS
from gpkit.datasets.registry import REGISTRY
from gpkit.datasets.sequential import MAGNETIC_TRIALS
from gpkit.datasets.uci import NO_MASK, UCI_SETS
from gpkit.manifolds import vertex_normals


def _require(name: str) -> None:
    """Skip unless the shared folder and every file of ``name`` are present."""
    try:
        root = D.data_dir()
    except FileNotFoundError as exc:
        pytest.skip(f"shared data folder absent: {exc}")
    files = {i.name: i.files for i in CATALOG}[name] or ()
    missing = [f for f in files if not (root / f).exists()]
    if missing:
        pytest.skip(f"{name}: files absent from {root}: {missing}")


def _check_partition(ds, n: int) -> None:
    train, test = ds.splits["train"], ds.splits["test"]
    assert train.dtype == torch.long and test.dtype == torch.long
    both = torch.cat([train, test])
    assert len(both) == n and torch.equal(both.sort().values, torch.arange(n)), (
        "splits must be disjoint and cover"
    )


# ---------------------------------------------------------------- UCI regression
@pytest.mark.parametrize("name", list(UCI_SETS))
def test_uci_shapes_and_split(name):
    _require(name)
    n, d = UCI_SETS[name]
    ds = D.load(name)
    assert ds.X.shape == (n, d) and ds.y.shape == (n,)
    assert ds.X.dtype == torch.float64 and ds.y.dtype == torch.float64
    assert torch.isfinite(ds.X).all() and torch.isfinite(ds.y).all()
    _check_partition(ds, n)
    assert abs(len(ds.splits["test"]) / n - 0.1) < 0.02
    assert ds.train_X.shape == (len(ds.splits["train"]), d) and ds.test_y.shape == (len(ds.splits["test"]),)
    if name not in NO_MASK:
        # documented: the treforevans sets are mean-centred (not scaled)
        assert (ds.X.mean(0).abs() <= 1e-3 * ds.X.std(0) + 1e-6).all()


@pytest.mark.parametrize("name", ["concrete", "elevators"])
def test_uci_fixed_splits_are_10_fold(name):
    _require(name)
    tests = torch.cat([D.load(name, split=k).splits["test"] for k in range(10)])
    n = UCI_SETS[name][0]
    assert torch.equal(tests.sort().values, torch.arange(n))
    with pytest.raises(ValueError, match="split"):
        D.load(name, split=10)


def test_uci_sets_without_split_file_use_fixed_folds():
    _require("kin8nm")
    a, b, c = D.load("kin8nm", split=0), D.load("kin8nm", split=0), D.load("kin8nm", split=1)
    assert torch.equal(a.splits["test"], b.splits["test"])
    assert not set(a.splits["test"].tolist()) & set(c.splits["test"].tolist())
    tests = torch.cat([D.load("kin8nm", split=k).splits["test"] for k in range(10)])
    assert torch.equal(tests.sort().values, torch.arange(8192))
    with pytest.raises(ValueError, match="split"):
        D.load("kin8nm", split=10)


def test_uci_float32_and_wine_quality():
    _require("wine")
    ds = D.load("wine", dtype=torch.float32)
    assert ds.X.dtype == torch.float32 and ds.y.dtype == torch.float32
    q = D.load("wine", target="quality")
    assert q.X.shape == (1599, 11) and len(q.y.unique()) == 6
    with pytest.raises(ValueError, match="target"):
        D.load("elevators", target="quality")


def test_cache_returns_independent_tensors():
    _require("yacht")
    a = D.load("yacht")
    a.X.zero_()
    assert D.load("yacht").X.abs().sum() > 0


# ---------------------------------------------------------------- classification
COUNTS = {
    "satimage": [1533, 703, 1358, 626, 707, 1508],
    "segment": [330] * 7,
    "vowel": [90] * 11,
    "banana": [2924, 2376],
    "mnist": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
    "optdigits": [554, 571, 557, 572, 568, 558, 558, 566, 554, 562],
    "texture": [500] * 11,
    "movement_libras": [24] * 15,
}


@pytest.mark.parametrize("name", list(CLASSIFICATION_SETS))
def test_classification_shapes_labels_folds(name):
    _require(name)
    n, d, C = CLASSIFICATION_SETS[name]
    ds = D.load(name)
    assert ds.X.shape == (n, d) and ds.X.dtype == torch.float64
    assert ds.y.dtype == torch.long and ds.y.min() == 0 and ds.y.max() == C - 1 and ds.num_classes == C
    if name in COUNTS:
        assert torch.bincount(ds.y).tolist() == COUNTS[name]
    _check_partition(ds, n)
    if name != "vowel":
        folds = torch.cat([D.load(name, split=k).splits["test"] for k in range(10)])
        assert torch.equal(folds.sort().values, torch.arange(n))
        # stratified: every class is in the test fold in about its overall share
        share = torch.bincount(ds.test_y, minlength=C) / len(ds.test_y)
        assert (share - torch.bincount(ds.y, minlength=C) / n).abs().max() < 0.02


def test_vowel_standard_split_and_mnist_pixels():
    _require("vowel")
    v = D.load("vowel")
    assert len(v.splits["train"]) == 528 and len(v.splits["test"]) == 462
    assert D.load("vowel", raw=True).X.shape == (990, 13)
    _require("mnist")
    m = D.load("mnist")
    assert m.X.min() == 0 and m.X.max() == 1
    assert m.y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


# ---------------------------------------------------------------- point processes
@pytest.mark.parametrize("name", list(PP_SETS))
def test_point_process_events_in_window(name):
    _require(name)
    space, tcol, spacetime, n = PP_SETS[name]
    ds = D.load(name)
    d = len(space) + (1 if (spacetime or not space) else 0)
    if name == "nbfires":
        n -= 111  # fires without a discovery time are dropped in the space-time version
    assert ds.X.shape == (n, d) and ds.y is None
    b = ds.extras["bounds"]
    assert b.shape == (2, d) and (b[1] > b[0]).all()
    assert window_contains(ds, ds.X).all()
    if tcol and space:
        other = D.load(name, spacetime=not spacetime)
        assert other.X.shape[1] == (2 if spacetime else 3)


def test_point_process_details():
    _require("bei")
    bei = D.load("bei")
    for grid in bei.extras["covariates"].values():
        assert grid["values"].shape == (101, 201) and grid["x"][-1] == 1000 and grid["y"][-1] == 500
    _require("redwood")
    assert D.load("redwood").extras["bounds"].tolist() == [[0.0, -1.0], [1.0, 0.0]]
    _require("coal")
    coal = D.load("coal")
    assert coal.X.shape == (191, 1) and coal.extras["bounds"].tolist() == [[1851.0], [1963.0]]
    with pytest.raises(ValueError, match="spacetime"):
        D.load("bei", spacetime=True)


# ---------------------------------------------------------------- manifolds
@pytest.mark.parametrize("name", list(MESHES))
def test_meshes(name):
    _require(name)
    nv, nf = MESHES[name]
    ds = D.load(name)
    faces = ds.extras["faces"]
    assert ds.X.shape == (nv, 3) and faces.shape == (nf, 3) and faces.dtype == torch.long
    assert faces.min() == 0 and faces.max() == nv - 1


def test_wind_is_tangent_and_split():
    _require("wind")
    ds = D.load("wind", month=7)
    assert ds.X.shape == (71 * 144, 3) and ds.y.shape == (71 * 144, 3)
    assert torch.allclose(ds.X.norm(dim=-1), torch.ones(len(ds.X), dtype=ds.X.dtype))
    assert (ds.X * ds.y).sum(-1).abs().max() < 1e-10
    assert torch.allclose(ds.y.norm(dim=-1) ** 2, ds.extras["u"] ** 2 + ds.extras["v"] ** 2)
    assert ds.extras["u_grid"].shape == (12, 73, 144)
    _check_partition(ds, len(ds.X))
    assert D.load("wind", include_poles=True).X.shape[0] == 73 * 144
    with pytest.raises(ValueError, match="month"):
        D.load("wind", month=13)


def test_eeg():
    for name, rows in [("eeg-256", 256), ("eeg-1020", 97), ("eeg-1020-spherical", 24)]:
        _require(name)
        ds = D.load(name)
        assert ds.X.shape == (rows, 3) and len(ds.extras["labels"]) == rows
    _require("eeg-eye-state")
    eye = D.load("eeg-eye-state")
    assert eye.X.shape == (14980, 14) and torch.bincount(eye.y).tolist() == [8257, 6723]
    assert eye.extras["positions"].shape == (14, 3)
    _check_partition(eye, 14980)


# ---------------------------------------------------------------- sequential
def test_streaming_banana():
    _require("streaming-banana")
    ds = D.load("streaming-banana")
    assert ds.X.shape == (5300, 2) and torch.equal(ds.splits["train"], torch.arange(400))
    assert torch.bincount(ds.train_y).tolist() == [218, 182]
    assert torch.bincount(ds.test_y).tolist() == [2706, 2194]


def test_magnetic():
    _require("magnetic")
    ds = D.load("magnetic", split=2, trials=(1, 2, 3))
    assert ds.X.shape == (8875 + 9105 + 9404, 2) and len(ds.splits["train"]) == MAGNETIC_TRIALS[3]
    assert torch.allclose(ds.y, ds.extras["mag"].norm(dim=-1))
    assert (ds.extras["time"][ds.splits["train"]].diff() > 0).all()
    assert D.load("magnetic", trials=(9,), target="vector").y.shape == (8557, 3)
    with pytest.raises(ValueError, match="trials"):
        D.load("magnetic", trials=(10,))


# ---------------------------------------------------------------- folder resolution
def test_gpkit_data_override(tmp_path, monkeypatch):
    folder = tmp_path / "uci" / "concrete"
    folder.mkdir(parents=True)
    with gzip.open(folder / "data.csv.gz", "wt") as fh:
        fh.write("\n".join(",".join(str(v) for v in row) for row in np.arange(30.0).reshape(10, 3)) + "\n")
    with gzip.open(folder / "test_mask.csv.gz", "wt") as fh:
        fh.write(
            "\n".join(",".join("1" if j == i % 10 else "0" for j in range(10)) for i in range(10)) + "\n"
        )
    monkeypatch.setenv("GPKIT_DATA", str(tmp_path))
    ds = D.load("concrete", split=3)
    assert ds.X.shape == (10, 2) and ds.test_y.tolist() == [11.0]
    assert D.data_dir() == tmp_path
    with pytest.raises(FileNotFoundError, match="GPKIT_DATA"):
        D.load("elevators")  # folder present, file absent


def test_missing_folder_error(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    monkeypatch.setenv("GPKIT_DATA", str(missing))
    with pytest.raises(FileNotFoundError) as err:
        D.load("elevators")
    assert str(missing) in str(err.value) and "GPKIT_DATA" in str(err.value)
    # embedded sets need no folder
    assert D.load("iris").X.shape == (150, 4)
    infos = {i.name: i for i in D.available()}
    assert not infos["elevators"].present and infos["synthetic-gp"].present
    assert infos["iris"].source == "embedded"


def test_available_lists_everything():
    infos = {i.name: i for i in D.available()}
    assert set(infos) == set(REGISTRY) == set(D.names())
    assert set(D.SPLITS) == {i.kind for i in infos.values()}
    _require("elevators")
    assert infos["elevators"].present and infos["elevators"].n == 16599 and infos["elevators"].d == 18
    assert infos["elevators"].size == "16599 x 18"
    root = D.data_dir()
    for name, info in infos.items():
        if info.files is not None:
            assert info.present == all((root / f).exists() for f in info.files), name


def test_stated_sizes_match_the_loaders():
    # the catalog states sizes (``gpkit datasets`` parses nothing); each must be what load() returns
    big = {"pde-poisson2d-sin100", "pde-allencahn2d-multiscale"}  # 160000 x 2 grids: checked by formula
    for info in D.available():
        if not info.present or info.name in big:
            continue
        shape = tuple(D.load(info.name).X.shape)
        if info.size.startswith("~"):  # a random number of simulated events
            assert shape[1] == info.d and 0.5 * info.n < shape[0] < 2 * info.n, info.name
        else:
            assert shape == (info.n, info.d), info.name
    assert {i.name: i.size for i in CATALOG}["pde-poisson2d-sin100"] == f"{400**2} x 2"


# ---------------------------------------------------------------- errors and record
def test_bad_input_errors():
    with pytest.raises(ValueError, match="elevators"):
        D.load("elevatorz")
    with pytest.raises(TypeError, match="foo"):
        D.load("iris", foo=1)
    with pytest.raises(TypeError, match="dtype"):
        D.load("iris", dtype=torch.long)
    with pytest.raises(TypeError, match="split"):
        D.load("iris", split=0.5)
    assert (
        D.canonical_name("Bunny-Fine") == "bunny_fine"
        and D.canonical_name("Power_Plant") == "power-plant"
    )


def test_dataset_record():
    ds = D.load("iris")
    assert repr(ds) == "Dataset(name='iris', X=150x4, y=150, splits={train: 135, test: 15})"
    with pytest.raises(KeyError, match="valid"):
        ds._part(ds.X, "valid")
    assert "iris" in ds.description


def test_default_folder_is_next_to_the_checkout(monkeypatch, tmp_path):
    from pathlib import Path

    from gpkit.datasets._io import candidate_dirs

    monkeypatch.delenv("GPKIT_DATA", raising=False)
    checkout = Path(D.__file__).resolve().parents[2]
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    dirs = candidate_dirs()
    assert dirs[0] == checkout.parent / "shared" / "data"
    assert tmp_path.resolve() / "shared" / "data" in [d.resolve() for d in dirs]


def test_scaled_split_and_to():
    _require("elevators")
    ds = D.load("elevators")
    Xtr, ytr, Xte, yte, (ym, ys) = D.scaled_split(ds, inputs="min_max")
    assert Xtr.min() == 0 and Xtr.max() == 1 and abs(ytr.std() - 1) < 1e-12 and Xte.shape[0] == len(yte)
    assert torch.allclose(yte * ys + ym, ds.test_y)
    with pytest.raises(ValueError, match="inputs"):
        D.scaled_split(ds, inputs="robust")
    with pytest.raises(ValueError, match="regression"):
        D.scaled_split(D.load("iris"))
    f32 = D.load("iris").to(dtype=torch.float32)
    assert f32.X.dtype == torch.float32 and f32.y.dtype == torch.long


def test_mesh_vector_field_is_tangent():
    _require("bunny-mesh-field")
    ds = D.load("bunny-vector-field", seed=1)
    normals = ds.extras["normals"]
    assert ds.y.shape == (2503, 3) and (normals * ds.y).sum(-1).abs().max() < 1e-12
    assert torch.allclose(normals.norm(dim=-1), torch.ones(2503, dtype=torch.float64))
    sphere = D.load("sphere")
    n = vertex_normals(sphere.X, sphere.extras["faces"])
    assert (n * sphere.X / sphere.X.norm(dim=-1, keepdim=True)).sum(-1).min() > 0.98  # outward, radial


def test_format_available():
    lines = D.format_available().splitlines()
    assert lines[0].split() == ["name", "kind", "size", "(n", "x", "d)", "present"]
    assert [line.split()[0] for line in lines[2 : 2 + len(REGISTRY)]] == D.names()
    assert any(line.startswith("gpkit.datasets.load(name, split=k)") for line in lines)
