"""Evaluation of a trained network and its report: error, memory, per-layer bitwidths.

``report.md`` holds the summary and the per-layer table (bitwidth, step or q_min,
q_max, memory), ``layers.csv`` the same table, ``bitwidths.png`` the per-layer
weight and activation bitwidths by layer name with the experiment's bitwidth bounds (as in
the paper's bitwidth figure) and ``summary.json`` the numbers; a training run's report also
has ``memory.png`` (memory per epoch against the targets). Every file is written
atomically, ``summary.json`` last: a folder with a ``summary.json`` holds a complete report.

Warnings (one line each, also printed by the training loop): training that looks stuck
(:func:`stuck_warning`) and bitwidths outside the experiment's bounds (parameters trained
elsewhere; training here keeps them inside, see ``mpdnn.training``).
"""
import csv
import io
import json
from pathlib import Path

import numpy as np

from common.data import classification as D
from common.errors import UserError
from common.fileio import atomic_path, atomic_write
from common.report import markdown_table
from common.train.monitor import read_series
from mpdnn.experiments import PAPER_PARAMETRIZATION
from mpdnn.network import Evaluator, register_parameters

OUTPUT_FILES = ("layers.csv", "bitwidths.png", "report.md", "summary.json")
MEMORY_PLOT = "memory.png"
# Training counts as stuck when the epoch's mean training loss stays within this relative
# band for this many epochs in a row.
STUCK_EPOCHS = 3
STUCK_LOSS_CHANGE = 1e-3
SIDES = {"weight": "w", "activation": "a"}
ACTIVATION_MEMORY = {"max": "largest activation", "sum": "total activation"}


def evaluate(exp, dataset_name, val_set, parameters, fused=None, batch_size=100, threads=2):
    """Validation error on ``val_set`` and memory of ``parameters`` (name -> array) for
    experiment ``exp``.

    Builds a fresh test-mode network; returns (summary dict, per-layer rows)."""
    import nnabla as nn

    from mpdnn.memory import NetworkMemory

    nn.clear_parameters()
    register_parameters(parameters, trainable=False)
    evaluator = Evaluator(exp, val_set, D.NUM_CLASSES[dataset_name], batch_size, fused,
                          threads)
    missing = sorted(set(nn.get_parameters(grad_only=False)) - set(parameters))
    if missing:
        raise UserError(f"the parameters do not fit experiment {exp.name}: {len(missing)} "
                        f"missing, e.g. {missing[0]}")
    error = evaluator.error()
    memory = NetworkMemory(exp)
    sizes = memory.evaluate()
    rows = memory.layer_table()
    summary = {"experiment": exp.name, "dataset": dataset_name, "val_error": error,
               "parametrization": exp.paper_parametrization,
               # None: the experiment sets no memory constraint
               "constraints_met": memory.satisfied(sizes) if memory.constrained else None,
               "target_weight_kbytes": exp.target_weight_kbytes,
               "target_activation_kbytes": exp.target_activation_kbytes,
               "target_activation_type": exp.target_activation_type, **sizes,
               "warnings": bitwidth_bound_warnings(exp, rows)}
    return summary, rows


# ----------------------------------------------------------------------------- layers

def quantized(exp, kind):
    """True when tensors of ``kind`` ("weight" / "activation") are quantized in ``exp``."""
    return getattr(exp, f"{SIDES[kind]}_quantize") is not None


def learned(exp, kind):
    """True when ``kind``'s quantizer learns its parameters (U1-U3, P1-P3), so its bitwidth
    may move within the experiment's bounds."""
    side = SIDES[kind]
    name = getattr(exp, f"{side}_quantize") or ""
    return name.removesuffix("_relu") in PAPER_PARAMETRIZATION


def bitwidth_bounds(exp, kind):
    """(min, max) bitwidth of the quantizers of ``kind`` in ``exp``."""
    side = SIDES[kind]
    return getattr(exp, f"{side}_bitwidth_min"), getattr(exp, f"{side}_bitwidth_max")


def display_name(row):
    """Readable layer name of a table row: the weight's scope without the layer type
    (``res1/layer1/basicblock1/W``), the activation's scope (``res1/layer1``)."""
    name = row["name"]
    if row["kind"] == "weight":
        return "/".join(p for p in name.split("/")
                        if p not in ("quantized_conv", "quantized_affine"))
    return name or "input"


