"""``eval.py``: validation error and memory of a trained network (run, checkpoint or .h5)."""
import time
from pathlib import Path

from common.context import context_from_args
from common.errors import UserError
from common.train.checkpoint import CheckpointManager, load_checkpoint
from mpdnn.experiments import get_experiment


def build_parser():
    from common.cli import Parser
    from mpdnn.training import add_common_args
    p = Parser(description="Evaluate a quantized network: validation error, weight and "
                                  "activation memory, per-layer bitwidths.")
    p.add_argument("weights", help="run directory (its best checkpoint), checkpoint .npz, or "
                                   "nnabla .h5 parameter file (e.g. the official params_best.h5; "
                                   "needs --experiment)")
    p.add_argument("--output", default=None,
                   help="write report.md, layers.csv, bitwidths.png and summary.json here")
    p.add_argument("--batch-size", type=int, default=100)
    add_common_args(p)
    # default: the run's own validation subset and data folder
    p.set_defaults(experiment=None, val_samples=None)
    return p


def _experiment_from(saved, args):
    """The run's resolved experiment, unless --experiment names another one."""
    if args.experiment and args.experiment != saved.get("name"):
        return get_experiment(args.experiment)
    name = saved.pop("name")
    return get_experiment(name, **saved)


def load_weights(args):
    """(experiment, dataset name, parameters, source description)."""
    from mpdnn.training import parse_overrides, read_parameters
    path = Path(args.weights)
    saved, run_args = None, {}
    if path.is_dir():
        manager = CheckpointManager(path / "checkpoints" if (path / "checkpoints").is_dir()
                                    else path, clean=False)
        ckpt = manager.load_best() or manager.load_latest()
        if ckpt is None:
            raise UserError(f"{path}: no checkpoint found")
        saved = dict(ckpt.config.get("experiment") or {})
        run_args = ckpt.config.get("args") or {}
        params, source = dict(ckpt.params), f"{ckpt.path} (iteration {ckpt.step})"
    elif path.suffix == ".npz":
        ckpt = load_checkpoint(path)
        saved = dict(ckpt.config.get("experiment") or {})
        run_args = ckpt.config.get("args") or {}
        params, source = dict(ckpt.params), f"{path} (iteration {ckpt.step})"
    else:
        params, source = read_parameters(path), str(path)
    if saved:
        exp = _experiment_from(saved, args)
    elif args.experiment:
        exp = get_experiment(args.experiment)
    else:
        raise UserError(f"{path} does not say which experiment it belongs to: pass --experiment")
    overrides = parse_overrides(args.set)
    if overrides:
        values = {**exp.as_dict(), **overrides}
        values.pop("name")
        exp = get_experiment(exp.name, **values)
    if args.val_samples is None:
        args.val_samples = run_args.get("val_samples", 0)
    if args.data_dir is None:
        args.data_dir = run_args.get("data_dir")
    return exp, args.dataset or run_args.get("dataset") or exp.dataset, params, source


def main(argv=None):
    import nnabla as nn

    from mpdnn.report import evaluate, write_outputs
    from mpdnn.training import QUANTIZER_IMPLEMENTATIONS, datasets

    args = build_parser().parse_args(argv)
    start = time.time()
    exp, dataset, params, source = load_weights(args)
    args.train_samples = 0
    _, val_set = datasets(args, dataset)
    nn.set_default_context(context_from_args(args))
    summary, rows = evaluate(exp, dataset, val_set, params,
                             QUANTIZER_IMPLEMENTATIONS[args.quantizers], args.batch_size,
                             args.loader_threads)
    summary["weights"] = source
    print(f"{exp.name} on {dataset} ({len(val_set)} validation samples), weights {source}")
    print(f"validation error {summary['val_error'] * 100:.2f} %, weights "
          f"{summary['weight_kbytes']:.2f} kB, activations ({summary['target_activation_type']}) "
          f"{summary['activation_kbytes']:.2f} kB, constraints met: "
          f"{'yes' if summary['constraints_met'] else 'no'}")
    if args.output:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        write_outputs(out, summary, rows, f"{exp.name} on {dataset} (evaluation)")
        print(f"report in {out / 'report.md'}")
    print(f"done in {time.time() - start:.1f} s")
    return 0
