"""`make demo`: every paper's CPU smoke pipeline on the bundled real data, one report.

Each paper package that exists contributes a ``demo`` module with ``TITLE`` and
``run(report, out_dir)`` (a folder may hold several packages, e.g. D3Net's music source
separation and semantic segmentation); packages not built yet are skipped, and folders without
any demo are listed as not implemented. The report is
``<out>/README.md`` with its plots beside it.
"""
import argparse
import importlib
import sys
import time
from pathlib import Path

from common.report import Report

# (folder, package or list of packages) in the order of the repository README.
PAPERS = [
    ("x-umx", "xumx"),
    ("d3net", ["d3net_mss", "d3net_seg"]),
    ("mixed-precision-dnns", "mpdnn"),
    ("data-cleansing", "datacleansing"),
    ("out-of-core-training", "ooctrain"),
]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/demo", help="report folder")
    args = parser.parse_args(argv)
    out = Path(args.out)
    report = Report(out, "Demo: CPU smoke pipelines on bundled real data")
    report.add("Written by `make demo`. Every number below was measured in this run.")
    missing, start = [], time.time()
    for folder, packages in PAPERS:
        found = False
        for package in [packages] if isinstance(packages, str) else packages:
            try:
                demo = importlib.import_module(f"{package}.demo")
            except ModuleNotFoundError as exc:
                if exc.name not in (package, f"{package}.demo"):
                    raise
                continue
            found = True
            print(f"=== {demo.TITLE}", flush=True)
            demo.run(report, out)
        if not found:
            missing.append(folder)
    if missing:
        report.add("Not implemented yet (no demo): " + ", ".join(f"`{m}/`" for m in missing))
    report.add(f"Total demo time: {time.time() - start:.0f} s.")
    path = report.write()
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