def bitwidth_bound_warnings(exp, rows):
    """One line per kind whose quantized bitwidths leave the experiment's [min, max]."""
    out = []
    for kind in SIDES:
        if not quantized(exp, kind):
            continue
        lo, hi = bitwidth_bounds(exp, kind)
        outside = [display_name(r) for r in rows if r["kind"] == kind
                   and not lo <= r["bits"] <= hi]
        if outside:
            out.append(f"{len(outside)} {kind} bitwidths lie outside the experiment's bounds "
                       f"[{lo}, {hi}] (e.g. {outside[0]}); these parameters were not "
                       f"trained with these bounds")
    return out


def stuck_warning(exp, epoch_losses, rows):
    """One line saying why training looks stuck, or None: the mean training loss of the
    last :data:`STUCK_EPOCHS` epochs stayed within :data:`STUCK_LOSS_CHANGE` (relative), or
    every learned quantizer sits at its lowest bitwidth (where the bitwidth gets no gradient,
    so the memory penalty cannot shrink the network further)."""
    losses = np.asarray(epoch_losses, np.float64)[-STUCK_EPOCHS:]
    if len(losses) == STUCK_EPOCHS and np.all(np.isfinite(losses)):
        if np.ptp(losses) <= STUCK_LOSS_CHANGE * max(float(np.max(np.abs(losses))), 1e-12):
            return (f"training looks stuck: the training loss stayed at {losses[-1]:.4f} for "
                    f"{STUCK_EPOCHS} epochs")
    learned = {}
    for kind in SIDES:
        lo, hi = bitwidth_bounds(exp, kind)
        bits = [r["bits"] for r in rows if r["kind"] == kind and _learned(r)]
        if bits and lo < hi:   # a fixed bitwidth (min = max) is no sign of anything
            learned[kind] = (lo, bits)
    if learned and all(max(bits) <= lo for lo, bits in learned.values()):
        lowest = ", ".join(f"{kind}s {lo} bits" for kind, (lo, _) in learned.items())
        return (f"training looks stuck: every learned quantizer is at its lowest bitwidth "
                f"({lowest}), where the memory penalty cannot shrink it further")
    return None


def _learned(row):
    return any(k in row for k in ("n", "d", "xmin", "xmax"))


def _layer_csv(rows):
    keys = ["name", "kind", "count", "bits", "kbytes", "n", "d", "xmin", "xmax"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in keys})
    return buf.getvalue()


# ----------------------------------------------------------------------------- plots

