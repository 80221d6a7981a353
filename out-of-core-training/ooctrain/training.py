"""Image-classification training with optional out-of-core execution (``--ooc-budget``):
the command line and loop of ``train.py``.

The paper's headline run is ResNet-50 on ImageNet at batch 1440 on one GPU; the networks
are in :mod:`ooctrain.models` (ResNet-50/101/152, DenseNet-121/169). Recipe (the flags'
defaults, also written out in ``configs/resnet50.yaml``; Goyal et al. 2017): SGD with
momentum 0.9, weight decay 1e-4 on every parameter, learning rate ``lr`` (the linear scaling
rule: 0.1 per 256 images) divided by 10 at each ``--lr-milestones`` iteration (epochs 30, 60
and 80 of 90 at batch 256); softmax cross-entropy; ImageNet augmentation of
:mod:`common.data.classification` (random 224 crop of the image rescaled to 256 on its
shorter side, flip). ``configs/densenet121.yaml`` is DenseNet's own ImageNet recipe (Huang
et al. 2017: Nesterov momentum, ``--solver nesterov``, divided by 10 at epochs 30 and 60).
The paper measures speed and memory, not accuracy, so the schedule is a plain step schedule.

Without ``--config`` and without a data set ``--root``, ``configs/smoke.yaml`` supplies the
defaults instead: a tiny ResNet on the bundled MNIST subset for 60 CPU iterations.

Data (``--dataset``): ``imagenet`` (class folders ``ROOT/{train,val}/<class>/``, any class
count), ``cifar10`` (python pickles), ``mnist5k`` (the bundled real MNIST subset) or
``synthetic`` (seeded random images, for throughput measurements without a data set).

The run folder (``--output``) follows :class:`common.train.run.TrainingRun`: an occupied
folder needs ``--resume``, which continues bit-exactly (with or without the scheduler: it
changes where arrays live, not their values) and refuses options that change results;
Ctrl-C writes a checkpoint of the finished iteration and exits with status 130; a
non-finite loss stops with one line. Every ``--checkpoint-interval`` iterations a
checkpoint (parameters, momentum buffers, iteration, RNG states) is written. Outputs:
``config.yaml``, ``checkpoints/``, the curves ``training loss``, ``learning rate``,
``images per second`` and ``validation error``, and ``final.h5`` at the end.

Under ``mpirun`` (``--context cudnn``) every process trains on its shard of each batch,
gradients are averaged before the update and only rank 0 writes.
"""
import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np

from common.cli import (Fraction, NonNegativeFloat, NonNegativeInt, Parser, PositiveFloat,
                        PositiveInt)
from common.context import add_context_args, context_from_args
from common.data.loader import BatchLoader
from common.errors import UserError
from common.fileio import atomic_path
from common.terminal import progress
from common.train.distributed import init_distributed
from common.train.monitor import TrainingLog
from common.train.out_of_core import add_ooc_args, check_ooc_args, out_of_core_from_args
from common.train.run import TrainingRun, add_checkpoint_args
from common.train.schedules import step_lr
from common.train.seeding import seed_everything
from ooctrain.cli import ClassCount, ImageSize, add_model_args, model_spec_from_args
from ooctrain.data import DATA_CHOICES, sample_shape, training_sets
from ooctrain.models import build, count_parameters

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
SOLVERS = ("momentum", "nesterov")
SMOKE_CONFIG = CONFIG_DIR / "smoke.yaml"
# Flags that name a data set or a configuration: with any of them the smoke defaults stay off.
_RECIPE_FLAGS = ("--config", "--root", "--data-dir")


def uses_smoke_config(argv):
    """True when the command line names neither a configuration nor a data set root."""
    return not any(arg == flag or arg.startswith(flag + "=")
                   for arg in argv for flag in _RECIPE_FLAGS)


