"""The out-of-core part of ``make demo``: a small ResNet trained on the bundled real MNIST
subset with and without the swap scheduler (identical results), the memory planner on the
paper's ResNet-50 batch-1440 setting, and a CPU throughput sweep. Runs the real entry
scripts as a user would."""
import shutil
import time
from pathlib import Path

import numpy as np

from common.report import markdown_table, run_entry_script
from common.runtime.params_io import read_param_file
from common.train.monitor import read_series

TITLE = "Out-of-core training"
BUDGET = "16MiB"


def _run(script, *args, save_output=None):
    return run_entry_script("out-of-core-training", script, *args, save_output=save_output)


def _timed(script, *args):
    start = time.time()
    command = _run(script, *args)
    return command, time.time() - start


def _max_param_difference(a_file, b_file):
    a, _ = read_param_file(a_file)
    b, _ = read_param_file(b_file)
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def run(report, out_dir):
    out = Path(out_dir) / "out-of-core-training"
    shutil.rmtree(out, ignore_errors=True)
    plain, ooc = out / "in-core", out / "out-of-core"
    cmd_plain, t_plain = _timed("train.py", "--output", plain)
    cmd_ooc, t_ooc = _timed("train.py", "--output", ooc, "--ooc-budget", BUDGET)
    loss_plain = read_series(plain, "training loss")[1]
    loss_ooc = read_series(ooc, "training loss")[1]
    error = read_series(plain, "validation error")[1]
    rows = [["in-core", f"{loss_plain[0]:.4f}", f"{loss_plain[-1]:.4f}",
             f"{100 * error[-1]:.1f}", f"{t_plain:.0f}"],
            [f"out-of-core, budget {BUDGET}", f"{loss_ooc[0]:.4f}", f"{loss_ooc[-1]:.4f}",
             f"{100 * read_series(ooc, 'validation error')[1][-1]:.1f}", f"{t_ooc:.0f}"]]
    same = bool(np.array_equal(loss_plain, loss_ooc))
    diff = _max_param_difference(plain / "final.h5", ooc / "final.h5")

    plan_text = out / "plan-resnet50-1440.txt"
    cmd_plan = _run("plan.py", "--arch", "resnet50", "--batch-size", "1440",
                    "--gpu-memory", "16GiB", save_output=plan_text)
    bench_out = out / "bench"
    cmd_bench = _run("bench/bench_ooc.py", "--blocks", "1", "1", "1", "1", "--width", "8",
                     "--image-size", "32", "--small-input", "--num-classes", "10",
                     "--batches", "8", "16", "32", "64", "--budget", "24MiB",
                     "--device-memory", "40MiB", "--iterations", "3", "--out-dir", bench_out)
    report.add(f"## {TITLE}\n\n"
               f"A ResNet (bottleneck blocks 1-1-1-1, width 8) trained 60 iterations on the "
               f"bundled real MNIST subset, in-core and inside the swap scheduler with a "
               f"{BUDGET} budget. On a CPU host and device are the same memory, so this "
               f"exercises the scheduler, it saves nothing (the saving needs a GPU, "
               f"out-of-core-training/README.md). Losses identical at every iteration: "
               f"**{'yes' if same else 'NO'}**; largest parameter difference {diff:g}.\n\n"
               + markdown_table(["run", "first loss", "last loss", "val. error %",
                                 "wall s"], rows))
    report.add("Memory planner, ResNet-50 at the paper's batch 1440 on a 16 GiB GPU:\n\n"
               "```\n" + plan_text.read_text().strip() + "\n```")
    report.add("CPU throughput sweep (tiny ResNet; an emulated 40 MiB card decides what fits "
               "in-core):\n\n" + (bench_out / "README.md").read_text().split("\n", 4)[-1]
               .replace("![throughput](throughput.png)", "").strip())
    report.image(bench_out / "throughput.png", "Throughput vs batch size (CPU)")
    report.add("Commands:\n\n```\n" + "\n".join([cmd_plain, cmd_ooc, cmd_plan, cmd_bench])
               + "\n```")
