"""Results table of mixed-precision training runs, like the official get_res.py:
`python mixed-precision-dnns/collect.py runs/mpdnn/* [--out-dir results/]` prints, per run,
the best validation error, the weight memory and the largest activation (kB), sorted as in
the paper's tables, and writes results.md and results.csv to --out-dir. See mpdnn/collect.py.
"""
from common.cli import run_cli
from mpdnn.collect import main

if __name__ == "__main__":
    run_cli(main)
