"""``collect.py RUN_DIR...``: one results table over training runs, as the official
``get_res.py`` prints (the lowest validation error of each run) and as the paper's tables
lay them out: per run the best validation error, the weight memory and the largest
activation (kB per sample) of that checkpoint.

A finished run is read from its ``summary.json`` (its best checkpoint: the lowest
validation error among the epochs that met the memory constraints); an unfinished one from
its curves (the best such epoch so far). Rows are sorted as in the paper's tables: by
network (ResNet-20, ResNet-18, MobileNetV2), then float baseline, fixed quantizers, learned
quantizers with a fixed bitwidth, learned bitwidths under memory constraints, unconstrained
learned bitwidths (Table 4's rows), then weights only before weights and activations and
U1, U2, U3, P1, P2, P3 (``get_res.py``'s order), then experiment name and folder.

The table goes to standard output; with ``--out-dir`` also to ``results.md`` and
``results.csv`` there (the folder is checked before any run is read, the files are written
atomically). Reads JSON, YAML and the curve files only: no network is built.
"""
import csv
import io
import json
from pathlib import Path

from common.cli import Parser
from common.config import load_config
from common.errors import UserError
from common.fileio import atomic_write, check_output_location, refuse_overwriting_inputs
from common.report import markdown_table
from common.train.monitor import read_series
from mpdnn.experiments import MODELS, PAPER_PARAMETRIZATION, build_experiment

OUTPUT_FILES = ("results.md", "results.csv")
EXPERIMENT_FILE = "experiment.yaml"
SUMMARY_FILE = "summary.json"
PARAMETRIZATION_ORDER = ("U1", "U2", "U3", "P1", "P2", "P3")
# Table 4's row order
CATEGORIES = ("float baseline", "fixed quantizers", "learned, fixed bitwidth",
              "learned bitwidth, constrained", "learned bitwidth, unconstrained")
CSV_COLUMNS = ("experiment", "run", "weights", "activations", "target_weight_kbytes",
               "target_activation_kbytes", "target_activation_type", "val_error",
               "weight_kbytes", "max_activation_kbytes", "total_activation_kbytes",
               "constraints_met", "epochs_done", "epochs", "status")


def build_parser():
    p = Parser(description="Results table of mixed-precision training runs (best validation "
                           "error, weight memory, largest activation), sorted as in the "
                           "paper's tables.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders written by train.py")
    p.add_argument("--out-dir", default=None,
                   help="also write results.md and results.csv here")
    return p


# ----------------------------------------------------------------------------- one run

def _is_run(folder):
    return (folder / EXPERIMENT_FILE).is_file() and (folder / "config.yaml").is_file()


def read_run(folder):
    """(experiment, result dict, files read) of one run folder; one-line UserError for a
    folder that is not a run of train.py."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder (give run folders written by train.py)")
    if not _is_run(folder):
        raise UserError(f"{folder} is not a training run of mixed-precision-dnns/train.py "
                        f"(no {EXPERIMENT_FILE} and config.yaml)")
    exp_file = folder / EXPERIMENT_FILE
    saved = dict(load_config(exp_file))
    exp = build_experiment(str(exp_file), saved)
    inputs = [exp_file]
    summary_file = folder / SUMMARY_FILE
    epochs_done = len(read_series(folder, "val error")[0])
    result = {"epochs_done": epochs_done}
    if summary_file.is_file():
        inputs.append(summary_file)
        try:
            summary = json.loads(summary_file.read_text(encoding="utf-8"))
            values = {k: float(summary[k]) for k in ("val_error", "weight_kbytes",
                                                    "max_activation_kbytes",
                                                    "total_activation_kbytes")}
        except (OSError, ValueError, KeyError, TypeError):
            raise UserError(f"{summary_file}: not a summary written by train.py "
                            "(damaged?)") from None
        result.update(values, status="finished")
    else:
        result.update(_best_epoch(folder, exp), status=f"unfinished, {epochs_done} of "
                                                       f"{exp.epochs} epochs")
    result["constraints_met"] = _met(exp, result) if _constrained(exp) else None
    return exp, result, inputs


def _constrained(exp):
    return exp.target_weight_kbytes > 0 or exp.target_activation_kbytes > 0


def _met(exp, values):
    """Whether the memory of ``values`` meets the experiment's targets (None: no values)."""
    if values.get("weight_kbytes") is None:
        return None
    activation = values["max_activation_kbytes" if exp.target_activation_type == "max"
                        else "total_activation_kbytes"]
    return ((exp.target_weight_kbytes <= 0 or values["weight_kbytes"]
             <= exp.target_weight_kbytes)
            and (exp.target_activation_kbytes <= 0
                 or activation <= exp.target_activation_kbytes))


def _best_epoch(folder, exp):
    """Values of the epoch with the lowest validation error among those that met the
    constraints, from the curves of an unfinished run (empty before the first epoch)."""
    names = {"val_error": "val error", "weight_kbytes": "weight kbytes",
             "max_activation_kbytes": "max activation kbytes",
             "total_activation_kbytes": "total activation kbytes"}
    series = {k: dict(zip(*read_series(folder, name))) for k, name in names.items()}
    epochs = [e for e in series["val_error"] if all(e in s for s in series.values())]
    candidates = [{k: float(series[k][e]) for k in names} for e in epochs]
    if _constrained(exp):
        candidates = [c for c in candidates if _met(exp, c)]
    if not candidates:
        return {k: None for k in names}
    return min(candidates, key=lambda c: c["val_error"])


