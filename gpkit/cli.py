"""The ``gpkit`` command line: ``gpkit demo``, ``gpkit bench NAME``, ``gpkit datasets``.

Only the standard library is imported at start-up; each command imports what it needs.
"""

from __future__ import annotations

import argparse
import importlib
import textwrap
import time
from pathlib import Path

# (method, module with ``demo(out_dir, quick) -> list[dict]``), in the order of the README's table.
METHODS = [
    ("DKLGP", "gpkit.demos.dklgp"),
    ("SWSGP", "gpkit.demos.swsgp"),
    ("ETGP", "gpkit.demos.etgp"),
    ("RVGP", "gpkit.demos.rvgp"),
    ("Kronecker PDE solver", "gpkit.demos.pde"),
    ("Gaussian Cox BO", "gpkit.demos.cox"),
    ("Dual memory GP", "gpkit.demos.dual_memory"),
]

_DESCRIPTION = "gpkit: Gaussian-process models on GPyTorch and BoTorch."
_EPILOG = """\
examples:
  gpkit demo --quick            every built method on built-in data, one table vs the baselines
  gpkit bench swsgp --quick     benchmarks/swsgp.py: gpkit vs its baselines side by side
  gpkit datasets                every data set gpkit.datasets.load(name) reads, and whether it is here
"""


def _demo_module(module_name: str):
    """The demo module of a method, or None when the method is not built yet."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name == module_name:
            return None
        raise


def run_demo(out_dir: Path, quick: bool = False, only: list[str] | None = None) -> list[dict]:
    """Run the demo of every method in :data:`METHODS` (or those matching ``only``).

    :return: the rows of every demo module (schema: :mod:`gpkit.demos`); a method whose demo module
        does not exist yet gives one row ``{"method": ..., "data": "-", "metric": "not yet built"}``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for method, module_name in METHODS:
        if only and not any(o.lower() in method.lower() for o in only):
            continue
        module = _demo_module(module_name)
        if module is None:
            rows.append({"method": method, "data": "-", "metric": "not yet built"})
            continue
        print(f"[gpkit demo] {method} ...", flush=True)
        start = time.perf_counter()
        rows.extend(module.demo(out_dir, quick=quick))
        print(f"[gpkit demo] {method} done in {time.perf_counter() - start:.1f} s", flush=True)
    return rows


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-3 and value != 0 else f"{value:.4g}"
    return str(value)


TABLE_WIDTH = 120  # columns of the demo table (a terminal's width)


def _fit_widths(table: list[list[str]], limit: int) -> list[int]:
    """Column widths that fit ``limit`` columns where possible: the text columns (method, data, baseline) and
    the metric names in the header wrap (at word boundaries); the value cells never do."""
    ncol = len(table[0])
    widths = [max(len(line[i]) for line in table) for i in range(ncol)]

    def words(i: int, rows) -> int:
        return max((len(word) for line in rows for word in line[i].split()), default=0)

    # the narrowest each column can go: text columns to their longest word, the others to their widest
    # value cell (and the longest word of their header)
    floor = [words(i, table) if i < 3 else max([words(i, table[:1])] + [len(line[i]) for line in table[1:]])
             for i in range(ncol)]
    while sum(widths) + 2 * (ncol - 1) > limit:
        slack = [w - f for w, f in zip(widths, floor)]
        i = max(range(ncol), key=lambda j: (slack[j] > 0, widths[j] if slack[j] > 0 else -1))
        if slack[i] <= 0:
            break  # cannot narrow further without breaking words or values
        widths[i] -= 1
    return widths


def format_table(rows: list[dict]) -> str:
    """The demo rows as plain-text tables: one line per (method, data, baseline), metrics as columns.

    Rows with the same metric names share one table; each metric cell reads ``gpkit / baseline``; the
    last two columns are gpkit's and the baseline's wall time in seconds. Methods not built yet are
    listed at the end. Text cells and metric names wrap so that every line fits :data:`TABLE_WIDTH`
    columns (unless one word or value is wider).
    """
    groups: dict[tuple, dict] = {}
    missing = []
    for r in rows:
        if r.get("metric") == "not yet built":
            missing.append(r["method"])
            continue
        key = (r["method"], r.get("data", ""), r.get("baseline") or "")
        g = groups.setdefault(key, {"metrics": {}, "seconds": None, "baseline_seconds": None})
        g["metrics"][r["metric"]] = (r.get("value"), r.get("baseline_value"))
        for t in ("seconds", "baseline_seconds"):
            if g[t] is None and r.get(t) is not None:
                g[t] = r[t]
    sections: list[tuple[tuple[str, ...], list]] = []
    for key, g in groups.items():
        names = tuple(g["metrics"])
        if not sections or sections[-1][0] != names:
            sections.append((names, []))
        sections[-1][1].append((key, g))
    blocks = []
    for names, items in sections:
        table = [["method", "data", "baseline", *names, "gpkit s", "base s"]]
        for (method, data, baseline), g in items:
            cells = []
            for n in names:
                value, base = g["metrics"][n]
                cells.append(_cell(value) + (f" / {_cell(base)}" if base is not None else ""))
            times = [f"{g[t]:.1f}" if g[t] is not None else "" for t in ("seconds", "baseline_seconds")]
            table.append([method, data, baseline, *cells, *times])
        widths = _fit_widths(table, TABLE_WIDTH)
        lines = []
        for i, line in enumerate(table):
            wrapped = [textwrap.wrap(v, w, break_on_hyphens=False) or [""] for v, w in zip(line, widths)]
            for k in range(max(len(c) for c in wrapped)):
                lines.append("  ".join((c[k] if k < len(c) else "").ljust(w) for c, w in zip(wrapped, widths)).rstrip())
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        blocks.append("\n".join(lines))
    if blocks:
        blocks.append("metric cells: gpkit / baseline; times: fit + predict wall seconds of each")
    if missing:
        blocks.append("not yet built: " + ", ".join(missing))
    return "\n\n".join(blocks)


def _cmd_demo(args) -> int:
    out_dir = Path(args.out)
    rows = run_demo(out_dir, quick=args.quick, only=args.only)
    print()
    print(format_table(rows))
    print(f"\nplots written to {out_dir.resolve()}/")
    return 0


def _cmd_bench(args) -> int:
    from gpkit.benchmarking import available_benchmarks, run_benchmark

    if args.name == "list":
        print("\n".join(available_benchmarks()))
        return 0
    run_benchmark(args.name, device=args.device, quick=args.quick)
    return 0


def _cmd_datasets(args) -> int:
    from gpkit.datasets.catalog import format_available  # no torch: the listing is stated, not parsed

    print(format_available())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpkit",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="fit every built method on built-in data, print one table")
    demo.add_argument(
        "--out", default="gpkit-demo-output", help="folder for the plots (default: %(default)s)"
    )
    demo.add_argument("--quick", action="store_true", help="smaller problems, for a smoke test")
    demo.add_argument("--only", nargs="*", metavar="METHOD", help="run only these methods (e.g. DKLGP PDE)")
    demo.set_defaults(func=_cmd_demo)

    bench = sub.add_parser("bench", help="run benchmarks/NAME.py, write benchmarks/results/NAME.*")
    bench.add_argument("name", help="benchmark name, e.g. dklgp, swsgp, pde, neighbors ('list' lists them)")
    bench.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    bench.add_argument("--quick", action="store_true", help="reduced sizes, finishes in a few minutes")
    bench.set_defaults(func=_cmd_bench)

    datasets = sub.add_parser("datasets", help="list the data sets: kind, size, present or not")
    datasets.set_defaults(func=_cmd_datasets)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return args.func(args)
