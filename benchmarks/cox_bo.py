"""The BO part of ``benchmarks/cox.py`` alone (``gpkit bench cox_bo``): windows revealed until one holds the peak
of a Hermite intensity, gpkit's loop with the intensity UCB and with the expected arrivals vs random and grid
search, 20 seeds (3 in quick mode). Same code and settings as part 3 of ``gpkit bench cox``."""

from __future__ import annotations

import importlib.util
import statistics
from pathlib import Path

_spec = importlib.util.spec_from_file_location("_cox_bench", Path(__file__).with_name("cox.py"))
_cox = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_cox)


def main(bench) -> None:
    cfg = _cox._config(bench)
    _cox._warm_up(bench)
    steps = _cox._bo(bench, cfg)
    means = ", ".join(f"{method} {statistics.mean(v):.1f}" for method, v in steps.items())
    bench.note(f"Mean windows to the peak over {len(steps['gpkit UCB'])} seeds (budget {cfg['bo_budget']}, a miss "
               f"counts budget + 1): {means}.")
    bench.note(_cox.__doc__.split("Part 3 (BO): ")[1].strip())
