"""The one benchmark harness: time gpkit and its baselines side by side in one process.

A benchmark is a script ``benchmarks/<name>.py`` that defines ``main(bench: Benchmark)``. ``gpkit bench <name>``
(or :func:`run_benchmark`) builds the :class:`Benchmark`, calls ``main`` and writes
``benchmarks/results/<name>.json`` (machine, device, versions, every row) and ``<name>.md`` (tables with ratios).
"""

from __future__ import annotations

import datetime
import gc
import importlib.util
import json
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["Benchmark", "CONVERGENCE", "CONVERGENCE_RULE", "Measurement", "TrainRecord", "run_benchmark", "benchmarks_dir"]


@dataclass
class Measurement:
    """Result of :meth:`Benchmark.measure`: median seconds over repeats, every time, peak memory, last value."""

    seconds: float
    times: list[float]
    peak_memory_mb: float
    value: Any = None


def _status_kb(field_name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field_name}")


def _reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark (VmHWM) to the current RSS; False where not allowed.

    Freed heap memory is handed back to the system first (glibc ``malloc_trim``), so that a fit reusing what
    an earlier one freed still shows as growth.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _PeakRSS:
    """Peak resident set size of this process above the level at entry.

    Linux: the kernel's own high-water mark (VmHWM, reset through ``/proc/self/clear_refs`` at entry), so
    every page torch, numpy or scipy touches counts, however briefly. Elsewhere: ``resource``'s lifetime
    maximum, which only shows growth beyond the process's earlier peak.
    """

    def __enter__(self):
        self.kernel = _reset_peak_rss()
        if self.kernel:
            self.start = _status_kb("VmRSS") * 1024
        else:
            import resource

            self.start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.peak = self.start
        return self

    def __exit__(self, *exc):
        if self.kernel:
            self.peak = _status_kb("VmHWM") * 1024
        else:
            import resource

            self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    @property
    def megabytes(self) -> float:
        return max(self.peak - self.start, 0) / 2**20


