import json
import statistics
import time

import pytest
import torch

from gpkit.benchmarking import CARRIED_ROWS_NOTE, Benchmark, available_benchmarks, run_benchmark


def test_measure_records_median_value_and_memory():
    bench = Benchmark("toy", repeats=5, warmup=2)
    calls = []

    def work():
        calls.append(1)
        block = torch.ones(16_000_000)  # 64 MB: above glibc's largest mmap threshold, so a fresh mapping
        time.sleep(0.03)  # held long enough for the 2 ms RSS sampler
        return block.sum().item()

    m = bench.measure(work)
    assert len(calls) == 7 and len(m.times) == 5
    assert m.value == 16_000_000
    assert m.seconds == statistics.median(m.times)  # the median of the repeats, not just any of them
    assert 50 < m.peak_memory_mb < 200  # the block is seen, and counted once


def test_ratios_markdown_and_json(tmp_path):
    bench = Benchmark("toy")
    bench.add("data-a", "gpkit", rmse=1.0, seconds=2.0, nll=-0.5)
    bench.add("data-a", "baseline", rmse=2.0, seconds=1.0, nll=0.25)
    bench.add("data-b", "gpkit", rmse=3.0, seconds=1.0)  # no baseline row: no ratio
    bench.published("data-a", "paper", source="Table 1", rmse=0.9)
    bench.compare("gpkit", ["baseline"], ["rmse", "seconds"], differences=["nll"])
    bench.note("cost grows linearly")
    ratios = bench.ratios()
    assert ratios == [{"case": "data-a", "method": "gpkit", "baseline": "baseline", "rmse ratio": 0.5,
                       "seconds ratio": 2.0, "nll diff": -0.75}]
    json_path, md_path = bench.save(tmp_path)
    payload = json.loads(json_path.read_text())
    assert payload["environment"]["torch"] == torch.__version__
    assert len(payload["rows"]) == 4 and payload["ratios"] == ratios
    md = md_path.read_text()
    assert "| data-a | gpkit | baseline | 0.5 | 2 | -0.75 |" in md
    assert "Table 1" in md and "cost grows linearly" in md


def test_run_benchmark_from_a_benchmarks_folder(tmp_path, monkeypatch):
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "toy.py").write_text(
        "def main(bench):\n"
        "    m = bench.measure(lambda: 1 + 1, repeats=2, warmup=0)\n"
        "    bench.add('case', 'gpkit', seconds=m.seconds, quick=bench.quick)\n"
    )
    monkeypatch.chdir(tmp_path)
    assert available_benchmarks() == ["toy"]
    bench = run_benchmark("toy", quick=True)
    assert bench.rows[0]["quick"] is True
    assert (tmp_path / "benchmarks" / "results" / "toy-quick.json").is_file()
    with pytest.raises(ValueError, match="unknown benchmark 'nope'; available: toy"):
        run_benchmark("nope")


