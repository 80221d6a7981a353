"""The command lines of the data-cleansing pipeline: ``train.py``, ``score.py``, ``sweep.py``
(and what ``eval.py``, ``cleanse.py`` and the tools share with them).

A *run directory* is what ``train.py`` writes and the other two read:

* ``config.yaml``: every resolved training option (dataset, subset, model, schedule,
  seed, label noise), so later steps rebuild exactly the same training set;
* ``labels.npz``: the training labels the run was trained on (``labels``; noisy when
  ``--flip-labels`` was given), the indices whose label was flipped (``flipped``) and
  the original labels (``clean``);
* what :func:`datacleansing.trace.train` writes: ``trace.npz``, ``params/``,
  ``checkpoints/``, ``summary.json``.

``score.py`` adds ``influence_<method>.csv`` (most harmful first; in ``--out-dir``, by default
the run folder) and a sidecar ``influence_<method>.json`` recording the settings, the run and
the CSV's digest: the scores are reused only when all three match, otherwise computed again
and replaced (said in the output), so scores of other settings are never reported or mixed.
``sweep.py`` adds ``summary.csv`` / ``summary.png`` and, for trials after the first, fresh
runs under ``trials/<t>/`` trained with seed ``t``. Every step can be interrupted and run
again: training continues with ``--resume`` from its last checkpoint (written at every epoch
end and at the interrupted step), finished scores and sweep rows are reused.

Everything here runs in one process: a launch by ``mpirun`` with more than one process is
refused (:func:`datacleansing.options.refuse_multi_process`), see the README.
"""
import csv
import hashlib
import json
import os
import time
from dataclasses import fields
from functools import cached_property
from pathlib import Path

import numpy as np
import yaml

from common.cli import Fraction, NonNegativeInt, Parser, PositiveFloat, PositiveInt
from common.context import add_context_args, context_from_args
from common.errors import Interrupted, UserError
from common.fileio import atomic_write, check_output_location, write_npz
from common.terminal import NO_PROGRESS_ENV, interrupt_message
from common.train.out_of_core import add_ooc_args, out_of_core_from_args
from common.train.run import TrainingRun, holds_run
from datacleansing import data as D
from datacleansing import retrain as R
from datacleansing import trace as T
from datacleansing.influence import DEFAULT_IMPL, HESSIANS, IMPLS, METHODS, SGD_METHODS
from datacleansing.influence_functions import default_damping
from datacleansing.options import IMAGE_SIZE, MODEL_NAMES, hidden_switch, refuse_multi_process

PACKAGE_DIR = Path(__file__).resolve().parent.parent
SMOKE_CONFIG = PACKAGE_DIR / "configs" / "smoke.yaml"
PAPER_CONFIG = PACKAGE_DIR / "configs" / "paper.yaml"
CONFIG_NAME, LABELS_NAME, SUMMARY_NAME = "config.yaml", "labels.npz", "summary.json"
SWEEP_CSV, SWEEP_PLOT, SWEEP_STATE = "summary.csv", "summary.png", "sweep.yaml"
TRAIN_KEYS = tuple(f.name for f in fields(T.TrainConfig))
DEFAULT_OUTPUT = Path("runs") / "data-cleansing" / "smoke"
TOP_FRACTION = 0.1


def _quiet():
    return os.environ.get(NO_PROGRESS_ENV, "").strip() not in ("", "0")


def _mb(n_bytes):
    return n_bytes / 1e6


# ----------------------------------------------------------------------------- train.py

def build_train_parser():
    p = training_parser("Train a classifier and record what the influence methods need "
                         "(the paper's recipe, configs/paper.yaml; with neither --root nor "
                         "--config: the CPU smoke run of configs/smoke.yaml on the bundled "
                         "real MNIST subset).")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --output from its last checkpoint")
    p.add_argument("--stop-at-epoch", type=NonNegativeInt, default=0,
                   help="end after that many epochs (continue with --resume); 0 = all")
    return add_training_args(p)