class _PeakMemory:
    """Peak memory in MB above the level at entry on ``device``: CUDA max allocated, else :class:`_PeakRSS`."""

    def __init__(self, device: torch.device):
        self.device, self.cuda = device, device.type == "cuda"

    def __enter__(self):
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            self.rss = _PeakRSS().__enter__()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize(self.device)
            self.megabytes = (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20
        else:
            self.rss.__exit__(*exc)
            self.megabytes = self.rss.megabytes


# the note of a run that carried rows over (GPKIT_BENCH_KEEP=1); never carried itself, in any earlier wording
CARRIED_ROWS_NOTE = ("Rows with a `run` mark were not produced by this invocation (GPKIT_BENCH_KEEP=1); the mark "
                     "names the run they come from, and the notes that start with the same mark are that run's.")
_CARRIED_ROWS_START = CARRIED_ROWS_NOTE.split(";")[0]

# The stopping rule every benchmark applies to gpkit models and baselines alike when it trains "to
# convergence": gpkit.fit's tolerance test on the epoch training loss, with a step floor and a cap.
CONVERGENCE = {"tol": 1e-4, "patience": 10, "min_steps": 1000, "max_iter": 10000}
CONVERGENCE_RULE = (
    "trained with gpkit.fit until the best epoch training loss improves by less than 1e-4 (relative) over 10 "
    "epochs, after at least 1000 and at most 10000 optimizer steps (a cap reached is marked converged=False)"
)


@dataclass
class TrainRecord:
    """Result of :meth:`Benchmark.train`.

    ``seconds``: training wall time (evaluations at the budget excluded); ``steps``/``epochs``: optimizer
    steps and epochs run; ``converged``: stopped by the tolerance rule (not by the cap or the budget);
    ``at_budget``: what ``at_budget()`` returned at the first epoch end past ``time_budget`` (None if training
    ended before it, i.e. the run was already finished within the budget); ``budget_steps``: steps by then.
    """

    seconds: float
    steps: int
    epochs: int
    converged: bool
    peak_memory_mb: float
    at_budget: Any = None
    budget_steps: int | None = None


@dataclass
class Benchmark:
    """Collects timed rows for one benchmark run. See the module docstring."""

    name: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float64
    quick: bool = False
    repeats: int = 3
    warmup: int = 1
    rows: list[dict] = field(default_factory=list)
    comparisons: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    results_dir: Path | None = None

    # ------------------------------------------------------------------ measuring
    def measure(self, fn: Callable[[], Any], repeats: int | None = None, warmup: int | None = None) -> Measurement:
        """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times timed.

        :return: median seconds, all times, peak memory in MB above the level before the first call
            (CUDA: max allocated; CPU: growth of the kernel's resident-set high-water mark).
        """
        repeats = self.repeats if repeats is None else repeats
        warmup = self.warmup if warmup is None else warmup
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        cuda = self.device.type == "cuda"
        times, value = [], None
        # Memory is tracked from before the warm-up, so state that the first call allocates (gradients,
        # optimizer moments, caches) counts; times come from the repeats only.
        with _PeakMemory(self.device) as memory:
            for _ in range(warmup):
                fn()
            for _ in range(repeats):
                start = time.perf_counter()
                value = fn()
                if cuda:
                    torch.cuda.synchronize(self.device)
                times.append(time.perf_counter() - start)
        return Measurement(statistics.median(times), times, memory.megabytes, value)

    def train(
        self,
        obj,
        converge: bool = True,
        time_budget: float | None = None,
        at_budget: Callable[[], Any] | None = None,
        **options,
    ) -> TrainRecord:
        """Train ``obj`` with :func:`gpkit.fit` once, timed, with its peak memory.

        :param converge: apply :data:`CONVERGENCE` (options given here win); False: ``gpkit.fit``'s defaults
            plus ``options``.
        :param time_budget: seconds; at the first epoch end past it ``at_budget()`` is called (the model is in
            eval mode meanwhile, and the time it takes is not counted) and training goes on: one run gives
            both the equal-wall-time and the converged result.
        :param at_budget: see ``time_budget``.
        :param options: passed to ``gpkit.fit`` (``progress`` defaults to False).
        """
        import gpkit

        opts = {**(CONVERGENCE if converge else {}), "progress": False, **options}
        snap = {"value": None, "steps": None, "paused": 0.0}
        last = {"steps": 0, "epochs": 0, "history": 0}
        user_callback = opts.pop("callback", None)

        def callback(state) -> bool:
            last["steps"], last["epochs"] = state.iteration, state.epoch
            if (time_budget is not None and at_budget is not None and snap["steps"] is None
                    and state.elapsed - snap["paused"] >= time_budget):
                begin = time.perf_counter()
                modules = [m for m in (obj, opts.get("likelihood")) if isinstance(m, torch.nn.Module)]
                modes = [m.training for m in modules]
                obj.eval()
                snap["value"], snap["steps"] = at_budget(), state.iteration
                for module, mode in zip(modules, modes):
                    module.train(mode)
                snap["paused"] += time.perf_counter() - begin
            if user_callback is not None and user_callback(state):
                last["stopped"] = True
                return True
            return False

        with _PeakMemory(self.device) as memory:
            start = time.perf_counter()
            gpkit.fit(obj, callback=callback, **opts)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            seconds = time.perf_counter() - start - snap["paused"]
        peak = memory.megabytes
        cap = opts.get("max_iter")
        history = getattr(obj, "fit_history", [])
        converged = (bool(converge) and not last.get("stopped") and (cap is None or last["steps"] < cap)
                     and len(history) > opts.get("patience", 0))
        return TrainRecord(seconds, last["steps"], last["epochs"], converged, peak, snap["value"], snap["steps"])

    # ------------------------------------------------------------------ recording
    def add(self, case: str, method: str, **metrics) -> dict:
        """Add one result row (``case`` = data set / setting, ``method`` = gpkit model or baseline)."""
        row = {"case": case, "method": method, **{k: _plain(v) for k, v in metrics.items()}}
        self.rows.append(row)
        return row

    def published(self, case: str, method: str, source: str, **metrics) -> dict:
        """Record a published or reference number: shown beside ours, never run here."""
        return self.add(case, method, source=source, published=True, **metrics)

    def compare(
        self, method: str, baselines: list[str], metrics: list[str], differences: list[str] | None = None
    ) -> None:
        """Declare comparison columns for every case that has rows for both ``method`` and a baseline.

        :param metrics: reported as ratios ``metric(method) / metric(baseline)`` (times, memory, RMSE).
        :param differences: reported as ``metric(method) - metric(baseline)``, for metrics that can be
            negative, such as a negative log likelihood.
        """
        self.comparisons.append(
            {"method": method, "baselines": list(baselines), "metrics": list(metrics),
             "differences": list(differences or [])}
        )

    def note(self, text: str) -> None:
        """A paragraph for the markdown report (setup, cost growth, what did not reproduce)."""
        self.notes.append(text)

    def carry_over(self, previous: dict, keep: Callable[[dict], bool] | None = None, notes: bool = True) -> int:
        """Add an earlier run's rows (``previous``: its results json) for the (case, method) pairs this run has
        not produced, so a partial rerun does not erase the rest of a table.

        Each carried row gets a ``run`` mark naming the run it comes from (its date), or keeps the mark it
        already has. The earlier notes come along only for runs that still have a row here, each prefixed with
        its run's mark, so a run whose rows were all replaced leaves no stale setup notes. Call it after this
        run's own rows and notes are in.

        :param keep: carry only the rows for which ``keep(row)`` is true (default: every row).
        :param notes: also carry the notes (False: the caller picks the notes it carries).
        :return: how many rows were carried.
        """
        done = {(r["case"], r["method"]) for r in self.rows}
        stamp = f"run {previous['environment']['date'][:16]}"
        carried, runs = 0, set()
        for row in previous["rows"]:
            if (row["case"], row["method"]) in done or (keep is not None and not keep(row)):
                continue
            rest = {k: v for k, v in row.items() if k not in ("case", "method", "run")}
            self.add(row["case"], row["method"], run=row.get("run", stamp), **rest)
            runs.add(row.get("run", stamp))
            carried += 1
        order = list(dict.fromkeys(r["case"] for r in self.rows))
        self.rows.sort(key=lambda r: order.index(r["case"]))  # stable: each case's rows stay together, in order
        if carried and notes:
            self.notes.append(CARRIED_ROWS_NOTE)
        for text in previous.get("notes", []) if notes else ():
            marked = re.match(r"\((run [^)]*)\) ", text)
            run = marked.group(1) if marked else stamp
            text = text if marked else f"({stamp}) {text}"
            if run in runs and _CARRIED_ROWS_START not in text and text not in self.notes:
                self.notes.append(text)
        return carried

    # ------------------------------------------------------------------ reporting
    def ratios(self) -> list[dict]:
        out = []
        for comp in self.comparisons:
            for case in dict.fromkeys(r["case"] for r in self.rows):
                mine = self._row(case, comp["method"])
                for base in comp["baselines"]:
                    other = self._row(case, base)
                    if mine is None or other is None:
                        continue
                    ratio = {"case": case, "method": comp["method"], "baseline": base}
                    for metric in comp["metrics"]:
                        a, b = mine.get(metric), other.get(metric)
                        if _number(a) and _number(b) and b != 0:
                            ratio[f"{metric} ratio"] = a / b
                    for metric in comp["differences"]:
                        a, b = mine.get(metric), other.get(metric)
                        if _number(a) and _number(b):
                            ratio[f"{metric} diff"] = a - b
                    out.append(ratio)
        return out

    def _row(self, case: str, method: str) -> dict | None:
        rows = [r for r in self.rows if r["case"] == case and r["method"] == method and not r.get("published")]
        return rows[-1] if rows else None

    def environment(self) -> dict:
        import gpytorch
        import linear_operator

        env = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "gpytorch": gpytorch.__version__,
            "linear_operator": linear_operator.__version__,
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "quick": self.quick,
        }
        try:
            import botorch

            env["botorch"] = botorch.__version__
        except ImportError:  # pragma: no cover
            pass
        if self.device.type == "cuda":
            env["device_name"] = torch.cuda.get_device_name(self.device)
        return env

    def markdown(self) -> str:
        env = self.environment()
        lines = [f"# Benchmark `{self.name}`", ""]
        lines.append(
            f"{env['date']} · {env.get('device_name', env['device'])} · {env['cpu_count']} CPUs "
            f"({env['torch_threads']} torch threads) · torch {env['torch']} · gpytorch {env['gpytorch']} · "
            f"{env['dtype']}{' · quick mode' if self.quick else ''}"
        )
        lines.append("")
        lines += _table(self.rows)
        ratios = self.ratios()
        if ratios:
            lines += ["", "## Comparisons (ratio: gpkit / baseline, < 1 means gpkit is lower; diff: gpkit - baseline)", ""]
            lines += _table(ratios)
        if self.notes:
            lines += ["", "## Notes", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def checkpoint(self) -> None:
        """Write the results so far (a long run killed later still leaves its finished cases); no-op unless
        :func:`run_benchmark` set ``results_dir``."""
        if self.results_dir is not None:
            self.save(self.results_dir)

    def results_path(self, suffix: str, results_dir: Path | str | None = None) -> Path:
        """``<results_dir>/<name>[-quick][-cuda].<suffix>`` (default folder: :attr:`results_dir`)."""
        stem = f"{self.name}{'-quick' if self.quick else ''}{'-cuda' if self.device.type == 'cuda' else ''}"
        return Path(self.results_dir if results_dir is None else results_dir) / f"{stem}.{suffix}"

    def save(self, results_dir: Path | str) -> tuple[Path, Path]:
        Path(results_dir).mkdir(parents=True, exist_ok=True)
        json_path, md_path = self.results_path("json", results_dir), self.results_path("md", results_dir)
        payload = {
            "benchmark": self.name,
            "environment": self.environment(),
            "rows": self.rows,
            "ratios": self.ratios(),
            "comparisons": self.comparisons,
            "notes": self.notes,
        }
        json_path.write_text(json.dumps(payload, indent=2) + "\n")
        md_path.write_text(self.markdown())
        return json_path, md_path


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _plain(value):
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    return value


def _fmt(value) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, float):
        if value != value:
            return "nan"
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.3e}"
    return str(value)


