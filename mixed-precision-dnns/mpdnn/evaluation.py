"""``eval.py``: validation error and memory of a trained network (run, checkpoint or .h5).

With ``--out-dir`` the report files of :mod:`mpdnn.report` go there. The folder is checked
before any weights are read, may not replace an input of the call, and records which model
and settings produced its scores (:func:`common.results.claim_results_folder`): another
model's or other settings' evaluation into the same folder is refused.
"""
import argparse
import time
from pathlib import Path

from common.cli import Parser, PositiveInt
from common.context import context_from_args
from common.errors import UserError
from common.fileio import check_output_location, refuse_overwriting_inputs
from common.results import RECORD_NAME, claim_results_folder, fingerprint
from mpdnn import options
from mpdnn.experiments import build_experiment
from mpdnn.network import read_parameters
from mpdnn.report import OUTPUT_FILES, evaluate, write_outputs


def build_parser():
    p = Parser(description="Evaluate a quantized network: validation error, weight and "
                           "activation memory, per-layer bitwidths.")
    # the network may also be given as the first argument
    p.add_argument("model", nargs="?", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.add_argument("--model", default=None, metavar="PATH",
                   help="run directory (its best checkpoint), checkpoint .npz, or nnabla .h5 "
                        "parameter file (e.g. the official params_best.h5; needs --experiment)")
    p.add_argument("--out-dir", default=None,
                   help="write report.md, layers.csv, bitwidths.png and summary.json here")
    p.add_argument("--batch-size", type=PositiveInt, default=100,
                   help="validation batch (does not change the result)")
    options.add_experiment_args(p)
    # default: the run's own validation subset
    p.set_defaults(val_samples=None)
    return p


def load_weights(args):
    """(experiment, parameters, checkpoint or None, the file read) for ``--model``; fills in
    the run's data set, root and validation subset where the command leaves them open."""
    params, ckpt, weights_file = read_parameters(args.model)
    saved = dict(ckpt.config.get("experiment") or {}) if ckpt is not None else {}
    run_args = (ckpt.config.get("args") or {}) if ckpt is not None else {}
    overrides = options.parse_overrides(args.set)
    if saved and args.cfg is None and args.experiment in (None, saved.get("name")):
        exp = build_experiment(f"{weights_file} (its experiment)", {**saved, **overrides})
    elif args.experiment:
        exp = options.load_experiment(args.experiment, args.cfg, overrides)
    else:
        raise UserError(f"{args.model} does not say which experiment it belongs to: "
                        "pass --experiment")
    if args.val_samples is None:
        args.val_samples = run_args.get("val_samples", 0)
    if args.root is None:
        args.root = run_args.get("root", run_args.get("data_dir"))  # data_dir: older runs
    args.dataset = options.check_dataset(exp, args.dataset or run_args.get("dataset"), args.root)
    return exp, params, ckpt, weights_file


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.model is None:
        raise UserError("give the network to evaluate: --model RUN_DIR|CHECKPOINT.npz|PARAMS.h5")
    start = time.time()
    out = None
    if args.out_dir is not None:
        out = check_output_location(args.out_dir, "--out-dir")
        given = [Path(p) for p in (args.model, args.cfg) if p is not None and Path(p).is_file()]
        refuse_overwriting_inputs([out / name for name in OUTPUT_FILES + (RECORD_NAME,)],
                                  given, "--out-dir")
    exp, params, ckpt, weights_file = load_weights(args)
    val_set = options.load_split(args.dataset, "val", args.root, args.val_samples)
    if out is not None:
        claim_results_folder(out, {
            "model": fingerprint(weights_file), "experiment": exp.as_dict(),
            "dataset": args.dataset, "val_samples": args.val_samples,
            "root": None if args.root is None else str(Path(args.root).resolve())},
            "summary.json")
    context_from_args(args)
    summary, rows = evaluate(exp, args.dataset, val_set, params,
                             options.QUANTIZER_IMPLEMENTATIONS[args.quantizers], args.batch_size,
                             args.loader_threads)
    source = str(weights_file) + ("" if ckpt is None else f" (iteration {ckpt.step})")
    summary["weights"] = source
    print(f"{exp.name} on {args.dataset} ({len(val_set)} validation samples), weights {source}")
    met = summary["constraints_met"]
    print(f"validation error {summary['val_error'] * 100:.2f} %, weights "
          f"{summary['weight_kbytes']:.2f} kB, activations ({summary['target_activation_type']}) "
          f"{summary['activation_kbytes']:.2f} kB"
          + ("" if met is None else f", constraints met: {'yes' if met else 'no'}"))
    for warning in summary["warnings"]:
        print(f"warning: {warning}")
    if out is not None:
        write_outputs(out, exp, summary, rows, f"{exp.name} on {args.dataset} (evaluation)")
        print(f"report in {out / 'report.md'}")
    print(f"done in {time.time() - start:.1f} s")
    return 0