def training_parser(description):
    """A parser with the configs of train.py (paper recipe with --root, else the smoke run)
    and ``--output`` (train.py and eval.py)."""
    p = Parser(description=description, default_config=str(PAPER_CONFIG),
               smoke_config=str(SMOKE_CONFIG), smoke_unless=("root",))
    p.add_argument("--output", default=str(DEFAULT_OUTPUT), help="run folder")
    return p


def add_training_args(p):
    """The options of a training run (dataset, model, schedule, seed, device, official
    aliases), as train.py records them in config.yaml."""
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="mnist5k",
                   help=f"one of {', '.join(D.DATASETS)} (default: mnist5k, the bundled real "
                        f"MNIST subset; cifar10 with --root)")
    g.add_argument("--root", default=None,
                   help="dataset folder: MNIST IDX files, CIFAR-10 (cifar-10-batches-py), "
                        "STL-10 (stl10_binary) or, for 'folder', a DIR/<class>/<image> tree")
    g.add_argument("--image-size", type=IMAGE_SIZE, default=32,
                   help="side the 'folder' images are resized to")
    g.add_argument("--train-samples", type=NonNegativeInt, default=0,
                   help="train on a fixed random subset of N training samples (0 = all)")
    g.add_argument("--flip-labels", type=Fraction, default=0.0, metavar="FRACTION",
                   help="give this fraction (< 1) of the training samples a wrong random label "
                        "(seeded by --seed; stored in RUN/labels.npz)")
    g.add_argument("--shift", type=NonNegativeInt, default=0,
                   help="augmentation: random shift of up to N pixels (0 = off)")
    g.add_argument("--flip", action="store_true", help="augmentation: random horizontal flip")
    g = p.add_argument_group("training")
    g.add_argument("--model", choices=MODEL_NAMES, default="cnn")
    g.add_argument("--epochs", type=PositiveInt, default=10)
    g.add_argument("--batch-size", type=PositiveInt, default=64)
    g.add_argument("--lr", type=PositiveFloat, default=0.05,
                   help="SGD learning rate (no momentum)")
    g.add_argument("--trace-epochs", type=PositiveInt, default=1,
                   help="record the steps of the last N epochs (what influence and the "
                        "replay retraining walk through)")
    g.add_argument("--cache", choices=("final", "all"), default="final",
                   help="final = only the final parameters (the storage-efficient method); "
                        "all = also the parameters before every traced step (needed by "
                        "SGD-influence, --method hara)")
    g.add_argument("--seed", type=NonNegativeInt, default=0)
    add_context_args(p)
    add_ooc_args(p)
    p.add_alias("--data-dir", "root")
    # the official scripts' spellings (eval_sgd_influence.py; the NNC plugin's args.py)
    for alias, dest in (("-o", "output"), ("--output_dir", "output"), ("-e", "epochs"),
                        ("--n_epochs", "epochs"), ("-ds", "dataset"), ("-bs", "batch_size"),
                        ("--batch_size", "batch_size"), ("-m", "model"),
                        ("-di", "device_id")):
        p.add_alias(alias, dest)
    return p


def check_train_options(opts):
    """Validate what the flag types cannot (a dict of options) with one-line errors."""
    if opts["dataset"] not in D.DATASETS:
        raise UserError(f"unknown dataset {opts['dataset']!r}; use one of "
                        f"{', '.join(D.DATASETS)}")
    if opts["dataset"] == "mnist5k" and opts.get("root"):
        raise UserError("--root is for --dataset mnist, cifar10, stl10 or folder; mnist5k is "
                        "bundled")
    if opts["trace_epochs"] > opts["epochs"]:
        raise UserError(f"--trace-epochs {opts['trace_epochs']} exceeds --epochs "
                        f"{opts['epochs']}")
    if opts["flip_labels"] >= 1.0:
        raise UserError("--flip-labels must be a fraction in [0, 1)")


