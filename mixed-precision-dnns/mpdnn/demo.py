"""The mixed-precision part of ``make demo``: a float ResNet-20 and its memory-constrained
mixed-precision version (U3 weights and activations, the paper's CIFAR-10 targets) on the
bundled real MNIST subset, evaluated, with the per-layer bitwidth plot. Runs the real entry
scripts as a user would."""
import json
import shutil
import time
from pathlib import Path

from common.report import markdown_table, plot_curves, run_entry_script
from common.train.monitor import read_series

FOLDER = Path(__file__).resolve().parents[1]
TITLE = "Mixed Precision DNNs"
QUANTIZED = "PARAMETRIC_FP_WAMQ_DELTA_XMAX_CON_INIT"
SMOKE = ["--dataset", "mnist5k", "--train-samples", "1024", "--val-samples", "500",
         "--set", "batch_size=64"]


def _run(script, *args):
    return run_entry_script("mixed-precision-dnns", script, *args)


def run(report, out_dir):
    out = Path(out_dir) / "mixed-precision-dnns"
    shutil.rmtree(out, ignore_errors=True)
    start = time.time()
    float_run, quant_run = out / "DEFAULT", out / QUANTIZED
    commands = [
        _run("train.py", "--experiment", "DEFAULT", "--output", float_run, *SMOKE,
             "--set", "epochs=3", "--set", "lr_milestones=[2]"),
        _run("train.py", "--experiment", QUANTIZED, "--init-from", float_run, "--output",
             quant_run, *SMOKE, "--set", "epochs=3", "--set", "lr_milestones=[2]"),
        _run("eval.py", "--model", quant_run, "--out-dir", out / "eval"),
    ]
    elapsed = time.time() - start
    results = {name: json.loads((out / name / "summary.json").read_text())
               for name in ("DEFAULT", QUANTIZED)}
    rows = [[name, f"{r['val_error'] * 100:.1f}", f"{r['weight_kbytes']:.1f}",
             f"{r['max_activation_kbytes']:.1f}",
             "yes" if r["constraints_met"] else "no"] for name, r in results.items()]
    curves = {"weights kB": read_series(quant_run, "weight kbytes"),
              "largest activation kB": read_series(quant_run, "activation kbytes")}
    plot = plot_curves(curves, out / "memory.png", title=f"{QUANTIZED} memory",
                       xlabel="epoch", ylabel="kB")
    report.add(f"## {TITLE}\n\n"
               f"ResNet-20 on the bundled real MNIST subset padded to 32x32 (1024 training, "
               f"500 validation images, 3 epochs each; {elapsed:.0f} s on this machine): "
               f"a float network, then the paper's U3 parametrization (step size d and "
               f"maximum q_max learned) for weights and activations from it, with the "
               f"memory targets of the official CIFAR-10 experiment (70.1 kB of weights, "
               f"8.1 kB for the largest activation). A schedule this short shows the "
               f"pipeline working, not the paper's accuracy (mixed-precision-dnns/README.md "
               f"has the published tables).\n\n"
               + markdown_table(["experiment", "val. error %", "weights kB",
                                 "largest activation kB", "constraints met"], rows))
    report.image(plot, "Memory during constrained training")
    report.image(out / "eval" / "bitwidths.png", "Learned per-layer bitwidths")
    report.add("Commands:\n\n```\n" + "\n".join(commands) + "\n```")
