"""Training of a quantized network for a named experiment (resumable, data-parallel).

The recipe is the official one (``train_resnet.py`` of sony/ai-research-code):
cross-entropy plus the memory penalties of :mod:`mpdnn.memory`; Momentum 0.9 (or
Adam when the experiment says so) with the learning rate divided by 10 at epochs
80 and 120 of 160, batch 128, weight decay 2e-4 on every trained parameter
(quantizer parameters included, as officially); when a memory constraint is set,
the gradients of step/range parameters are clipped to +-d (U3) or +-q_min (P3)
before the update. After every update the quantizer parameters are projected
back into their allowed ranges (just inside the bounds, d below q_max, q_min
below q_max). The best checkpoint is the one with the lowest validation error
among those that satisfy the memory constraints.

Differences from the official script, on purpose:

* ``init_from`` (official: ``weightfile = params_DEFAULT/params_best.h5``, a path
  the official script never writes) names the experiment whose trained network
  starts this one; pass that run with ``--init-from PATH``;
* validation runs once per epoch (the official script also validates after every
  iteration in which the constraints hold, which costs a full pass each time);
* checkpoints (parameters, solver state, data position) every
  ``--checkpoint-interval`` iterations, at each epoch end and at Ctrl-C; ``--resume``
  continues bit-exactly, also in the middle of an epoch;
* the sample order and augmentation come from per-sample generators seeded by
  ``--seed`` (:class:`common.data.loader.BatchLoader`);
* the projection also keeps the bitwidth U3 and P3 imply within the experiment's maximum
  (:func:`cap_implied_bitwidth`; the official one bounds each parameter only);
* a one-line warning when training looks stuck (:func:`mpdnn.report.stuck_warning`).

Data-parallel (``mpirun -n N ... --context cudnn``, :mod:`common.train.distributed`): the
experiment's batch is split over the N processes (each loads every N-th sample of the
global order), gradients are averaged over processes right after the backward pass, so
weight decay, clipping, update and projection see the gradient of the whole batch as a
single process would; validation is shared and its counts summed; only rank 0 writes.
Batch normalization statistics stay per process.

The run folder's life (occupied ``--output``, ``--resume`` checks, Ctrl-C, non-finite loss)
is :class:`common.train.run.TrainingRun`'s.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from common.cli import NonNegativeInt, Parser
from common.config import load_config
from common.context import context_from_args
from common.data import classification as D
from common.data.loader import BatchLoader
from common.errors import UserError
from common.fileio import atomic_write
from common.terminal import progress
from common.train.distributed import init_distributed
from common.train.monitor import TrainingLog
from common.train.out_of_core import add_ooc_args, out_of_core_from_args
from common.train.run import TrainingRun, add_checkpoint_args
from common.train.schedules import step_lr
from common.train.seeding import seed_everything
from mpdnn.network import (Evaluator, build_network, read_parameters, register_parameters,
                           sample_shape)
from mpdnn.options import (QUANTIZER_IMPLEMENTATIONS, add_experiment_args, check_dataset,
                           load_experiment, load_split, parse_overrides)
from mpdnn.report import stuck_warning, write_report

PACKAGE_DIR = Path(__file__).resolve().parent.parent
SMOKE_CONFIG = PACKAGE_DIR / "configs" / "smoke.yaml"
DEFAULT_EXPERIMENT = "PARAMETRIC_FP_WAQ_DELTA_XMAX"
EXPERIMENT_FILE = "experiment.yaml"
# Options that may differ on --resume besides common.train.run.ALWAYS_FREE: the fused and
# graph quantizers compute identical values and gradients.
RESUME_FREE = {"quantizers"}


class _OfficialGpu(argparse.Action):
    """The official ``--gpu N``: train on GPU N (the official script always uses cudnn)."""

    def __call__(self, parser, namespace, values, option_string=None):
        namespace.context, namespace.device_id = "cudnn", values


def build_parser():
    p = Parser(description="Train a quantized network for one named experiment (default "
                           f"{DEFAULT_EXPERIMENT}) with its published recipe; without a dataset "
                           "root, experiment or config file: a CPU smoke run on the bundled "
                           "MNIST subset (configs/smoke.yaml).")
    # official: train_resnet.py EXPERIMENT
    p.add_argument("official_experiment", nargs="?", default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS)
    p.add_argument("--output", default=None, help="run directory (default runs/mpdnn/EXPERIMENT)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("--init-from", default=None, metavar="PATH",
                   help="run directory, checkpoint .npz or nnabla .h5 whose parameters start "
                        "this run (required when the experiment has init_from)")
    p.add_argument("--train-samples", type=NonNegativeInt, default=0,
                   help="use a fixed random subset of N training samples (0 = all)")
    p.add_argument("--seed", type=NonNegativeInt, default=0)
    add_checkpoint_args(p, interval=500, keep_last=2, zero_means="at epoch ends only")
    p.add_argument("--stop-at-epoch", type=NonNegativeInt, default=0,
                   help="end this run after that epoch (continue with --resume); 0 = all")
    add_experiment_args(p)
    p.add_argument("--gpu", dest="device_id", type=NonNegativeInt, action=_OfficialGpu,
                   default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    add_ooc_args(p)
    return p


def parse_args(argv=None):
    """train.py's options. The smoke configuration (configs/smoke.yaml) supplies the
    defaults only when the command names no data (a --root, or a data set other than the
    bundled one), no experiment and no --config/--cfg file; otherwise the experiment's
    published recipe runs."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = _merge_official_experiment(parser.parse_args(argv))
    names_a_recipe = (args.experiment or args.root or args.config or args.cfg
                      or args.dataset not in (None, "mnist5k"))
    if not names_a_recipe:
        parser.default_config = str(SMOKE_CONFIG)
        args = _merge_official_experiment(parser.parse_args(argv))
    args.experiment = args.experiment or DEFAULT_EXPERIMENT
    return args