def train_config(opts):
    return T.TrainConfig(**{k: opts[k] for k in TRAIN_KEYS})


def load_splits(opts):
    """The run's splits: the dataset (split seed 0) reduced to ``train_samples``."""
    splits = D.load(opts["dataset"], opts.get("root"), seed=0,
                    image_size=opts.get("image_size", 32))
    n = opts.get("train_samples") or 0
    if 0 < n < len(splits.y_train):
        keep = np.sort(np.random.default_rng(0).permutation(len(splits.y_train))[:n])
        splits.x_train, splits.y_train = splits.x_train[keep], splits.y_train[keep]
        splits.paths = [splits.paths[i] for i in keep]
    if len(splits.y_train) < 1:
        raise UserError("the training set is empty")
    return splits


def train_run(opts, quiet=None, ooc=None):
    """Train (or resume) the run described by the option dict ``opts`` (``ooc``: an optional
    :class:`common.train.out_of_core.OutOfCore`); returns (run folder, summary dict or None
    when stopped early). The folder is checked before the data is read, and written only
    once the data loaded (see :class:`common.train.run.TrainingRun`)."""
    check_train_options(opts)
    quiet = _quiet() if quiet is None else quiet
    out = Path(opts["output"])
    run = TrainingRun(out, opts, resume=opts["resume"], keep_last=1,
                      hint=f"continue with --config {out / CONFIG_NAME} --resume, or choose a "
                           "new --output").open()
    splits = load_splits(opts)
    clean = splits.y_train
    labels, flipped = clean, np.zeros(0, np.int64)
    if opts["flip_labels"] > 0:
        labels, flipped = D.flip_labels(clean, opts["flip_labels"], splits.n_classes,
                                        seed=opts["seed"])
    run.begin()
    with atomic_write(out / LABELS_NAME, "wb") as f:
        write_npz(f, {"labels": labels, "flipped": flipped, "clean": clean})
    summary = T.train(train_config(opts), splits, out, labels=labels, run=run, quiet=quiet,
                      stop_after=opts.get("stop_at_epoch") or None, ooc=ooc)
    return out, summary


def describe_cache(summary):
    """One line comparing the two parameter caches."""
    final, steps = summary["final_bytes"], summary["all_steps_bytes"]
    text = f"parameter cache: final {final:,} bytes ({_mb(final):.2f} MB)"
    if summary.get("all_steps_files"):
        text += (f"; all {summary['all_steps_files']} traced steps {steps:,} bytes "
                 f"({_mb(steps):.2f} MB, {steps / final:.0f}x)")
    else:
        text += "; all traced steps: not cached (--cache final)"
    return text


def train_main(argv=None):
    args = build_train_parser().parse_args(argv)
    refuse_multi_process()
    opts = vars(args)
    opts.pop("config", None)
    if opts["root"]:     # later steps may run from another directory
        opts["root"] = str(Path(opts["root"]).resolve())
    ooc = out_of_core_from_args(args, context_from_args(args))
    start = time.time()
    out, summary = train_run(opts, ooc=ooc)
    if summary is None:
        print(f"stopped after epoch {opts['stop_at_epoch']} of {opts['epochs']}; continue "
              f"with --resume")
        return 0
    print(f"val accuracy {summary['val_accuracy']:.4f}, test accuracy "
          f"{summary['test_accuracy']:.4f} ({summary['traced_steps']} traced steps)")
    print(describe_cache(summary))
    print(f"done in {time.time() - start:.1f} s; run in {out}")
    return 0


# ----------------------------------------------------------------------------- reading a run

def _read_config(run):
    path = Path(run) / CONFIG_NAME
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{run} is not a training run (no {CONFIG_NAME}); train it with "
                        f"train.py --output {run}") from None
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or any(k not in data for k in TRAIN_KEYS + ("dataset",)):
        raise UserError(f"{path} is not a train.py configuration")
    return data


