"""One module per method for ``gpkit demo``: ``demo(out_dir, quick=False) -> list[dict]``.

``gpkit demo`` imports ``gpkit.demos.<name>`` for every method in :data:`gpkit.cli.METHODS`, calls
``demo(out_dir, quick)`` and prints the rows as one table per set of metric names: one line per
(method, data, baseline), the metrics as columns (each cell ``gpkit / baseline``), then gpkit's and the
baseline's time. A demo uses embedded or generated data only (``gpkit.datasets`` embedded sets), saves
its plots in ``out_dir`` and takes a few seconds with ``quick=True``.

Row schema: each dict is one metric of one (method, data, baseline) comparison.

- ``method`` (required): gpkit's model as the README's methods table names it, with its size, e.g.
  ``"SWSGP (M=500, H=16)"``.
- ``data`` (required): the ``gpkit datasets`` name of the data, then the train + test sizes, e.g.
  ``"synthetic-gp 2000+500"`` (under ~30 characters, the same in the plot titles).
- ``metric`` (required): a short name, the same in the plot titles: ``"test NLL"``, ``"test RMSE"``,
  ``"rel. L2"``, ``"accuracy"``...
- ``value`` (required): gpkit's value (float).
- ``baseline``: the baseline model with its size, e.g. ``"SVGP (M=16)"``.
- ``baseline_value``: the baseline's value of the same metric (float).
- ``seconds``: gpkit's wall time, fit + predict, in seconds.
- ``baseline_seconds``: the baseline's wall time, measured the same way.

A method compared with two baselines returns rows for each baseline (they print as two lines). Metric
definitions follow :mod:`gpkit.metrics` (Gaussian NLL includes 0.5 log 2 pi).
"""