def _merge_official_experiment(args):
    """The official positional EXPERIMENT becomes --experiment (they may not disagree)."""
    official = vars(args).pop("official_experiment", None)
    if official is not None:
        if args.experiment not in (None, official):
            raise UserError(f"two experiments given: {official} and --experiment "
                            f"{args.experiment}")
        args.experiment = official
    return args


# ----------------------------------------------------------------------------- quantizers

def quantizer_parameters():
    """Raw quantizer parameter variables grouped as {"weights": {...}, "activations": {...}}."""
    import nnabla as nn
    out = {"weights": {}, "activations": {}}
    for name, var in nn.get_parameters().items():
        parts = name.split("/")
        if len(parts) >= 3 and parts[-3] in ("Wquant", "bquant"):
            out["weights"][name] = var
        elif len(parts) >= 3 and parts[-3] == "Aquant":
            out["activations"][name] = var
    return out


def _limits(exp, group):
    """Allowed range per parameter name for the weight or activation quantizers."""
    p = "w" if group == "weights" else "a"
    g = lambda k: getattr(exp, f"{p}_{k}")  # noqa: E731
    xmin_max = g("xmin_max") if group == "weights" else g("xmax_max")  # official, see layers
    return {"n": (g("bitwidth_min"), g("bitwidth_max")), "d": (g("stepsize_min"),
            g("stepsize_max")), "xmin": (g("xmin_min"), xmin_max),
            "xmax": (g("xmax_min"), g("xmax_max"))}


def clip_quantizer_gradients(groups):
    """Under a memory constraint, clip step/range gradients to +-d (U3) or +-q_min (P3)."""
    for params in groups.values():
        for name, var in params.items():
            scope, pname = name.rsplit("/", 1)
            kind = scope.rsplit("/", 1)[-1]
            if kind == "parametric_fp_d_xmax" and pname in ("d", "xmax"):
                limit = float(params[scope + "/d"].d)
            elif kind == "parametric_pow2_xmin_xmax" and pname in ("xmin", "xmax"):
                limit = float(params[scope + "/xmin"].d)
            else:
                continue
            var.g = np.clip(var.g, -limit, limit)


