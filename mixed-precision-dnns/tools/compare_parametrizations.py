"""The paper's parametrization comparison in miniature, on the bundled real MNIST subset.

Trains one float ResNet-20 (experiment DEFAULT), then fine-tunes it with each of the six
weight quantizer parametrizations (U1-U3, P1-P3; the official ``PARAMETRIC_*_WQ_*_INIT``
experiments) starting at several bitwidths, with the same short schedule, and prints the
validation-error table (also written to ``OUT/table.md`` and ``OUT/results.json``).
Every run is an ordinary ``train.py`` run in ``OUT/<name>``, so an interrupted comparison
continues where it stopped when started again.

    python mixed-precision-dnns/tools/compare_parametrizations.py --output runs/mpdnn-compare
"""
import json
import subprocess
import sys
import time
from pathlib import Path

from common.cli import Bounded, NonNegativeInt, Parser, PositiveInt
from common.errors import Interrupted, UserError
from common.cli import run_cli
from common.fileio import atomic_write, check_output_location

TRAIN = Path(__file__).resolve().parent.parent / "train.py"
EXPERIMENTS = [("U1", "PARAMETRIC_FP_WQ_DELTA_B_INIT"), ("U2", "PARAMETRIC_FP_WQ_B_XMAX_INIT"),
               ("U3", "PARAMETRIC_FP_WQ_DELTA_XMAX_INIT"),
               ("P1", "PARAMETRIC_POW2_WQ_B_XMAX_INIT"), ("P2", "PARAMETRIC_POW2_WQ_B_XMIN_INIT"),
               ("P3", "PARAMETRIC_POW2_WQ_XMIN_XMAX_INIT")]


def run(out, experiment, extra):
    """One train.py run into ``out`` (resumed if it exists); its summary.json."""
    summary = out / "summary.json"
    if summary.is_file():
        return json.loads(summary.read_text())
    cmd = [sys.executable, str(TRAIN), "--experiment", experiment, "--output", str(out),
           "--resume", *extra]
    print("$", " ".join(cmd), flush=True)
    status = subprocess.run(cmd).returncode
    if status == 130:   # Ctrl-C reached train.py too; it saved its checkpoint
        raise Interrupted("interrupted; run the same command again to continue")
    if status:
        raise UserError(f"train.py failed for {experiment} (exit status {status}; its error "
                        "is above)")
    return json.loads(summary.read_text())


def main(argv=None):
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument("--output", default="runs/mpdnn-compare",
                   help="folder of the training runs and the table")
    p.add_alias("--out", "output")
    p.add_argument("--bits", type=Bounded(int, 2, 8), nargs="+", default=[2, 3, 4],
                   help="initial weight bitwidths")
    p.add_argument("--float-epochs", type=PositiveInt, default=4)
    p.add_argument("--epochs", type=PositiveInt, default=3)
    p.add_argument("--train-samples", type=NonNegativeInt, default=0, help="0 = all 4500")
    args = p.parse_args(argv)
    out = check_output_location(args.output, "--output")
    common = ["--dataset", "mnist5k", "--train-samples", str(args.train_samples),
              "--val-samples", "0", "--checkpoint-interval", "0"]
    start = time.time()
    float_run = out / "DEFAULT"
    base = run(float_run, "DEFAULT", common + [
        "--set", f"epochs={args.float_epochs}", "--set",
        f"lr_milestones=[{max(1, args.float_epochs * 3 // 4)}]", "--set", "batch_size=64"])
    milestone = max(1, args.epochs * 2 // 3)
    results = {"float": base, "runs": {}}
    for bits in args.bits:
        for label, experiment in EXPERIMENTS:
            name = f"{experiment}_W{bits}"
            summary = run(out / name, experiment, common + [
                "--init-from", str(float_run), "--set", f"epochs={args.epochs}",
                "--set", f"lr_milestones=[{milestone}]", "--set", "batch_size=64",
                "--set", f"w_bitwidth={bits}"])
            results["runs"][name] = dict(label=label, bits=bits, **summary)
    header = "| start | " + " | ".join(label for label, _ in EXPERIMENTS) + " |"
    lines = [f"Float ResNet-20: {base['val_error'] * 100:.1f} % validation error "
             f"({base['weight_kbytes']:.0f} kB weights).", "",
             "Validation error % (weight memory kB after training):", "",
             header, "|" + "---|" * (len(EXPERIMENTS) + 1)]
    for bits in args.bits:
        cells = []
        for _, experiment in EXPERIMENTS:
            r = results["runs"][f"{experiment}_W{bits}"]
            cells.append(f"{r['val_error'] * 100:.1f} ({r['weight_kbytes']:.0f})")
        lines.append(f"| {bits}-bit | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    with atomic_write(out / "table.md", "w") as f:
        f.write(table + "\n")
    with atomic_write(out / "results.json", "w") as f:
        json.dump(results, f, indent=2)
    print(table)
    print(f"total {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    run_cli(main)