class Run:
    """A finished training run read back: options, splits, labels, training config."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise UserError(f"run folder {self.path} does not exist")
        self.opts = _read_config(self.path)
        if not (self.path / SUMMARY_NAME).is_file():
            raise UserError(f"{self.path}: training has not finished; continue it with "
                            f"train.py --output {self.path} --resume")
        self.summary = json.loads((self.path / SUMMARY_NAME).read_text())
        self.cfg = train_config(self.opts)
        self.splits = load_splits(self.opts)
        try:
            with np.load(self.path / LABELS_NAME) as z:
                self.labels, self.flipped = z["labels"], z["flipped"]
        except FileNotFoundError:
            raise UserError(f"{self.path}: {LABELS_NAME} is missing; train the run "
                            f"again") from None
        if len(self.labels) != len(self.splits.y_train):
            raise UserError(f"{self.path}: {LABELS_NAME} has {len(self.labels)} labels for "
                            f"{len(self.splits.y_train)} training samples")

    @property
    def n_train(self):
        return len(self.labels)

    def influence(self, method="final", **options):
        """A score per training sample of this run (negative = harmful), by ``method`` (one
        of :data:`datacleansing.influence.METHODS`); ``options`` go to
        :func:`datacleansing.influence.compute_influence` (``impl``, ``hessian``, ``seed``)."""
        from datacleansing.influence import compute_influence  # nnabla: only when scoring

        return compute_influence(self.path, self.splits, self.cfg.model, method=method,
                                 labels=self.labels, cfg=self.cfg,
                                 dataset=self.opts["dataset"], **options)

    @cached_property
    def fingerprint(self):
        """Digest of what every score of this run depends on: the final parameters, the
        training labels and the traced steps."""
        h = hashlib.sha256()
        final = T.read_params(self.path / "params" / "final.h5")
        arrays = [(f"param/{k}", v) for k, v in sorted(final.items())]
        arrays.append(("labels", self.labels))
        with np.load(self.path / "trace.npz") as z:
            arrays += [(f"trace/{k}", z[k]) for k in sorted(z.files)]
        for name, arr in arrays:
            h.update(name.encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- score.py

def scores_path(out_dir, method):
    return Path(out_dir) / f"influence_{method}.csv"


def write_scores(path, run, scores):
    """``rank,index,path,label,influence``, most harmful (lowest influence) first."""
    order = R.removal_order(scores)
    with atomic_write(path, "w") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["rank", "index", "path", "label", "influence"])
        for rank, i in enumerate(order, 1):
            w.writerow([rank, int(i), run.splits.paths[i], int(run.labels[i]),
                        repr(float(scores[i]))])
    return path


def read_scores(path, n):
    """Scores per training index from an influence CSV."""
    scores = np.full(n, np.nan)
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            scores[int(row["index"])] = float(row["influence"])
    if np.isnan(scores).any():
        raise UserError(f"{path} does not score every one of the {n} training samples")
    return scores


def flipped_in_top(scores, flipped, fraction=TOP_FRACTION):
    """(flipped labels among the ``fraction`` most harmful samples, size of that top set)."""
    top = R.removal_order(scores)[:int(round(fraction * len(scores)))]
    return int(np.isin(top, flipped).sum()), len(top)


def _file_digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _stale(path, record, settings):
    """Why the scores in ``path`` (with their sidecar ``record``) are not those of
    ``settings``, or None when they are."""
    if record is None:
        return "they record no settings"
    changed = [k for k in settings if record.get(k) != settings[k]]
    if changed:
        return "made with another " + ", ".join("run" if k == "run" else f"--{k}"
                                                for k in changed)
    if record.get("csv_sha256") != _file_digest(path):
        return "the CSV does not match its record"
    return None


def _read_record(path):
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def score_run(run, method, impl=DEFAULT_IMPL, hessian="reference", seed=None, quiet=None,
              out_dir=None):
    """Scores of ``method`` for the Run ``run`` and how they were obtained: ``"reused"`` from
    ``influence_<method>.csv`` in ``out_dir`` (default: the run folder) when its sidecar
    records the same settings, the same run and the CSV's digest; otherwise computed and
    written (``"computed"``, or ``"replaced"`` when other scores were there). Returns
    (scores, record, how)."""
    quiet = _quiet() if quiet is None else quiet
    seed = run.cfg.seed if seed is None else seed
    settings = {"method": method, "impl": impl, "hessian": hessian}
    if method in ("random", "confident-learning"):      # seeded: the order, the folds
        settings = {"method": method, "seed": seed}
    elif method == "influence-functions":
        settings = {"method": method, "damping": default_damping(run.opts["dataset"])}
    settings["run"] = run.fingerprint
    path = scores_path(run.path if out_dir is None else out_dir, method)
    record_path = path.with_suffix(".json")
    how = "computed"
    if path.is_file():
        record = _read_record(record_path)
        why = _stale(path, record, settings)
        if why is None:
            return read_scores(path, run.n_train), record, "reused"
        print(f"{path}: replacing scores that do not belong to this call ({why})", flush=True)
        how = "replaced"
    start = time.time()
    scores = run.influence(method, impl=impl, hessian=hessian, seed=seed, quiet=quiet)
    record = dict(settings, seconds=round(time.time() - start, 3), samples=run.n_train)
    if len(run.flipped):
        found, top = flipped_in_top(scores, run.flipped)
        record.update(flipped_in_top=found, top=top, flipped=len(run.flipped))
    write_scores(path, run, scores)
    record["csv_sha256"] = _file_digest(path)
    with atomic_write(record_path, "w") as f:
        json.dump(record, f, indent=2)
    return scores, record, how


def build_score_parser():
    p = Parser(description="Score every training sample of a run by its influence on the "
                           "validation loss (negative = harmful); writes "
                           "influence_<method>.csv, most harmful first, into --out-dir.")
    p.add_argument("run", help="run folder written by train.py")
    p.add_argument("--out-dir", default=None,
                   help="folder for influence_<method>.csv and .json (default: the run "
                        "folder)")
    hidden_switch(p, ("-a", "--calc-infl-with-all-params"), "method", "hara", "final")
    p.add_argument("--method", choices=METHODS, default="final",
                   help="final = the storage-efficient method (final parameters only); "
                        "hara = SGD-influence (needs a run trained with --cache all); "
                        "influence-functions = Koh & Liang at the final parameters, as the "
                        "reference's eval_influence_functions.py; confident-learning = "
                        "cleanlab on cross-validated logistic regression of the pixels; "
                        "random = a random baseline")
    p.add_argument("--impl", choices=IMPLS, default=DEFAULT_IMPL,
                   help="how the per-sample gradient products are computed (the same scores "
                        "to float rounding): reverse = one pass per step, the fastest; loop = "
                        "one sample at a time, as the reference; batched, double = "
                        "forward-mode tangents, double backprop")
    p.add_argument("--hessian", choices=HESSIANS, default="reference",
                   help="reference = the reference code's extra 1/batch in the Hessian term; "
                        "textbook = the linearized SGD update")
    p.add_argument("--seed", type=NonNegativeInt, default=None,
                   help="seed of --method random and of confident-learning's folds "
                        "(default: the run's seed)")
    add_context_args(p)
    p.add_alias("-di", "device_id")
    return p


def score_main(argv=None):
    args = build_score_parser().parse_args(argv)
    refuse_multi_process()
    out_dir = Path(args.out_dir if args.out_dir is not None else args.run)
    check_output_location(out_dir, "--out-dir")
    run = Run(args.run)
    context_from_args(args)
    with interrupt_message(lambda: "interrupted while scoring; nothing was written: run the "
                                   "same command again"):
        scores, meta, how = score_run(run, args.method, args.impl, args.hessian, args.seed,
                                      out_dir=out_dir)
    path = scores_path(out_dir, args.method)
    what = "reused" if how == "reused" else f"{how} in {meta['seconds']:.1f} s"
    print(f"{args.method}: {run.n_train} samples scored ({what}); most harmful first in {path}")
    if len(run.flipped):
        found, top = flipped_in_top(scores, run.flipped)
        print(f"flipped labels among the {TOP_FRACTION:.0%} most harmful: {found} of {top} "
              f"({found / top:.1%}; {len(run.flipped)} of {run.n_train} labels are flipped)")
    return 0


# ----------------------------------------------------------------------------- sweep.py

def build_sweep_parser():
    p = Parser(description="Remove the k most harmful samples by each method, retrain, "
                           "and record the test accuracy (RUN/summary.csv, RUN/summary.png); "
                           "run it again to continue.")
    p.add_argument("run", help="run folder written by train.py (trial 0)")
    add_sweep_args(p, methods=[*SGD_METHODS, "random"], counts=[0, 10, 30, 100, 300])
    add_context_args(p)
    add_ooc_args(p)
    p.add_alias("-di", "device_id")
    return p


def add_sweep_args(p, methods, counts):
    """--methods, --counts, --trials, --mode, --impl, --hessian and their official aliases
    (sweep.py and eval.py)."""
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(methods))
    p.add_argument("--counts", nargs="+", type=NonNegativeInt, default=list(counts),
                   help="numbers of samples removed")
    p.add_argument("--trials", type=PositiveInt, default=1,
                   help="trial t > 0 trains a fresh run with seed t into RUN/trials/<t>/")
    hidden_switch(p, ("-ra", "--retrain_all"), "mode", "full", "replay")
    p.add_argument("--mode", choices=R.MODES, default="replay",
                   help="replay = redo the traced epochs without the removed samples (the "
                        "reference); full = retrain from the initial parameters")
    p.add_argument("--impl", choices=IMPLS, default=DEFAULT_IMPL)
    p.add_argument("--hessian", choices=HESSIANS, default="reference")
    for alias, dest in (("-nt", "trials"), ("--n_trials", "trials"), ("-r", "counts"),
                        ("--remove_n_list", "counts")):
        p.add_alias(alias, dest)


def _sweep_state(run_dir, state):
    """Refuse to mix rows made with other settings into an existing summary.csv."""
    csv_path, state_path = run_dir / SWEEP_CSV, run_dir / SWEEP_STATE
    if csv_path.is_file():
        saved = yaml.safe_load(state_path.read_text()) if state_path.is_file() else None
        if saved != state:
            raise UserError(f"{csv_path} holds a sweep made with other settings ({saved}); "
                            f"delete it to start over or use the same --mode/--impl/--hessian")
        return R.read_summary(csv_path)
    with atomic_write(state_path, "w") as f:
        yaml.safe_dump(state, f, sort_keys=True)
    return []


def trial_run(base, trial, quiet=None, ooc=None, command="sweep.py"):
    """The Run of ``trial``: the base run itself, or a run with seed ``trial`` trained (or
    continued) into base/trials/<trial>/ with the base run's options."""
    if trial == 0:
        return base
    out = base.path / "trials" / str(trial)
    if not (out / SUMMARY_NAME).is_file():
        started = holds_run(out)
        opts = dict(base.opts, seed=trial, output=str(out), resume=started, stop_at_epoch=0)
        print(f"trial {trial}: {'continuing' if started else 'training'} a fresh run with seed "
              f"{trial} in {out}", flush=True)
        try:
            train_run(opts, quiet=quiet, ooc=ooc)
        except Interrupted:
            raise Interrupted(f"interrupted while training trial {trial} (its last checkpoint "
                              f"in {out} is kept); run the same {command} command again to "
                              "continue") from None
    return Run(out)


