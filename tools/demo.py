"""`make demo`: every paper's CPU smoke pipeline on the bundled real data, one report.

Each paper package contributes a ``demo`` module with ``TITLE`` and ``run(report, out_dir)``
(a folder may hold several packages, e.g. D3Net's music source separation and semantic
segmentation). A package that fails to import fails the demo: a broken install must not pass
``make demo``. The report is ``<out>/README.md`` with its plots beside it.
"""
import argparse
import importlib
import sys
import time
from pathlib import Path

from common.report import Report

# Paper packages in the order of the repository README.
PACKAGES = ["xumx", "d3net_mss", "d3net_seg", "mpdnn", "datacleansing", "ooctrain"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/demo", help="report folder")
    args = parser.parse_args(argv)
    out = Path(args.out)
    report = Report(out, "Demo: CPU smoke pipelines on bundled real data")
    report.add("Written by `make demo`. Every number below was measured in this run.")
    start = time.time()
    for package in PACKAGES:
        demo = importlib.import_module(f"{package}.demo")
        print(f"=== {demo.TITLE}", flush=True)
        demo.run(report, out)
    report.add(f"Total demo time: {time.time() - start:.0f} s.")
    path = report.write()
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