def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def plot_bitwidths(exp, rows, path, title):
    """Bar plot of the per-layer bitwidths by layer name, weights above activations, with
    the experiment's bitwidth bounds as dashed lines. Kinds left in float are left out
    (unless nothing is quantized)."""
    plt = _pyplot()
    kinds = [k for k in SIDES if quantized(exp, k)] or ["weight"]
    widest = max(sum(r["kind"] == k for r in rows) for k in kinds)
    fig, axes = plt.subplots(len(kinds), 1, figsize=(max(8.0, 0.28 * widest + 2), 3.4 * len(kinds)),
                             squeeze=False)
    for ax, kind in zip(axes[:, 0], kinds):
        sel = [r for r in rows if r["kind"] == kind]
        color = "tab:blue" if kind == "weight" else "tab:orange"
        ax.bar(range(len(sel)), [r["bits"] for r in sel], color=color)
        if learned(exp, kind):
            lo, hi = bitwidth_bounds(exp, kind)
            for value, label in ((lo, "min"), (hi, "max")):
                ax.axhline(value, color="gray", linestyle="--", linewidth=1)
                ax.annotate(f"{label} {value}", (1.0, value), xycoords=("axes fraction", "data"),
                            xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)
        ax.set_ylim(0, max([bitwidth_bounds(exp, kind)[1]] + [r["bits"] for r in sel]) + 1)
        ax.set_ylabel(f"{kind} bits")
        ax.set_xticks(range(len(sel)))
        ax.set_xticklabels([display_name(r) for r in sel], rotation=90, fontsize=6)
        ax.set_xlim(-0.6, len(sel) - 0.4)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].set_title(title)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_memory(run, exp, path):
    """Weight memory and the constrained activation memory per epoch of a training run, each
    with its target as a dashed line; False (nothing written) before the first epoch."""
    kind = ACTIVATION_MEMORY[exp.target_activation_type]
    panels = [("weight", read_series(run, "weight kbytes"), exp.target_weight_kbytes),
              (kind, read_series(run, "activation kbytes"), exp.target_activation_kbytes)]
    if not len(panels[0][1][0]):
        return False
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, (label, (epochs, kbytes), target) in zip(axes, panels):
        ax.plot(epochs, kbytes, marker="o", label=label if label == "weight"
                else f"{label} (per sample)")
        if target > 0:
            ax.axhline(target, color="tab:red", linestyle="--", label=f"target {target:g} kB")
        ax.set_title(label.capitalize() + " memory")
        ax.set_xlabel("epoch")
        ax.set_ylabel("kB")
        ax.set_ylim(0, 1.15 * max([float(max(kbytes)), target]))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    learned = exp.paper_parametrization
    fig.suptitle(f"{exp.name}: memory per epoch (weights {learned['weights'] or 'float or fixed'}"
                 f", activations {learned['activations'] or 'float or fixed'})", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return True


# ----------------------------------------------------------------------------- files

def write_outputs(out, exp, summary, rows, heading, memory_plot=False):
    """:data:`OUTPUT_FILES` in ``out``, ``summary.json`` last; ``memory_plot``: link the
    run's ``memory.png`` from the report."""
    out = Path(out)
    with atomic_write(out / "layers.csv", "w") as f:
        f.write(_layer_csv(rows))
    plot_bitwidths(exp, rows, out / "bitwidths.png", heading)
    table = markdown_table(
        ["layer", "kind", "values", "bits", "kB", "d", "q_min", "q_max"],
        [[display_name(r), r["kind"], r["count"], f"{r['bits']:.0f}", f"{r['kbytes']:.2f}",
          _fmt(r.get("d")), _fmt(r.get("xmin")), _fmt(r.get("xmax"))] for r in rows])
    learned = summary["parametrization"]
    lines = [f"# {heading}", ""]
    lines += [f"**Warning:** {w}" for w in summary.get("warnings", [])]
    lines += [""] if summary.get("warnings") else []
    lines += [f"- learned quantizers: weights {learned['weights'] or 'none'}, "
              f"activations {learned['activations'] or 'none'}",
              f"- bitwidths: {_bounds_text(exp)}",
              f"- validation error: {summary['val_error'] * 100:.2f} %",
              f"- weight memory: {summary['weight_kbytes']:.2f} kB"
              + _target(summary["target_weight_kbytes"]),
              f"- activation memory ({summary['target_activation_type']}): "
              f"{summary['activation_kbytes']:.2f} kB"
              + _target(summary["target_activation_kbytes"]),
              f"- total / largest activation: {summary['total_activation_kbytes']:.2f} / "
              f"{summary['max_activation_kbytes']:.2f} kB"]
    if summary["constraints_met"] is not None:
        lines.append(f"- constraints met: {'yes' if summary['constraints_met'] else 'no'}")
    lines += ["", "![bitwidths](bitwidths.png)", ""]
    if memory_plot:
        lines += [f"![memory per epoch]({MEMORY_PLOT})", ""]
    lines += ["Raw quantizer parameters (d, q_min, q_max) before their power-of-two / clip "
              "constraints; activation sizes are per sample.", "", table, ""]
    with atomic_write(out / "report.md", "w") as f:
        f.write("\n".join(lines))
    with atomic_write(out / "summary.json", "w") as f:
        json.dump(summary, f, indent=2)


def _bounds_text(exp):
    parts = []
    for kind in SIDES:
        if learned(exp, kind):
            lo, hi = bitwidth_bounds(exp, kind)
            parts.append(f"{kind}s {lo}-{hi} bits")
        elif quantized(exp, kind):
            parts.append(f"{kind}s fixed at {getattr(exp, SIDES[kind] + '_bitwidth')} bits")
        else:
            parts.append(f"{kind}s float (32 bits)")
    return ", ".join(parts)


def _fmt(v):
    return "" if v is None else f"{v:.4g}"


def _target(t):
    return f" (target {t:g} kB)" if t and t > 0 else ""


def write_report(out, exp, dataset_name, val_set, fused):
    """Report of the best checkpoint of a finished run (the latest if no epoch met the
    constraints), with the stuck-training warning if it applies."""
    from common.train.checkpoint import CheckpointManager

    manager = CheckpointManager(Path(out) / "checkpoints", clean=False)
    ckpt = manager.load_best() or manager.load_latest()
    summary, rows = evaluate(exp, dataset_name, val_set, dict(ckpt.params), fused)
    summary["iteration"] = ckpt.step
    stuck = stuck_warning(exp, read_series(out, "train loss")[1], rows)
    if stuck:
        summary["warnings"].append(stuck)
    memory_plot = plot_memory(out, exp, Path(out) / MEMORY_PLOT)
    write_outputs(out, exp, summary, rows, f"{exp.name} on {dataset_name}", memory_plot)
    return summary