def mean_table(rows, methods, counts):
    """Rows of [k, mean accuracy % per method] over trials."""
    table = []
    for k in counts:
        line = [k]
        for m in methods:
            acc = [r["test_accuracy"] for r in rows if r["method"] == m and r["removed"] == k]
            line.append(f"{100 * np.mean(acc):.2f}" if acc else "-")
        table.append(line)
    return table


def sweep_main(argv=None):
    args = build_sweep_parser().parse_args(argv)
    refuse_multi_process()
    check_output_location(args.run, "RUN")
    base = Run(args.run)
    methods = list(dict.fromkeys(args.methods))
    counts = sorted(set(args.counts))
    if counts[-1] > base.n_train:
        raise UserError(f"--counts must lie in 0..{base.n_train} (the training set size)")
    if "hara" in methods and base.cfg.cache != "all":
        raise UserError(f"--methods hara needs the parameters of every traced step: train "
                        f"{base.path} with --cache all, or leave hara out")
    ooc = out_of_core_from_args(args, context_from_args(args))
    run_sweep(base, methods, counts, args, ooc)
    return 0


def run_sweep(base, methods, counts, args, ooc, command="sweep.py"):
    """For every trial (``args.trials``), score with every method and retrain without the k
    most harmful for every k (``args.mode``, ``args.impl``, ``args.hessian``), appending each
    finished row to ``summary.csv`` (rows found there are skipped); then the plot and the
    table of mean accuracies."""
    from common.report import markdown_table
    state = {"mode": args.mode, "impl": args.impl, "hessian": args.hessian}
    csv_path = base.path / SWEEP_CSV
    done = {(r["method"], r["trial"], r["removed"]) for r in _sweep_state(base.path, state)}
    quiet = _quiet()
    start = time.time()
    with interrupt_message(lambda: f"interrupted; the rows finished so far are kept in "
                                   f"{csv_path}: run the same {command} command again to "
                                   "continue"):
        for t in range(args.trials):
            _sweep_trial(base, t, methods, counts, done, args, csv_path, quiet, ooc, command)
    rows = R.read_summary(csv_path)
    R.plot_summary(rows, base.path / SWEEP_PLOT)
    print(markdown_table(["removed"] + [f"{m} acc. %" for m in methods],
                         mean_table(rows, methods, counts)))
    print(f"done in {time.time() - start:.1f} s; {csv_path} and {base.path / SWEEP_PLOT}")
    return rows


