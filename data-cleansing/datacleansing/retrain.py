"""Retraining after removing samples, and the removal sweep.

``replay`` (default, as the reference): start from the parameters at the beginning of
the traced epochs and redo exactly those steps (same order, same augmentation seeds,
same learning rates) without the removed samples; each step's loss is the sum over the
kept samples divided by the recorded batch size, so an untouched step is the original
one. ``full``: retrain from the initial parameters for all epochs with the same order,
skipping the removed samples.
"""
import csv
from pathlib import Path

import numpy as np

from common.errors import UserError
from common.fileio import atomic_write
from common.terminal import check_interrupt
from datacleansing.trace import (Trainer, bar, epoch_steps, evaluate, load_snapshot, read_params,
                                 read_trace)

MODES = ("replay", "full")
SUMMARY_KEYS = ("method", "trial", "removed", "test_loss", "test_accuracy")


def retrain(run, cfg, splits, removed, mode="replay", labels=None, ooc=None):
    """Test (loss, accuracy) after retraining without ``removed`` (training indices);
    ``ooc``: an optional :class:`common.train.out_of_core.OutOfCore` around every step."""
    import nnabla as nn
    if mode not in MODES:
        raise UserError(f"retrain mode must be one of {MODES}")
    run = Path(run)
    removed = np.asarray(sorted(set(int(i) for i in removed)), np.int64)
    nn.clear_parameters()
    trainer = Trainer(cfg, splits, labels, ooc)
    n = len(splits.y_train)
    if mode == "replay":
        load_snapshot(read_params(run / "params" / "traced_start.h5"))
        for step in read_trace(run / "trace.npz"):
            keep = ~np.isin(step.batch, removed)
            trainer.step(step.batch, step.seeds, keep, step.lr)
            check_interrupt()
    else:
        load_snapshot(read_params(run / "params" / "initial.h5"))
        for e in range(cfg.epochs):
            for idx, seeds, keep in epoch_steps(cfg, n, e, removed):
                trainer.step(idx, seeds, keep, cfg.lr)
                check_interrupt()
    return evaluate(cfg.model, splits, splits.x_test, splits.y_test)


def removal_order(scores):
    """Training indices from most harmful (lowest score) to most helpful."""
    return np.argsort(scores, kind="stable")


def sweep(run, cfg, splits, scores_by_method, counts, out_csv, mode="replay", labels=None,
          trial=0, quiet=False, ooc=None):
    """Retrain without the k most harmful samples for every method and count; append rows
    (method, trial, removed, test_loss, test_accuracy) to ``out_csv``; returns the rows."""
    rows = []
    jobs = [(m, k) for m in scores_by_method for k in counts]
    for method, k in bar(jobs, quiet, desc="retraining", unit="run"):
        order = removal_order(scores_by_method[method])
        loss, acc = retrain(run, cfg, splits, order[:k], mode, labels, ooc)
        rows.append({"method": method, "trial": trial, "removed": int(k), "test_loss": loss,
                     "test_accuracy": acc})
    append_rows(out_csv, rows)
    return rows


def append_rows(path, rows):
    """Add ``rows`` to the summary CSV ``path`` (created with its header); the file is
    replaced atomically, so an interruption never leaves half a row."""
    path = Path(path)
    text = path.read_text() if path.is_file() else ",".join(SUMMARY_KEYS) + "\n"
    text += "".join(",".join(str(r[k]) for k in SUMMARY_KEYS) + "\n" for r in rows)
    with atomic_write(path, "w") as f:
        f.write(text)


def read_summary(path):
    with open(path, newline="") as f:
        return [dict(r, removed=int(r["removed"]), test_accuracy=float(r["test_accuracy"]),
                     test_loss=float(r["test_loss"]), trial=int(r["trial"]))
                for r in csv.DictReader(f)]


def plot_summary(rows, path, title="Test accuracy after removing the most harmful samples"):
    """Mean (+- std over trials) test accuracy vs number removed, log x, one line per method."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.8), dpi=100)
    for method in sorted({r["method"] for r in rows}):
        ks = sorted({r["removed"] for r in rows if r["method"] == method})
        acc = [[r["test_accuracy"] for r in rows if r["method"] == method and r["removed"] == k]
               for k in ks]
        mean = np.array([np.mean(a) for a in acc]) * 100
        std = np.array([np.std(a) for a in acc]) * 100
        xs = [max(k, 0.5) for k in ks]   # k = 0 drawn at 0.5 on the log axis
        ax.errorbar(xs, mean, yerr=std, marker="o", capsize=3, label=method)
    ax.set_xscale("log")
    ax.set_xlabel("training samples removed (0 drawn at 0.5)")
    ax.set_ylabel("test accuracy %")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
    return Path(path)