def project_quantizer_parameters(exp, groups):
    """Keep raw quantizer parameters inside their ranges after an update (1e-5 inside the
    bounds, so the clip in the forward pass keeps passing gradients), with d < q_max (U3)
    and q_min < q_max (P3), and the bitwidth U3 and P3 imply at most the experiment's
    maximum (:func:`cap_implied_bitwidth`)."""
    eps = np.float32(1e-5)
    for group, params in groups.items():
        limits = _limits(exp, group)
        scopes = sorted({name.rsplit("/", 1)[0] for name in params})
        for scope in scopes:
            kind = scope.rsplit("/", 1)[-1]
            small = {"parametric_fp_d_xmax": "d", "parametric_pow2_xmin_xmax": "xmin"}.get(kind)
            if small is not None:
                lo_var, hi_var = params[f"{scope}/{small}"], params[f"{scope}/xmax"]
                lo, hi = np.float32(lo_var.d), np.float32(hi_var.d)
                lo_var.d, hi_var.d = np.minimum(lo, hi - eps), np.maximum(lo + eps, hi)
            for pname in ("n", "d", "xmin", "xmax"):
                var = params.get(f"{scope}/{pname}")
                if var is not None:
                    a, b = limits[pname]
                    var.d = np.clip(np.float32(var.d), np.float32(a) + eps, np.float32(b) - eps)
            if small is not None:
                cap_implied_bitwidth(exp, group, kind, {k: params.get(f"{scope}/{k}")
                                                        for k in ("d", "xmin", "xmax")})


def _snapped_exponent(value):
    """k of the power of two 2**k the quantizers snap ``value`` to (log2 rounded half away
    from zero); within 1e-6 of a tie the lower k, so a cap computed from it is never too
    high whichever way the float32 rounding in the network goes."""
    k = float(np.log2(np.float64(value)))
    lower = float(np.floor(k))
    return lower + 1.0 if k - lower > 0.5 + 1e-6 else lower


def cap_implied_bitwidth(exp, group, kind, params):
    """Keep the bitwidth a U3 or P3 quantizer implies within the experiment's maximum (the
    official script leaves it unbounded: U3 weights at the smallest step 2^-8 could reach
    16 bits with w_bitwidth_max 8). Formulas as in :mod:`mpdnn.memory`, steps and ranges
    snapped to their powers of two:

    * U3, b = ceil(log2(q_max/d + 1)) (+1 for the sign of weights) <= b_max  <=>
      q_max <= d (2^(b_max - sign) - 1): q_max is lowered (d first raised if that bound
      fell below q_max's own minimum);
    * P3, b = ceil(log2(log2(q_max/q_min) + 1) + 1) <= b_max  <=>
      q_min >= q_max / 2^(2^(b_max - 1) - 1): q_min is raised (lowering q_max could
      conflict with its minimum 2^-8, q_min's own minimum is 2^-16).

    The lower bound needs no projection: the bitwidth is never counted below it."""
    side = "w" if group == "weights" else "a"
    setting = lambda key: getattr(exp, f"{side}_{key}")  # noqa: E731
    b_max = setting("bitwidth_max")
    xmax = params["xmax"]
    if kind == "parametric_fp_d_xmax":
        levels = 2 ** (b_max - (1 if group == "weights" else 0)) - 1
        d = params["d"]
        if 2.0 ** _snapped_exponent(d.d) * levels < setting("xmax_min"):
            d.d = np.float32(2.0 ** np.ceil(np.log2(setting("xmax_min") / levels)))
        cap = 2.0 ** _snapped_exponent(d.d) * levels
        xmax.d = np.float32(min(float(xmax.d), cap))
    else:
        # the exponent of q_max as the network sees it (clipped, then snapped); the top of a
        # tie, so that the raised q_min is never too low
        top = float(np.clip(xmax.d, setting("xmax_min"), setting("xmax_max")))
        exponent = -_snapped_exponent(1.0 / top)
        lowest = 2.0 ** (exponent - (2 ** (b_max - 1) - 1))
        params["xmin"].d = np.float32(max(float(params["xmin"].d), lowest))


# ----------------------------------------------------------------------------- training

def _check_experiment_file(run, exp):
    """On --resume, the experiment must resolve as it did when the run started (the YAML
    files or the --cfg file may have changed since)."""
    path = run.out / EXPERIMENT_FILE
    if not (run.resuming and path.is_file()):
        return
    saved, current = load_config(path), exp.as_dict()
    changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if changed:
        raise UserError(f"cannot --resume: experiment {exp.name} now resolves differently "
                        f"from {path} ({', '.join(changed[:4])}); use a new --output")


def _new_epoch_stats():
    return {"loss": 0.0, "cross_entropy": 0.0, "wrong": 0, "seen": 0}