def test_bad_arguments():
    with pytest.raises(ValueError, match="repeats"):
        Benchmark("toy").measure(lambda: None, repeats=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            run_benchmark("neighbors", device="cuda")


def test_peak_memory_sees_a_short_lived_block():
    # the kernel's high-water mark sees a block freed at once (no sampling interval to fall between)
    m = Benchmark("toy").measure(lambda: torch.ones(16_000_000).sum().item(), repeats=1, warmup=0)
    assert 50 < m.peak_memory_mb < 200


def test_train_converges_and_snapshots_at_the_time_budget():
    import gpytorch

    from gpkit.baselines import SVGPBaseline

    g = torch.Generator().manual_seed(0)
    X = torch.rand(200, 1, generator=g, dtype=torch.float64)
    y = torch.sin(6 * X[:, 0]) + 0.1 * torch.randn(200, generator=g, dtype=torch.float64)
    model = SVGPBaseline(X[:8].clone())
    lik = gpytorch.likelihoods.GaussianLikelihood().to(X)
    seen = []

    def snapshot():
        seen.append(model.training)
        return len(model.fit_history) if hasattr(model, "fit_history") else "mid-run"

    rec = Benchmark("toy").train(model, time_budget=0.0, at_budget=snapshot, train_X=X, train_Y=y, likelihood=lik,
                                 batch_size=50, lr=0.05)
    assert seen == [False] and rec.at_budget == "mid-run" and rec.budget_steps == 4  # first epoch end
    assert rec.converged and 1000 <= rec.steps < 10000 and rec.epochs == len(model.fit_history)
    capped = Benchmark("toy").train(SVGPBaseline(X[:8].clone()), max_iter=40, train_X=X, train_Y=y,
                                    likelihood=gpytorch.likelihoods.GaussianLikelihood().to(X), batch_size=50)
    assert not capped.converged and capped.steps == 40 and capped.at_budget is None


def test_a_partial_rerun_keeps_the_rows_it_did_not_produce(tmp_path, monkeypatch):
    (tmp_path / "benchmarks").mkdir()
    script = tmp_path / "benchmarks" / "toy.py"
    script.write_text("def main(bench):\n    bench.add('a', 'gpkit', rmse=1.0)\n    bench.add('b', 'gpkit', rmse=2.0)\n"
                      "    bench.note('setup one')\n")
    monkeypatch.chdir(tmp_path)
    run_benchmark("toy")
    # a rerun of case "a" only, with a new number: "b" is kept and marked, "a" is today's
    script.write_text("def main(bench):\n    bench.add('a', 'gpkit', rmse=0.5)\n    bench.add('a', 'base', rmse=1.5)\n")
    monkeypatch.setenv("GPKIT_BENCH_KEEP", "1")
    rows = run_benchmark("toy").rows
    assert [(r["case"], r["method"], r["rmse"]) for r in rows] == [("a", "gpkit", 0.5), ("a", "base", 1.5), ("b", "gpkit", 2.0)]
    assert "run" not in rows[0] and rows[2]["run"].startswith("run 20")
    payload = json.loads((tmp_path / "benchmarks" / "results" / "toy.json").read_text())
    assert len(payload["rows"]) == 3 and f"({rows[2]['run']}) setup one" in payload["notes"]
    # a row carried twice keeps the mark of the run that produced it, not that of the run carrying it
    mark = rows[2]["run"]
    results = tmp_path / "benchmarks" / "results" / "toy.json"
    results.write_text(json.dumps({**payload, "environment": {**payload["environment"], "date": "2000-01-01T00:00"}}))
    assert run_benchmark("toy").rows[2]["run"] == mark
    # without the variable the file is replaced
    monkeypatch.delenv("GPKIT_BENCH_KEEP")
    assert len(run_benchmark("toy").rows) == 2


def test_carry_over_filters_rows():
    bench = Benchmark("toy")
    bench.add("a", "gpkit", rmse=1.0)
    previous = {"environment": {"date": "2026-01-01T00:00:00"}, "rows": [
        {"case": "a", "method": "gpkit", "rmse": 9.0}, {"case": "big", "method": "gpkit", "rmse": 3.0},
        {"case": "small", "method": "gpkit", "rmse": 4.0}]}
    assert bench.carry_over(previous, keep=lambda row: row["case"] == "big") == 1
    assert bench.rows[1] == {"case": "big", "method": "gpkit", "rmse": 3.0, "run": "run 2026-01-01T00:00"}


def test_carried_notes_name_their_run_and_leave_with_its_rows():
    """Only runs that still have rows here bring their notes, each marked with its run; the keep note never."""
    previous = {"environment": {"date": "2026-02-02T00:00:00"},
                "rows": [{"case": "a", "method": "gpkit", "rmse": 9.0},
                         {"case": "b", "method": "gpkit", "rmse": 2.0, "run": "run 2026-01-01T00:00"}],
                "notes": ["setup of the a/b run", "(run 2026-01-01T00:00) setup of the old b run",
                          "Rows with a `run` mark were not produced by this invocation (GPKIT_BENCH_KEEP=1); old words"]}
    bench = Benchmark("toy")
    bench.add("a", "gpkit", rmse=1.0)
    bench.note("setup today")
    assert bench.carry_over(previous) == 1  # only "b", of the old run
    assert bench.notes == ["setup today", CARRIED_ROWS_NOTE, "(run 2026-01-01T00:00) setup of the old b run"]
    # "b" rerun too: nothing carried, no earlier note left
    bench = Benchmark("toy")
    bench.add("a", "gpkit", rmse=1.0)
    bench.add("b", "gpkit", rmse=1.0)
    assert bench.carry_over(previous) == 0 and bench.notes == []
    # "a" carried: the unmarked notes are the previous run's own and get its mark
    bench = Benchmark("toy")
    bench.add("b", "gpkit", rmse=1.0)
    bench.carry_over(previous)
    assert bench.notes == [CARRIED_ROWS_NOTE, "(run 2026-02-02T00:00) setup of the a/b run"]
