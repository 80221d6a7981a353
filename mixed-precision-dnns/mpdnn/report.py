"""Evaluation of a trained network and its report: error, memory, per-layer bitwidths.

``report.md`` holds the summary and the per-layer table (bitwidth, step or q_min,
q_max, memory), ``layers.csv`` the same table, ``bitwidths.png`` the per-layer
weight and activation bitwidths (as in the paper's bitwidth figure) and
``summary.json`` the numbers. Every file is written atomically, ``summary.json`` last: a
folder with a ``summary.json`` holds a complete report.
"""
import csv
import io
import json
from pathlib import Path

from common.data import classification as D
from common.errors import UserError
from common.fileio import atomic_write
from common.report import markdown_table
from mpdnn.network import Evaluator, register_parameters

OUTPUT_FILES = ("layers.csv", "bitwidths.png", "report.md", "summary.json")


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
               "constraints_met": memory.satisfied(sizes),
               "target_weight_kbytes": exp.target_weight_kbytes,
               "target_activation_kbytes": exp.target_activation_kbytes,
               "target_activation_type": exp.target_activation_type, **sizes}
    return summary, rows


def _layer_csv(rows):
    keys = ["name", "kind", "count", "bits", "kbytes", "n", "d", "xmin", "xmax"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in keys})
    return buf.getvalue()


def plot_bitwidths(rows, path, title):
    """Bar plot of per-layer bitwidths, weights above activations."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(10, 5.5), sharey=True)
    for ax, kind, color in zip(axes, ("weight", "activation"), ("tab:blue", "tab:orange")):
        sel = [r for r in rows if r["kind"] == kind]
        ax.bar(range(len(sel)), [r["bits"] for r in sel], color=color)
        ax.set_ylabel(f"{kind} bits")
        ax.set_xticks(range(len(sel)))
        ax.set_xticklabels([str(i + 1) for i in range(len(sel))], fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    axes[1].set_xlabel("layer (in network order)")
    axes[0].set_title(title)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def write_outputs(out, summary, rows, heading):
    """:data:`OUTPUT_FILES` in ``out``, ``summary.json`` last."""
    out = Path(out)
    with atomic_write(out / "layers.csv", "w") as f:
        f.write(_layer_csv(rows))
    plot_bitwidths(rows, out / "bitwidths.png", heading)
    table = markdown_table(
        ["tensor", "kind", "values", "bits", "kB", "d", "q_min", "q_max"],
        [[r["name"], r["kind"], r["count"], f"{r['bits']:.0f}", f"{r['kbytes']:.2f}",
          _fmt(r.get("d")), _fmt(r.get("xmin")), _fmt(r.get("xmax"))] for r in rows])
    learned = summary["parametrization"]
    lines = [f"# {heading}", "",
             f"- learned quantizers: weights {learned['weights'] or 'none'}, "
             f"activations {learned['activations'] or 'none'}",
             f"- validation error: {summary['val_error'] * 100:.2f} %",
             f"- weight memory: {summary['weight_kbytes']:.2f} kB"
             + _target(summary["target_weight_kbytes"]),
             f"- activation memory ({summary['target_activation_type']}): "
             f"{summary['activation_kbytes']:.2f} kB"
             + _target(summary["target_activation_kbytes"]),
             f"- total / largest activation: {summary['total_activation_kbytes']:.2f} / "
             f"{summary['max_activation_kbytes']:.2f} kB",
             f"- constraints met: {'yes' if summary['constraints_met'] else 'no'}", "",
             "![bitwidths](bitwidths.png)", "",
             "Raw quantizer parameters (d, q_min, q_max) before their power-of-two / clip "
             "constraints; activation sizes are per sample.", "", table, ""]
    with atomic_write(out / "report.md", "w") as f:
        f.write("\n".join(lines))
    with atomic_write(out / "summary.json", "w") as f:
        json.dump(summary, f, indent=2)


def _fmt(v):
    return "" if v is None else f"{v:.4g}"


def _target(t):
    return f" (target {t:g} kB)" if t and t > 0 else ""


def write_report(out, exp, dataset_name, val_set, fused):
    """Report of the best checkpoint of a finished run (the latest if no epoch met the
    constraints)."""
    from common.train.checkpoint import CheckpointManager

    manager = CheckpointManager(Path(out) / "checkpoints", clean=False)
    ckpt = manager.load_best() or manager.load_latest()
    summary, rows = evaluate(exp, dataset_name, val_set, dict(ckpt.params), fused)
    summary["iteration"] = ckpt.step
    write_outputs(out, summary, rows, f"{exp.name} on {dataset_name}")
    return summary