def _table(rows: list[dict]) -> list[str]:
    if not rows:
        return ["(no rows)"]
    columns = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return lines


def benchmarks_dir() -> Path:
    """The ``benchmarks/`` folder of the source checkout (or of the working directory)."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[1]):
        if (root / "benchmarks").is_dir():
            return root / "benchmarks"
    raise FileNotFoundError("no benchmarks/ folder found next to gpkit or in the working directory")


def available_benchmarks() -> list[str]:
    try:
        folder = benchmarks_dir()
    except FileNotFoundError:
        return []
    return sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_") and p.stem != "run")


def run_benchmark(name: str, device: str = "cpu", quick: bool = False, results_dir: Path | None = None) -> Benchmark:
    """Run ``benchmarks/<name>.py`` and write its results; returns the filled :class:`Benchmark`."""
    torch_device = torch.device(device)
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but torch sees no CUDA device")
    path = benchmarks_dir() / f"{name}.py"
    if not path.is_file():
        raise ValueError(f"unknown benchmark {name!r}; available: {', '.join(available_benchmarks()) or 'none'}")
    spec = importlib.util.spec_from_file_location(f"gpkit_benchmark_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    bench = Benchmark(name=name, device=torch_device, quick=quick, results_dir=Path(results_dir or path.parent / "results"))
    # GPKIT_BENCH_KEEP=1: a partial rerun (one case, a few seeds) keeps the rows of the results it replaces
    earlier = bench.results_path("json")
    earlier = json.loads(earlier.read_text()) if os.environ.get("GPKIT_BENCH_KEEP") == "1" and earlier.is_file() else None
    module.main(bench)
    if earlier is not None:
        bench.carry_over(earlier)
    json_path, md_path = bench.save(bench.results_dir)
    print(bench.markdown())
    print(f"wrote {json_path} and {md_path}")
    return bench
