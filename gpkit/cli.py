"""The ``gpkit`` command line: ``gpkit demo``, ``gpkit bench NAME``, ``gpkit datasets``."""

from __future__ import annotations

import argparse
import importlib
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

_DESCRIPTION = """\
gpkit: Gaussian-process models on GPyTorch and BoTorch.

  gpkit demo              fit every method on built-in data and print a comparison table
  gpkit bench NAME        run benchmarks/NAME.py (gpkit vs GPyTorch/BoTorch baselines side by side)
  gpkit datasets          list the data sets gpkit can load and whether each is present
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
        for row in module.demo(out_dir, quick=quick):
            row.setdefault("seconds", time.perf_counter() - start)
            rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    columns = ["method", "data", "metric", "value", "baseline", "baseline_value", "seconds"]
    headers = ["method", "data", "metric", "gpkit", "baseline", "baseline value", "time (s)"]

    def cell(value) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    table = [headers] + [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


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
    from gpkit.datasets import available

    infos = available()
    rows = [["name", "kind", "size", "source", "present"]]
    for info in infos:
        rows.append([info.name, info.kind, info.size, info.source, "yes" if info.present else "NO"])
    widths = [max(len(str(r[i])) for r in rows) for i in range(5)]
    for k, r in enumerate(rows):
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpkit", description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="fit every built method on built-in data; print a table vs baselines")
    demo.add_argument("--out", default="gpkit-demo-output", help="folder for the plots (default: %(default)s)")
    demo.add_argument("--quick", action="store_true", help="smaller problems, for a smoke test")
    demo.add_argument("--only", nargs="*", metavar="METHOD", help="run only these methods (e.g. DKLGP PDE)")
    demo.set_defaults(func=_cmd_demo)

    bench = sub.add_parser("bench", help="run one benchmark: gpkit vs baselines, writes benchmarks/results/")
    bench.add_argument("name", help="benchmark name, e.g. dklgp, swsgp, pde, neighbors ('list' lists them)")
    bench.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    bench.add_argument("--quick", action="store_true", help="reduced sizes, finishes in a few minutes")
    bench.set_defaults(func=_cmd_bench)

    datasets = sub.add_parser("datasets", help="list every data set gpkit can load, its size and whether present")
    datasets.set_defaults(func=_cmd_datasets)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return args.func(args)
