"""Run one benchmark: ``python benchmarks/run.py NAME [--device cuda] [--quick]`` (the same as ``gpkit bench``)."""

import sys

from gpkit.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", *sys.argv[1:]]))
