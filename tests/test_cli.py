import sys
import types

import pytest

from gpkit import cli


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for command in ("demo", "bench", "datasets"):
        assert f"gpkit {command}" in out


def test_demo_table_lists_unbuilt_methods_and_runs_built_ones(tmp_path, monkeypatch, capsys):
    fake = types.ModuleType("gpkit_fake_demo")
    fake.demo = lambda out_dir, quick=False: [
        {"method": "Fake", "data": "toy", "metric": "RMSE", "value": 0.5, "baseline": "SVGP", "baseline_value": 1.0}
    ]
    monkeypatch.setitem(sys.modules, "gpkit_fake_demo", fake)
    monkeypatch.setattr(cli, "METHODS", [("Fake", "gpkit_fake_demo"), ("Missing", "gpkit.demos.does_not_exist")])
    assert cli.main(["demo", "--quick", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "Missing" in out and "not yet built" in out
    assert "RMSE" in out and "0.5" in out and "SVGP" in out
    assert (tmp_path / "out").is_dir()


def test_format_table_aligns_columns():
    table = cli.format_table([{"method": "A", "data": "d", "metric": "m", "value": 1.23456789}])
    header, rule, row = table.splitlines()
    assert header.startswith("method") and set(rule) <= {"-", " "}
    assert "1.235" in row