# ----------------------------------------------------------------------------- the table

def quantizer_label(exp, side):
    """"float", "fp 2 bit" (a fixed quantizer), "U3", or "U2, 4 bit" (bitwidth fixed)."""
    kind = getattr(exp, f"{side}_quantize")
    if kind is None:
        return "float"
    kind = kind[:-len("_relu")] if kind.endswith("_relu") else kind
    label = PAPER_PARAMETRIZATION.get(kind)
    if label is None:
        return f"{kind} {getattr(exp, f'{side}_bitwidth')} bit"
    lo, hi = getattr(exp, f"{side}_bitwidth_min"), getattr(exp, f"{side}_bitwidth_max")
    return label if lo < hi else f"{label}, {lo} bit"


def category(exp):
    """The row group of Table 4 an experiment belongs to (index into :data:`CATEGORIES`)."""
    sides = [s for s in ("w", "a") if getattr(exp, f"{s}_quantize") is not None]
    if not sides:
        return 0
    labels = exp.paper_parametrization
    learned = [s for s in sides if labels["weights" if s == "w" else "activations"]]
    if not learned:
        return 1
    if all(getattr(exp, f"{s}_bitwidth_min") == getattr(exp, f"{s}_bitwidth_max")
           for s in learned):
        return 2
    return 3 if _constrained(exp) else 4


def sort_key(exp, run):
    """The paper's table order (see the module docstring)."""
    labels = exp.paper_parametrization
    quantizers = [exp.w_quantize, exp.a_quantize]
    family = min((PARAMETRIZATION_ORDER.index(v) for v in labels.values() if v), default=-1)
    if family < 0:   # fixed or float: uniform before power-of-two
        family = 1 if any(q and q.startswith("pow2") for q in quantizers) else 0
    return (list(MODELS).index(exp.model), category(exp), exp.a_quantize is not None,
            family, exp.name, str(run))


def _kb(value):
    return "–" if value is None else f"{value:.1f}"


def _targets(exp):
    if not _constrained(exp):
        return "–"
    w = f"{exp.target_weight_kbytes:g}" if exp.target_weight_kbytes > 0 else "–"
    a = (f"{exp.target_activation_kbytes:g} ({exp.target_activation_type})"
         if exp.target_activation_kbytes > 0 else "–")
    return f"{w} / {a}"


def _yes_no(value):
    return "" if value is None else ("yes" if value else "no")


def markdown(rows):
    """The results table in markdown."""
    return markdown_table(
        ["experiment", "run", "W / A", "targets W / A kB", "val. error %", "weights kB",
         "largest activation kB", "constraints met", "status"],
        [[exp.name, run, f"{quantizer_label(exp, 'w')} / {quantizer_label(exp, 'a')}",
          _targets(exp), "–" if r["val_error"] is None else f"{r['val_error'] * 100:.2f}",
          _kb(r["weight_kbytes"]), _kb(r["max_activation_kbytes"]),
          _yes_no(r["constraints_met"]), r["status"]] for run, exp, r in rows])


def csv_text(rows):
    """The results table as CSV (errors as fractions, memory in kB, empty = no value)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    for run, exp, r in rows:
        writer.writerow({
            "experiment": exp.name, "run": run, "weights": quantizer_label(exp, "w"),
            "activations": quantizer_label(exp, "a"),
            "target_weight_kbytes": exp.target_weight_kbytes,
            "target_activation_kbytes": exp.target_activation_kbytes,
            "target_activation_type": exp.target_activation_type,
            **{k: "" if r[k] is None else r[k] for k in
               ("val_error", "weight_kbytes", "max_activation_kbytes",
                "total_activation_kbytes")},
            "constraints_met": _yes_no(r["constraints_met"]), "epochs_done": r["epochs_done"],
            "epochs": exp.epochs, "status": r["status"]})
    return buf.getvalue()


def collect(folders):
    """Sorted ``[(run, experiment, result)]`` of the run folders (each once) and the files
    read."""
    rows, inputs, seen = [], [], set()
    for folder in folders:
        key = Path(folder).resolve()
        if key in seen:
            continue
        seen.add(key)
        exp, result, read = read_run(folder)
        rows.append((str(folder), exp, result))
        inputs += read
    rows.sort(key=lambda row: sort_key(row[1], row[0]))
    return rows, inputs


def main(argv=None):
    args = build_parser().parse_args(argv)
    out = None if args.out_dir is None else check_output_location(args.out_dir, "--out-dir")
    rows, inputs = collect(args.runs)
    table = markdown(rows)
    print(table)
    if out is not None:
        outputs = [out / name for name in OUTPUT_FILES]
        refuse_overwriting_inputs(outputs, inputs, "--out-dir")
        text = "\n".join([
            "# Mixed-precision results", "",
            f"{len(rows)} runs. Validation error of each run's best checkpoint (the lowest "
            "among the epochs that met its memory constraints); memory of that checkpoint "
            "in kB (1 kB = 1024 bytes), activations per sample. Sorted as in the paper's "
            "tables: network, then " + ", ".join(CATEGORIES) + "; weights only before "
            "weights and activations; U1, U2, U3, P1, P2, P3.", "", table, ""])
        with atomic_write(outputs[0], "w") as f:
            f.write(text)
        with atomic_write(outputs[1], "w") as f:
            f.write(csv_text(rows))
        print(f"written: {outputs[0]}, {outputs[1]}")
    return 0
