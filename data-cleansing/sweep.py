"""Remove the most harmful samples by each method, retrain and measure the test accuracy:
`python data-cleansing/sweep.py RUN --methods final hara random --counts 0 10 30 100 300
--trials N --mode replay|full`. Writes RUN/summary.csv and RUN/summary.png; run the same
command again to continue an interrupted sweep.
"""
from common.cli import run_cli
from datacleansing.cli import sweep_main

if __name__ == "__main__":
    run_cli(sweep_main)
