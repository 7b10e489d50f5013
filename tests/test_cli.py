import subprocess
import sys
import types
from pathlib import Path

import pytest

from gpkit import cli

ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_each_command_once(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for command in ("demo", "bench", "datasets"):
        assert out.count(f"    {command} ") == 1, out


@pytest.mark.parametrize("argv", [["--help"], ["datasets"]])
def test_commands_import_no_torch(argv):
    # ``gpkit --help`` and ``gpkit datasets`` must stay instant: no torch, numpy or data parsing at start-up
    code = (
        "import sys; from gpkit import cli\n"
        f"try:\n    cli.main({argv!r})\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'numpy', 'gpytorch') if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_datasets_lists_sizes_and_hints(capsys):
    assert cli.main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert "elevators" in out and "16599 x 18" in out and "synthetic-gp" in out
    assert "split=k" in out
    for line in out.splitlines():
        if line.endswith("  NO"):  # a missing set says where it comes from
            assert f"  {line.split()[0]} is missing: from " in out
    assert max(len(line) for line in out.splitlines()) <= 120


def _rows():
    row = {"data": "synthetic-gp 1600+400", "seconds": 1.5, "baseline_seconds": 0.7}
    return [
        {
            **row,
            "method": "DKLGP (m=19)",
            "baseline": "VNNGP (k=19)",
            "metric": "latent NLL",
            "value": -1.2345,
            "baseline_value": 8.75,
        },
        {
            **row,
            "method": "DKLGP (m=19)",
            "baseline": "VNNGP (k=19)",
            "metric": "latent RMSE",
            "value": 0.1,
            "baseline_value": 0.2,
        },
        {
            **row,
            "method": "DKLGP (m=19)",
            "baseline": "SVGP (M=19)",
            "metric": "latent NLL",
            "value": -1.2345,
            "baseline_value": 0.5,
            "baseline_seconds": 2.0,
        },
        {
            **row,
            "method": "DKLGP (m=19)",
            "baseline": "SVGP (M=19)",
            "metric": "latent RMSE",
            "value": 0.1,
            "baseline_value": 0.3,
            "baseline_seconds": 2.0,
        },
        {
            "method": "GP-HM (Kronecker PDE)",
            "data": "poisson1d sin60x, 100 pts",
            "metric": "rel. L2",
            "value": 2.5e-6,
            "baseline": "GP-SE",
            "baseline_value": 0.21,
            "seconds": 3.0,
            "baseline_seconds": 2.5,
        },
        {"method": "ETGP", "data": "-", "metric": "not yet built"},
    ]


def test_format_table_pivots_metrics_into_columns():
    table = cli.format_table(_rows())
    lines = table.splitlines()
    assert max(len(line) for line in lines) <= 120
    header = lines[0]
    assert header.split()[:3] == ["method", "data", "baseline"] and "latent NLL" in header
    assert "gpkit s" in header and "base s" in header
    body = [line for line in lines if line.startswith("DKLGP")]
    assert len(body) == 2  # one line per (method, data, baseline); metrics are columns
    assert "-1.234 / 8.75" in body[0] and "0.1 / 0.2" in body[0] and body[0].split()[-2:] == ["1.5", "0.7"]
    assert body[1].split()[-2:] == ["1.5", "2.0"]
    pde = next(line for line in lines if line.startswith("GP-HM"))
    assert "2.5e-06 / 0.21" in pde
    # a second header for the other metric set; unbuilt methods listed once at the end
    assert sum(line.startswith("method") for line in lines) == 2
    assert lines[-1] == "not yet built: ETGP"


def test_format_table_wraps_long_text_to_fit_120_columns():
    # the RVGP and dual-memory demos' own strings: unwrapped, these tables are 172 and 145 columns wide
    data = "smooth tangent field on a sphere, 400 nodes, 80 noisy training vectors"
    common = {"method": "RVGP", "data": data, "baseline": "Euclidean RBF GP", "seconds": 6.3, "baseline_seconds": 0.7}
    rows = [
        {**common, "metric": "test alignment (mean cosine)", "value": 0.9905, "baseline_value": 0.9944},
        {**common, "metric": "median |v.n|/|v| (tangency)", "value": 0.007084, "baseline_value": 0.01821},
        {"method": "DualMemoryGP (M=30, memory 10/batch)", "data": "1-D stream, 20 batches of 50 sorted by x",
         "metric": "test NLL", "value": 0.12, "baseline": "offline SVGP (M=30, all data)", "baseline_value": 0.11,
         "seconds": 3.0, "baseline_seconds": 2.0},
    ]
    table = cli.format_table(rows)
    lines = table.splitlines()
    assert max(len(line) for line in lines) <= cli.TABLE_WIDTH
    text = " ".join(table.split())
    for word in data.split() + "median |v.n|/|v| (tangency) offline SVGP (M=30, all data)".split():
        assert word in text
    # values and times stay whole, on the row's first line
    first = next(line for line in lines if line.startswith("RVGP"))
    assert "0.9905 / 0.9944" in first and "0.007084 / 0.01821" in first and first.split()[-2:] == ["6.3", "0.7"]


def test_demo_runs_built_methods_and_lists_unbuilt_ones(tmp_path, monkeypatch, capsys):
    fake = types.ModuleType("gpkit_fake_demo")
    fake.demo = lambda out_dir, quick=False: [
        {
            "method": "Fake",
            "data": "toy 10+5",
            "metric": "RMSE",
            "value": 0.5,
            "baseline": "SVGP",
            "baseline_value": 1.0,
            "seconds": 0.1,
        }
    ]
    monkeypatch.setitem(sys.modules, "gpkit_fake_demo", fake)
    monkeypatch.setattr(
        cli, "METHODS", [("Fake", "gpkit_fake_demo"), ("Missing", "gpkit.demos.does_not_exist")]
    )
    assert cli.main(["demo", "--quick", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "not yet built: Missing" in out
    assert "RMSE" in out and "0.5 / 1" in out and "SVGP" in out
    assert (tmp_path / "out").is_dir()
