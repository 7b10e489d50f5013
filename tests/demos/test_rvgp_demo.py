"""``gpkit demo``'s RVGP row: both models timed, metrics for both, the plot written."""

import pytest


@pytest.mark.slow
def test_rvgp_demo_rows_carry_both_times(tmp_path):
    from gpkit.demos.rvgp import demo

    rows = demo(tmp_path, quick=True)
    assert [r["metric"] for r in rows] == ["test alignment (mean cosine)", "median |v.n|/|v| (tangency)"]
    for row in rows:
        assert row["baseline"] == "Euclidean RBF GP"
        assert row["seconds"] > 0 and row["baseline_seconds"] > 0
    assert rows[0]["value"] > 0.9 and rows[0]["baseline_value"] > 0.9
    assert (tmp_path / "rvgp.png").is_file()
