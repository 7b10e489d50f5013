"""Sphinx configuration of gpkit's documentation site.

Build (from the repository root): ``sphinx-build -W -b html docs docs/_build/html``.

Generated at build time (git-ignored): ``api/<module>.rst`` for every public module and package of
``gpkit/`` (so new packages appear without editing the docs), ``tutorials/<name>.ipynb`` from
``tutorials/*.py`` (executed in smoke mode, or copied with their outputs from ``$GPKIT_DOCS_NOTEBOOKS``)
and ``benchmarks/<name>.md`` including ``benchmarks/results/<name>.md``.

Environment: ``GPKIT_DOCS_NOTEBOOKS`` a folder of already executed ``<name>.ipynb`` (CI passes the notebooks
its smoke run produced; they are shown as they are); ``GPKIT_DOCS_EXECUTE`` for the other tutorials:
``cache`` (default: run each once in smoke mode, reuse the result while the notebook is unchanged),
``force`` (run every build) or ``off`` (show the code without outputs).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import jupytext

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # this checkout's gpkit, also for the notebook kernels
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
os.environ["SMOKE_TEST"] = "1"  # tutorials shrink themselves
os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"  # plots become cell outputs
os.environ.setdefault("OMP_NUM_THREADS", "1")

import gpkit

project = "gpkit"
author = "gpkit contributors"
copyright = "2026, gpkit contributors"
release = version = gpkit.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax", "myst_nb"]
html_theme = "furo"
html_title = f"gpkit {release}"
exclude_patterns = ["_build", "jupyter_execute", "**.ipynb_checkpoints", "datasets_table.md"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb", ".rst": "restructuredtext"}
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]  # the included benchmark tables start their sections at any level

autodoc_default_options = {"members": True, "show-inheritance": True, "member-order": "bysource"}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autoclass_content = "both"
napoleon_google_docstring = False
napoleon_numpy_docstring = True

nb_execution_mode = os.environ.get("GPKIT_DOCS_EXECUTE", "cache")
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_cache_path = str(DOCS / "_build" / ".jupyter_cache")
nb_merge_streams = True

# --------------------------------------------------------------------------- generated pages
# modules documented elsewhere: the trainer is documented as ``gpkit.fit`` on the ``gpkit`` page
_SKIP = {"gpkit.training", "gpkit.__main__"}


def _public_modules() -> list[str]:
    names = ["gpkit"]
    for path in sorted((ROOT / "gpkit").iterdir()):
        if path.name.startswith("_"):
            continue
        if path.is_dir() and (path / "__init__.py").exists():
            names.append(f"gpkit.{path.name}")
        elif path.suffix == ".py":
            names.append(f"gpkit.{path.stem}")
    return [n for n in names if n not in _SKIP]


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _generate_api() -> None:
    out = DOCS / "api"
    out.mkdir(exist_ok=True)
    modules = _public_modules()
    for name in modules:
        _write_if_changed(out / f"{name}.rst", f"{name}\n{'=' * len(name)}\n\n.. automodule:: {name}\n")
    for stale in out.glob("gpkit*.rst"):
        if stale.stem not in modules:
            stale.unlink()


def _generate_tutorials() -> None:
    out = DOCS / "tutorials"
    out.mkdir(exist_ok=True)
    executed = Path(os.environ["GPKIT_DOCS_NOTEBOOKS"]) if os.environ.get("GPKIT_DOCS_NOTEBOOKS") else None
    names = sorted(p.stem for p in (ROOT / "tutorials").glob("*.py"))
    names.sort(key=lambda n: n != "getting_started")
    for name in names:
        target = out / f"{name}.ipynb"
        if executed is not None and (executed / f"{name}.ipynb").exists():
            notebook = json.loads((executed / f"{name}.ipynb").read_text())
            notebook["metadata"]["mystnb"] = {"execution_mode": "off"}  # keep its stored outputs
            _write_if_changed(target, json.dumps(notebook, indent=1))
        else:
            text = jupytext.writes(jupytext.read(ROOT / "tutorials" / f"{name}.py"), fmt="ipynb")
            _write_if_changed(target, text)
    for stale in out.glob("*.ipynb"):
        if stale.stem not in names:
            stale.unlink()
    toc = "\n".join(f"{name}" for name in names)
    _write_if_changed(
        out / "index.md",
        "# Tutorials\n\nEach tutorial is a jupytext script in `tutorials/`; these pages show it run in smoke\n"
        "mode (`SMOKE_TEST=1`: smaller data and fewer epochs than a full run, so numbers differ from the\n"
        "benchmarks). See {doc}`../installation` for running one yourself.\n\n"
        f"```{{toctree}}\n:maxdepth: 1\n\n{toc}\n```\n",
    )


def _generate_benchmarks() -> None:
    out = DOCS / "benchmarks"
    out.mkdir(exist_ok=True)
    results = sorted((ROOT / "benchmarks" / "results").glob("*.md"))
    for md in results:
        _write_if_changed(out / md.name, f"```{{include}} ../../benchmarks/results/{md.name}\n```\n")
    for stale in out.glob("*.md"):
        if stale.name != "index.md" and not (ROOT / "benchmarks" / "results" / stale.name).exists():
            stale.unlink()
    toc = "\n".join(md.stem for md in results)
    _write_if_changed(
        out / "index.md",
        "# Benchmark tables\n\nWritten by `gpkit bench NAME` (the harness in {mod}`gpkit.benchmarking`): gpkit and\n"
        "its baselines in one process, on the same data and seeds. Files ending in `-cuda` were measured\n"
        "on the H200 device machine, the others on a 2-core CPU (ratios are the meaningful part there).\n\n"
        f"```{{toctree}}\n:maxdepth: 1\n\n{toc}\n```\n",
    )


def _generate_datasets() -> None:
    from gpkit.datasets.catalog import CATALOG, SPLITS

    rows = "\n".join(f"| `{i.name}` | {i.kind} | {i.size} | {i.origin} |" for i in CATALOG)
    splits = "\n".join(f"| {kind} | {rule} |" for kind, rule in SPLITS.items())
    _write_if_changed(
        DOCS / "datasets_table.md",
        "| name | kind | size (n x d) | comes from |\n|---|---|---|---|\n" + rows + "\n\n"
        "What `split` selects, by kind of set:\n\n| kind | `load(name, split=k)` |\n|---|---|\n"
        + splits
        + "\n",
    )


_generate_api()
_generate_tutorials()
_generate_benchmarks()
_generate_datasets()