def build_parser(smoke=False):
    p = Parser(description="Train ResNet / DenseNet image classifiers, optionally out of core. "
                           "The defaults are the paper's ImageNet recipe; without --config and "
                           "--root, configs/smoke.yaml (a tiny ResNet on the bundled MNIST "
                           "subset, 60 CPU iterations) supplies them instead.",
               default_config=str(SMOKE_CONFIG) if smoke else None)
    p.add_argument("--output", required=True, help="run folder")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --output from its newest checkpoint")
    p.add_argument("--stop-at-iter", type=NonNegativeInt, default=0,
                   help="end this run after that many iterations (checkpoint written); "
                        "continue with --resume. 0 = run to --iterations")
    d = p.add_argument_group("data")
    d.add_argument("--dataset", choices=DATA_CHOICES, default="imagenet",
                   help="(default: %(default)s)")
    d.add_argument("--root", default=None,
                   help="data set root (imagenet: ROOT/{train,val}/<class>/; cifar10)")
    d.add_argument("--image-size", type=ImageSize, default=224,
                   help="synthetic images: side length (imagenet is cropped to 224)")
    d.add_argument("--num-classes", type=ClassCount, default=1000, help="synthetic data: classes")
    d.add_argument("--synthetic-samples", type=PositiveInt, default=1024,
                   help="synthetic data: images per epoch")
    d.add_argument("--loader-threads", type=NonNegativeInt, default=4)
    add_model_args(p.add_argument_group("model"))
    o = p.add_argument_group("optimisation")
    o.add_argument("--batch-size", type=PositiveInt, default=256,
                   help="total over all processes")
    o.add_argument("--iterations", type=PositiveInt, default=450450,
                   help="(default: 90 epochs of ImageNet at batch 256)")
    o.add_argument("--lr", type=PositiveFloat, default=0.1)
    o.add_argument("--solver", choices=SOLVERS, default="momentum",
                   help="SGD with momentum, or with Nesterov momentum (DenseNet's recipe) "
                        "(default: %(default)s)")
    o.add_argument("--momentum", type=Fraction, default=0.9)
    o.add_argument("--weight-decay", type=NonNegativeFloat, default=1e-4)
    o.add_argument("--lr-milestones", type=PositiveInt, nargs="*",
                   default=[150150, 300300, 400400],
                   help="iterations at which the learning rate is divided by 10")
    o.add_argument("--seed", type=NonNegativeInt, default=0)
    r = p.add_argument_group("monitoring and checkpoints")
    r.add_argument("--val-interval", type=NonNegativeInt, default=5005,
                   help="validation error every N iterations and at the end (0 = only at the end)")
    r.add_argument("--val-batches", type=NonNegativeInt, default=0,
                   help="validate on at most N batches (0 = the whole validation split)")
    r.add_argument("--log-interval", type=PositiveInt, default=1)
    add_checkpoint_args(r, interval=1000)
    add_context_args(p)
    # nnabla_cli train's spellings of --ooc-budget and --ooc-window, hidden. nnabla_cli reads
    # "4g" as 4 GiB and "4G" as 4 GB where our flags read both as GB, so they get their own
    # reading of the value. Added before add_ooc_args: a YAML key ooc_budget / ooc_window is
    # read by the last option of that name.
    p.add_argument("--ooc-gpu-memory-size", dest="ooc_budget", action=_NnablaCliSize,
                   default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.add_argument("--ooc-window-length", dest="ooc_window", action=_NnablaCliSize,
                   default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    add_ooc_args(p)
    # Hidden aliases: this repository's earlier --data and --data-dir, and nnabla_cli train's
    # spellings of the same options.
    p.add_alias("--data", "dataset")
    p.add_alias("--data-dir", "root")
    p.add_alias("--outdir", "output")
    p.add_alias("-o", "output")
    p.add_alias("-r", "resume")
    return p


_NNABLA_CLI_UNITS = {"K": 1000, "k": 1024, "M": 1000 ** 2, "m": 1024 ** 2, "G": 1000 ** 3,
                     "g": 1024 ** 3, "T": 1000 ** 4, "t": 1024 ** 4, "P": 1000 ** 5,
                     "p": 1024 ** 5}


def nnabla_cli_size(text):
    """Bytes from ``nnabla_cli train --ooc-gpu-memory-size`` notation: an integer, a number
    with a K/M/G/T/P (powers of 1000) or k/m/g/t/p (powers of 1024) suffix, or ``3.5e9``;
    None if ``text`` is none of these."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)([KkMmGgTtPp]?)\s*", str(text))
    if not match:
        return None
    size = int(float(match.group(1)) * _NNABLA_CLI_UNITS.get(match.group(2), 1))
    return size if size > 0 else None


class _NnablaCliSize(argparse.Action):
    """Stores :func:`nnabla_cli_size` of the value. An action rather than a ``type``:
    argparse would also pass a YAML ``ooc_budget``/``ooc_window`` default (our notation)
    through a type."""

    def __call__(self, parser, namespace, values, option_string=None):
        size = nnabla_cli_size(values)
        if size is None:
            raise argparse.ArgumentError(self, f"expected a positive size such as 3500000000, "
                                               f"3.5e9, 3.5G or 3g, got {values!r}")
        setattr(namespace, self.dest, size)


def parse_args(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    return build_parser(smoke=uses_smoke_config(argv)).parse_args(argv)


class Classifier:
    """Training and validation graphs of one network (parameters shared)."""

    def __init__(self, spec, sample_shape, num_classes, batch, small_input):
        import nnabla as nn
        import nnabla.functions as F
        self.spec, self.num_classes, self.small_input = spec, num_classes, small_input
        self.image = nn.Variable((batch,) + tuple(sample_shape))
        self.label = nn.Variable((batch, 1))
        self.logits = build(spec, self.image, num_classes, test=False, small_input=small_input)
        self.loss = F.mean(F.softmax_cross_entropy(self.logits, self.label))
        self.loss.persistent = True
        self._val = {}

    def validation_graph(self, batch):
        import nnabla as nn
        if batch not in self._val:
            x = nn.Variable((batch,) + self.image.shape[1:])
            self._val[batch] = (x, build(self.spec, x, self.num_classes, test=True,
                                         small_input=self.small_input))
        return self._val[batch]


def validation_error(model, val_set, batch, max_batches, dist):
    """Top-1 error over (at most ``max_batches`` batches of) the validation split; this
    process's shard, averaged over processes."""
    loader = BatchLoader(val_set, batch, shuffle=False, drop_last=False, rank=dist.rank,
                         world_size=dist.size)
    n_batches = len(loader) if not max_batches else min(len(loader), max_batches)
    wrong = seen = 0
    for b in range(n_batches):
        images, labels = loader.get_batch(0, b)
        x, logits = model.validation_graph(len(labels))
        x.d = images
        logits.forward(clear_buffer=True)
        wrong += int(np.sum(np.argmax(logits.d, axis=1) != labels.reshape(-1)))
        seen += len(labels)
    return dist.all_reduce_value(wrong / max(seen, 1))


def train(args):
    import nnabla as nn
    import nnabla.solvers as S

    spec = model_spec_from_args(args)
    check_ooc_args(args)  # a one-line error before anything is read or written
    ctx = context_from_args(args)
    dist = init_distributed(ctx)
    # The prefetch window changes speed, never results: a resumed run may change it.
    run = TrainingRun(args.output, args, resume=args.resume, dist=dist, free=("ooc_window",),
                      keep_last=args.keep_last).open()
    if args.batch_size % dist.size:
        raise UserError(f"--batch-size {args.batch_size} is not divisible by the "
                        f"{dist.size} processes")
    batch = args.batch_size // dist.size
    train_set, val_set, num_classes = training_sets(args)
    if len(train_set) < batch:
        raise UserError(f"the training set has {len(train_set)} images, fewer than one batch "
                        f"of {batch}")
    ooc = out_of_core_from_args(args, dist.ctx)  # before the graph: it may set the context
    run.begin()

    nn.clear_parameters()  # a second train() in one process starts from a fresh network
    seed_everything(args.seed)
    loader = BatchLoader(train_set, batch, shuffle=True, seed=args.seed, rank=dist.rank,
                         world_size=dist.size, num_threads=args.loader_threads)
    model = Classifier(spec, sample_shape(args), num_classes, batch, args.small_input)
    solver = (S.Nesterov if args.solver == "nesterov" else S.Momentum)(args.lr, args.momentum)
    solver.set_parameters(nn.get_parameters())
    step, _ = run.restore({"momentum": solver})
    if dist.is_main:
        print(f"{args.arch}: {count_parameters(nn.get_parameters()):,} parameters, batch "
              f"{args.batch_size}, {len(train_set):,} training images, {num_classes} classes")
    log = TrainingLog(run.out, resume_step=step if run.resuming else None,
                      interval=args.log_interval) if dist.is_main else None
    stop = args.iterations if not args.stop_at_iter else min(args.stop_at_iter, args.iterations)

    def save():
        run.save(step, {"momentum": solver}, config=vars(args))

    def validate():
        error = validation_error(model, val_set, batch, args.val_batches, dist)
        if dist.is_main:
            log.add("validation error", step, error, interval=1)
            print(f"iteration {step}: validation error {error:.4f}")

    try:
        with run.guard():
            bar = progress(range(step, stop), desc="training", unit="it")
            for _ in bar:
                start = time.perf_counter()
                lr = step_lr(args.lr, step, args.lr_milestones)
                solver.set_learning_rate(lr)
                with ooc.step() as hooks:
                    images, labels = loader.get_batch(*divmod(step, len(loader)))
                    model.image.d = images
                    model.label.d = labels.reshape(-1, 1)
                    solver.zero_grad()
                    model.loss.forward(clear_no_need_grad=True, **hooks)
                    model.loss.backward(clear_buffer=True, **hooks)
                    dist.all_reduce_grads(solver.get_parameters())
                    solver.weight_decay(args.weight_decay)
                    solver.update()
                step += 1
                value = dist.all_reduce_value(float(model.loss.d))
                speed = args.batch_size / (time.perf_counter() - start)
                bar.set_postfix(loss=f"{value:.4f}", img_s=f"{speed:.1f}")
                if dist.is_main:
                    log.add("training loss", step, value)
                    log.add("learning rate", step, lr)
                    log.add("images per second", step, speed)
                run.step_done(step, value, save=save)  # non-finite loss, Ctrl-C
                if args.val_interval and step % args.val_interval == 0 \
                        and step < args.iterations:
                    validate()
                if step == stop or (args.checkpoint_interval
                                    and step % args.checkpoint_interval == 0):
                    save()
            if step >= args.iterations:
                validate()
                if dist.is_main:
                    with atomic_path(run.out / "final.h5") as tmp:
                        nn.save_parameters(str(tmp), nn.get_parameters(grad_only=False))
    finally:
        loader.close()
    if step >= args.iterations:
        print(f"finished {step} iterations; weights in {run.out / 'final.h5'}")
    else:
        print(f"stopped after iteration {step} of {args.iterations} in {run.out}; continue "
              "with --resume")


def main(argv=None):
    train(parse_args(argv))
    return 0
