"""The benchmark harness (common.dev.bench): variants in child processes, ``--repeats`` in
alternating order with the run of median time reported."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent('''
    """A toy benchmark: every child logs its name and reports how many children ran before."""
    import os
    import sys

    sys.path.insert(0, REPO_PATH)
    from common.dev import bench

    README = "nowhere"
    WORKDIR_PREFIX = "toy-bench-"
    VARIANTS = ("a", "b")


    def _child(name):
        def run(args):
            log = bench.work_path(args, "order.log")
            with open(log, "a") as fh:
                fh.write(name + "\\n")
            with open(log) as fh:
                count = len(fh.read().split())
            # a time that depends on the position: the median run is identifiable
            return {"total_s": float(count * 10 + (5 if name == "a" else 0))}
        return run


    CHILDREN = {"prepare": lambda args: {}, "a": _child("a"), "b": _child("b")}


    def add_arguments(parser):
        pass


    def child_args(args):
        return []


    def describe(result):
        return f"{result.get('total_s', 0):.0f} s"


    def report(args, prep, results):
        return "toy report", {}


    if __name__ == "__main__":
        sys.exit(bench.benchmark_main(sys.modules[__name__]))
''')


def test_repeats_alternate_the_order_and_report_the_median_run(tmp_path):
    script = tmp_path / "toy_bench.py"
    script.write_text(SCRIPT.replace("REPO_PATH", repr(str(REPO))))
    work = tmp_path / "work"
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, str(script), "--repeats", "3", "--workdir",
                           str(work), "--json", str(out)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (work / "order.log").read_text().split() == ["a", "b", "b", "a", "a", "b"]
    results = json.loads(out.read_text())["results"]
    # a ran 1st, 4th, 5th: 15, 45, 55 s -> median 45; b ran 2nd, 3rd, 6th: 20, 30, 60 -> 30
    assert results["a"]["repeat_times_s"] == [15.0, 45.0, 55.0]
    assert results["a"]["total_s"] == 45.0 and results["b"]["total_s"] == 30.0
    assert "(3/3)" in proc.stderr and "toy report" in proc.stdout