def _sweep_trial(base, t, methods, counts, done, args, csv_path, quiet, ooc, command):
    """Score trial ``t``'s run and retrain it for every (method, count) not ``done``; every
    finished row is appended to ``csv_path`` at once."""
    todo = [(m, k) for m in methods for k in counts if (m, t, k) not in done]
    if not todo:
        print(f"trial {t}: all {len(methods) * len(counts)} rows done, skipped")
        return
    run = trial_run(base, t, quiet, ooc, command)
    scores = {}
    for m in sorted({m for m, _ in todo}, key=methods.index):
        scores[m], meta, how = score_run(run, m, args.impl, args.hessian, quiet=quiet)
        print(f"trial {t}: {m} scores " + ("reused" if how == "reused" else
                                          f"{how} in {meta['seconds']:.1f} s"), flush=True)
    unchanged = None   # removing nothing gives the same result for every method
    for m, k in todo:
        if k == 0 and unchanged is not None:
            row = dict(unchanged, method=m)
            R.append_rows(csv_path, [row])
        else:
            row = R.sweep(run.path, run.cfg, run.splits, {m: scores[m]}, [k], csv_path,
                          mode=args.mode, labels=run.labels, trial=t, quiet=True,
                          ooc=ooc)[0]
            if k == 0:
                unchanged = row
        print(f"trial {t}: {m}, {k} removed: test accuracy "
              f"{100 * row['test_accuracy']:.2f}%", flush=True)
