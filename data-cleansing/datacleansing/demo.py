"""The data-cleansing part of ``make demo``: train with 10 % flipped labels on the bundled real
MNIST subset, score every training sample with the storage-efficient method (final
parameters only), SGD-influence (parameters of every traced step) and a random baseline,
then remove the most harmful samples and retrain. Runs the real entry scripts as a user
would. The classifier is the MLP (the reference CNN needs several seconds per traced step to
score on this CPU, too slow for a demo; ``python data-cleansing/train.py`` alone is its
smoke run)."""
import json
import shutil
import time
from pathlib import Path

from common.report import markdown_table, run_entry_script
from datacleansing import retrain as R
from datacleansing.cli import TOP_FRACTION, mean_table

TITLE = "Data cleansing with storage-efficient influence"
METHODS = ("final", "hara", "random")
COUNTS = (0, 10, 30, 100, 300)
TRIALS = 3
TRAIN = ["--dataset", "mnist5k", "--train-samples", "0", "--model", "mlp", "--epochs", "5",
         "--trace-epochs", "1", "--cache", "all", "--flip-labels", "0.1", "--seed", "0"]
NAMES = {"final": "final (storage-efficient)", "hara": "hara (SGD-influence)",
         "random": "random"}


def _run(script, *args):
    return run_entry_script("data-cleansing", script, *args)


def run(report, out_dir):
    out = Path(out_dir) / "data-cleansing"
    shutil.rmtree(out, ignore_errors=True)
    run_dir = out / "mnist5k-mlp"
    start = time.time()
    commands = [_run("train.py", "--output", run_dir, *TRAIN)]
    commands += [_run("score.py", run_dir, "--method", m) for m in METHODS]
    commands.append(_run("sweep.py", run_dir, "--methods", *METHODS, "--counts", *COUNTS,
                         "--trials", TRIALS, "--mode", "replay"))
    elapsed = time.time() - start

    summary = json.loads((run_dir / "summary.json").read_text())
    final, steps = summary["final_bytes"], summary["all_steps_bytes"]
    cache_rows = [["final (storage-efficient)", "params/final.h5", f"{final:,}",
                   f"{final / 1e6:.2f}"],
                  ["hara (SGD-influence)",
                   f"params/steps/ ({summary['all_steps_files']} files)", f"{steps:,}",
                   f"{steps / 1e6:.2f}"]]
    meta = {m: json.loads((run_dir / f"influence_{m}.json").read_text()) for m in METHODS}
    found_rows = [[NAMES[m], f"{meta[m]['flipped_in_top']} of {meta[m]['top']}",
                   f"{100 * meta[m]['flipped_in_top'] / meta[m]['top']:.1f}",
                   f"{meta[m]['seconds']:.1f}"] for m in METHODS]
    rows = R.read_summary(run_dir / "summary.csv")
    acc_rows = mean_table(rows, METHODS, COUNTS)
    n_flipped = meta["final"]["flipped"]
    n_train = meta["final"]["samples"]

    report.add(
        f"## {TITLE}\n\n"
        f"A one-hidden-layer MLP (64 units) on the bundled real MNIST subset ({n_train:,} "
        f"training, 500 validation, 1,000 test images) with {n_flipped} training labels "
        f"({n_flipped / n_train:.0%}) flipped to a wrong class; plain SGD (learning rate 0.05, "
        f"batch 64) for 5 epochs, the last one traced ({summary['traced_steps']} steps). "
        f"Test accuracy {100 * summary['test_accuracy']:.1f}%. The MLP stands in for the "
        f"paper's CNN so the whole pipeline fits in a demo (scoring the CNN costs several "
        f"seconds per traced step on this CPU; `python data-cleansing/train.py` alone is "
        f"the CNN smoke run). Pipeline time: {elapsed:.0f} s on this machine.\n\n"
        f"Parameter cache each method reads (the paper's storage saving):\n\n"
        + markdown_table(["method", "cache", "bytes", "MB"], cache_rows)
        + f"\n\nFlipped labels among the {TOP_FRACTION:.0%} most harmful samples (a random "
          f"ranking finds {TOP_FRACTION:.0%} of its picks flipped on average):\n\n"
        + markdown_table(["method", "flipped in top", "%", "scoring s"], found_rows)
        + f"\n\nTest accuracy (%) after removing the k most harmful samples and replaying the "
          f"traced epoch without them, mean over {TRIALS} trials (trial t > 0 is a fresh run "
          f"with seed t, other flipped labels):\n\n"
        + markdown_table(["removed"] + [NAMES[m] for m in METHODS], acc_rows))
    report.image(run_dir / "summary.png", "Test accuracy after removal")
    report.add("Commands:\n\n```\n" + "\n".join(commands) + "\n```")