def _step_statistics(dist, loss, cross_entropy, logits, labels):
    """(loss, cross-entropy, wrong, seen) of the last step over the whole batch: the losses
    averaged and the counts summed over processes, so every process sees the same values
    (and stops at the same step on a non-finite loss)."""
    wrong = int(np.sum(np.argmax(logits.d, axis=1) != labels))
    local = np.array([loss.d, cross_entropy.d, wrong, len(labels)], np.float32)
    total = dist.all_reduce_value(local, average=False)
    return (float(total[0]) / dist.size, float(total[1]) / dist.size, int(total[2]),
            int(total[3]))


def train(args):
    import nnabla as nn
    import nnabla.functions as F
    import nnabla.solvers as S

    from mpdnn.memory import NetworkMemory

    out = Path(args.output or Path("runs") / "mpdnn" / args.experiment)
    ctx = context_from_args(args)
    dist = init_distributed(ctx)
    run = TrainingRun(out, args, resume=args.resume, free=RESUME_FREE, dist=dist,
                      keep_last=args.keep_last).open()
    say = print if dist.is_main else (lambda *a, **k: None)

    # Inputs, validated before anything is written.
    exp = load_experiment(args.experiment, args.cfg, parse_overrides(args.set))
    _check_experiment_file(run, exp)
    dataset_name = check_dataset(exp, args.dataset, args.root)
    if exp.init_from and not args.init_from:
        raise UserError(f"experiment {exp.name} starts from the trained network of experiment "
                        f"{exp.init_from}: pass --init-from PATH (that run's directory, a "
                        f"checkpoint or an .h5 file)")
    if exp.batch_size % dist.size:
        raise UserError(f"the batch of {exp.batch_size} cannot be split over {dist.size} "
                        f"processes; use a multiple of {dist.size} (--set batch_size=...)")
    initial = read_parameters(args.init_from)[0] if args.init_from else None
    train_set = load_split(dataset_name, "train", args.root, args.train_samples)
    val_set = load_split(dataset_name, "val", args.root, args.val_samples)
    if len(train_set) < exp.batch_size:
        raise UserError(f"{len(train_set)} training samples do not fill one batch of "
                        f"{exp.batch_size}; use more samples or --set batch_size=...")
    num_classes = D.NUM_CLASSES[dataset_name]
    fused = QUANTIZER_IMPLEMENTATIONS[args.quantizers]
    ooc = out_of_core_from_args(args, dist.ctx)  # before the graph: it may set the context

    run.begin()
    if dist.is_main:
        with atomic_write(out / EXPERIMENT_FILE, "w") as f:
            yaml.safe_dump(exp.as_dict(), f, sort_keys=False)
    nn.clear_parameters()
    seed_everything(args.seed)
    if initial is not None and not run.has_checkpoint():
        register_parameters(initial)
        say(f"initialised {len(initial)} parameters from {args.init_from}")

    loader = BatchLoader(train_set, exp.batch_size // dist.size, shuffle=True, seed=args.seed,
                         num_threads=args.loader_threads, rank=dist.rank,
                         world_size=dist.size)
    image = nn.Variable((loader.batch_size,) + sample_shape(train_set))
    label = nn.Variable((loader.batch_size, 1))
    logits = build_network(exp, image, num_classes, test=False, fused=fused)
    cross_entropy = F.mean(F.softmax_cross_entropy(logits, label))
    memory = NetworkMemory(exp)
    penalty = memory.penalty()
    loss = cross_entropy if penalty is None else cross_entropy + penalty
    for v in (logits, cross_entropy, loss):
        v.persistent = True
    evaluator = Evaluator(exp, val_set, num_classes, 100, fused, args.loader_threads, dist)

    lr0 = exp.initial_learning_rate
    solver = S.Adam(alpha=lr0) if exp.optimizer == "adam" else S.Momentum(lr0, exp.momentum)
    solver.set_parameters(nn.get_parameters())
    trained = solver.get_parameters()
    groups = quantizer_parameters()

    step, extra = run.restore({"solver": solver})
    # warned: the stuck-training warning is printed once per process
    state = {"step": step, "stats": extra.get("epoch_stats", _new_epoch_stats()),
             "warned": False}
    per_epoch = len(loader)
    log = TrainingLog(out, resume_step=state["step"] if run.resuming else None) \
        if dist.is_main else None
    last_epoch = exp.epochs if not args.stop_at_epoch else min(args.stop_at_epoch, exp.epochs)

    def save(metric=None):
        run.save(state["step"], {"solver": solver},
                 config={"args": vars(args), "experiment": exp.as_dict()}, metric=metric,
                 mode="min", extra={"epoch_stats": state["stats"]},
                 epoch=state["step"] // per_epoch)

    def finish_epoch(epoch):
        """Validation, curves and the epoch's checkpoint (best if the constraints hold)."""
        stats = state["stats"]
        sizes = memory.evaluate()
        val_error = evaluator.error()
        n_batches = max(stats["seen"] / exp.batch_size, 1)
        row = {"epoch": epoch + 1, "train_loss": stats["loss"] / n_batches,
               "train_cross_entropy": stats["cross_entropy"] / n_batches,
               "train_error": stats["wrong"] / max(stats["seen"], 1), "val_error": val_error,
               **sizes, "learning_rate": step_lr(lr0, epoch, exp.lr_milestones, exp.lr_decay)}
        if log is not None:
            for key, v in row.items():
                if key != "epoch":
                    log.add(key.replace("_", " "), epoch + 1, v)
        ok = memory.satisfied(sizes)
        say(f"epoch {epoch + 1}: loss {row['train_loss']:.4f}, train error "
            f"{row['train_error']:.4f}, val error {val_error:.4f}, weights "
            f"{sizes['weight_kbytes']:.1f} kB, activations {sizes['activation_kbytes']:.1f} kB"
            + ("" if ok else " (constraints not met)"))
        if log is not None and not state["warned"]:
            stuck = stuck_warning(exp, log.read("train loss")[1], memory.layer_table())
            if stuck:
                say(f"warning: {stuck}")
                state["warned"] = True
        state["stats"] = _new_epoch_stats()
        save(metric=val_error if ok else None)

    with run.guard():
        if state["step"] % per_epoch == 0 and state["stats"]["seen"]:
            # interrupted after an epoch's last step, before its validation
            finish_epoch(state["step"] // per_epoch - 1)
        for epoch in range(state["step"] // per_epoch, last_epoch):
            solver.set_learning_rate(step_lr(lr0, epoch, exp.lr_milestones, exp.lr_decay))
            bar = progress(range(state["step"] % per_epoch, per_epoch),
                           desc=f"epoch {epoch + 1}/{exp.epochs}", unit="it",
                           **({} if dist.is_main else {"disable": True}))
            for b in bar:
                with ooc.step() as hooks:
                    images, labels = loader.get_batch(epoch, b)
                    image.d, label.d = images, labels.reshape(-1, 1)
                    solver.zero_grad()
                    loss.forward(clear_no_need_grad=True, **hooks)
                    loss.backward(clear_buffer=True, **hooks)
                    # the whole batch's gradient first, as one process would compute it
                    dist.all_reduce_grads(trained)
                    solver.weight_decay(exp.weight_decay)
                    if memory.constrained:
                        clip_quantizer_gradients(groups)
                    solver.update()
                    project_quantizer_parameters(exp, groups)
                state["step"] += 1
                value, ce, wrong, seen = _step_statistics(dist, loss, cross_entropy, logits,
                                                          labels)
                stats = state["stats"]
                stats["loss"] += value
                stats["cross_entropy"] += ce
                stats["wrong"] += wrong
                stats["seen"] += seen
                bar.set_postfix(loss=f"{value:.3f}")
                run.step_done(state["step"], value, save=save)
                if args.checkpoint_interval and state["step"] % args.checkpoint_interval == 0 \
                        and state["step"] % per_epoch:
                    save()
            finish_epoch(epoch)

    step = state["step"]
    if step // per_epoch < exp.epochs:
        say(f"stopped after epoch {step // per_epoch} of {exp.epochs}; continue with --resume")
        return out, None
    if not dist.is_main:
        return out, None
    summary = write_report(out, exp, dataset_name, val_set, fused)
    print(f"finished: best validation error {summary['val_error']:.4f} "
          f"(weights {summary['weight_kbytes']:.1f} kB, activations "
          f"{summary['activation_kbytes']:.1f} kB); report in {out / 'report.md'}")
    return out, summary


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    out, summary = train(args)
    if summary is not None:
        print(f"done in {time.time() - start:.1f} s; outputs in {out}")
    return 0
