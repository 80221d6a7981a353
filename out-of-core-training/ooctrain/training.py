"""Image-classification training with optional out-of-core execution (``--ooc-budget``).

The paper's headline run is ResNet-50 on ImageNet at batch 1440 on one GPU; the networks
are in :mod:`ooctrain.models` (ResNet-50/101/152, DenseNet-121/169). Recipe: SGD with
momentum 0.9, weight decay 1e-4 on every parameter, learning rate ``lr`` (the linear
scaling rule: 0.1 per 256 images) divided by 10 at each ``--lr-milestones`` iteration;
softmax cross-entropy; ImageNet augmentation of :mod:`common.data.classification` (random
224 crop of the image rescaled to 256 on its shorter side, flip). The paper measures
speed and memory, not accuracy, so the schedule is a plain step schedule.

Data (``--data``): ``imagenet`` (class folders ``ROOT/{train,val}/<class>/``, any class
count), ``cifar10`` (python pickles), ``mnist5k`` (the bundled real MNIST subset, the
default smoke run) or ``synthetic`` (seeded random images, for throughput measurements
without a data set).

Every ``--checkpoint-interval`` iterations a checkpoint (parameters, momentum buffers,
iteration, RNG states) is written; ``--resume`` continues bit-exactly, with or without the
scheduler (the scheduler changes where arrays live, not their values). Outputs in
``--output``: ``config.yaml``, ``checkpoints/``, the curves ``training loss``, ``learning
rate``, ``images per second`` and ``validation error``, and ``final.h5`` at the end.
"""
import argparse
import time
from pathlib import Path

import numpy as np

from common.cli import Parser
from common.config import check_resume_options, save_config
from common.context import add_context_args, context_from_args
from common.data.loader import BatchLoader
from common.errors import UserError
from common.terminal import progress
from common.train.checkpoint import CheckpointManager
from common.train.distributed import init_distributed
from common.train.monitor import TrainingLog
from common.train.out_of_core import add_ooc_args, out_of_core_from_args
from common.train.schedules import step_lr
from common.train.seeding import seed_everything
from ooctrain.data import DATA_CHOICES, sample_shape, training_sets
from ooctrain.models import ARCHITECTURES, ModelSpec, build, count_parameters

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "smoke.yaml"
# Options that may change between a run and its --resume.
RESUME_FREE = {"output", "resume", "stop_at_iter", "loader_threads", "context", "device_id",
               "type_config", "checkpoint_interval", "keep_last", "log_interval", "ooc_budget",
               "config"}


def build_parser():
    p = Parser(description="Train ResNet / DenseNet image classifiers, optionally out "
                                  "of core (default: CPU smoke run of a tiny ResNet on the "
                                  "bundled MNIST subset).",
                      default_config=str(DEFAULT_CONFIG))
    p.add_argument("--output", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("--stop-at-iter", type=int, default=0,
                   help="end this run after that many iterations (checkpoint written); "
                        "continue with --resume. 0 = run to --iterations")
    d = p.add_argument_group("data")
    d.add_argument("--data", choices=DATA_CHOICES, default="mnist5k")
    d.add_argument("--root", default=None, help="data set root (imagenet, cifar10)")
    d.add_argument("--image-size", type=int, default=224,
                   help="synthetic images: side length (imagenet is cropped to 224)")
    d.add_argument("--num-classes", type=int, default=1000, help="synthetic data: classes")
    d.add_argument("--synthetic-samples", type=int, default=1024,
                   help="synthetic data: images per epoch")
    d.add_argument("--loader-threads", type=int, default=4)
    m = p.add_argument_group("model")
    m.add_argument("--arch", choices=sorted(ARCHITECTURES), default="resnet50")
    m.add_argument("--blocks", type=int, nargs="+", default=None,
                   help="override the blocks per stage (ResNet) / layers per dense block")
    m.add_argument("--width", type=int, default=None,
                   help="override the base width: ResNet first-stage channels, DenseNet stem")
    m.add_argument("--growth", type=int, default=None, help="override the DenseNet growth")
    m.add_argument("--small-input", action=argparse.BooleanOptionalAction, default=False,
                   help="3x3 stride-1 stem without max-pooling (for 32x32 images)")
    o = p.add_argument_group("optimisation")
    o.add_argument("--batch-size", type=int, default=256, help="total over all processes")
    o.add_argument("--iterations", type=int, default=450000)
    o.add_argument("--lr", type=float, default=0.1)
    o.add_argument("--momentum", type=float, default=0.9)
    o.add_argument("--weight-decay", type=float, default=1e-4)
    o.add_argument("--lr-milestones", type=int, nargs="*", default=[150000, 300000, 400000],
                   help="iterations at which the learning rate is divided by 10")
    o.add_argument("--seed", type=int, default=0)
    r = p.add_argument_group("monitoring and checkpoints")
    r.add_argument("--val-interval", type=int, default=5000,
                   help="validation error every N iterations and at the end (0 = only at the end)")
    r.add_argument("--val-batches", type=int, default=0,
                   help="validate on at most N batches (0 = the whole validation split)")
    r.add_argument("--log-interval", type=int, default=1)
    r.add_argument("--checkpoint-interval", type=int, default=1000)
    r.add_argument("--keep-last", type=int, default=3)
    add_context_args(p)
    add_ooc_args(p)
    return p


def check_args(args):
    for name in ("iterations", "batch_size", "keep_last"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("stop_at_iter", "val_interval", "val_batches", "checkpoint_interval",
                 "loader_threads"):
        if getattr(args, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} must not be negative")
    if args.log_interval < 1:
        raise UserError("--log-interval must be at least 1")


def model_spec(args):
    spec = ModelSpec.from_sizes(args.arch, args.blocks, args.width, args.growth)
    spec.config()  # an override this architecture lacks is an error now, not mid-run
    return spec


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

    check_args(args)
    spec = model_spec(args)
    out = Path(args.output)
    ctx = context_from_args(args)
    dist = init_distributed(ctx)
    nn.set_default_context(dist.ctx)
    if args.batch_size % dist.size:
        raise UserError(f"--batch-size {args.batch_size} is not divisible by the "
                        f"{dist.size} processes")
    batch = args.batch_size // dist.size
    train_set, val_set, num_classes = training_sets(args)
    if len(train_set) < batch:
        raise UserError(f"the training set has {len(train_set)} images, fewer than one batch "
                        f"of {batch}")
    out.mkdir(parents=True, exist_ok=True)
    ckpts = CheckpointManager(out / "checkpoints", keep_last=args.keep_last)
    latest = ckpts.load_latest() if args.resume else None
    if latest is not None:
        check_resume_options(latest.config, args, RESUME_FREE,
                             "use the run's config.yaml or a new --output")
    if dist.is_main:
        save_config(args, out)
    seed_everything(args.seed)
    ooc = out_of_core_from_args(args, dist.ctx)  # before the graph: it may set the context

    loader = BatchLoader(train_set, batch, shuffle=True, seed=args.seed, rank=dist.rank,
                         world_size=dist.size, num_threads=args.loader_threads)
    model = Classifier(spec, sample_shape(args), num_classes, batch, args.small_input)
    solver = S.Momentum(args.lr, args.momentum)
    solver.set_parameters(nn.get_parameters())
    step = 0
    if args.resume:
        if latest is None:
            print(f"no checkpoint in {out / 'checkpoints'}; starting from scratch")
        else:
            step, _, _ = ckpts.restore(latest, {"momentum": solver})
            print(f"resumed at iteration {step}")
    if dist.is_main:
        print(f"{args.arch}: {count_parameters(nn.get_parameters()):,} parameters, batch "
              f"{args.batch_size}, {len(train_set):,} training images, {num_classes} classes")
    log = TrainingLog(out, resume_step=step if args.resume else None,
                      interval=args.log_interval) if dist.is_main else None
    stop = args.iterations if not args.stop_at_iter else min(args.stop_at_iter, args.iterations)

    def checkpoint():
        if dist.is_main:
            ckpts.save(step, {"momentum": solver}, config=vars(args))

    def validate():
        error = validation_error(model, val_set, batch, args.val_batches, dist)
        if dist.is_main:
            log.add("validation error", step, error, interval=1)
            print(f"iteration {step}: validation error {error:.4f}")

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
        if not np.isfinite(value):
            raise UserError(f"training diverged at iteration {step} (loss {value}); "
                            "try a lower --lr")
        speed = args.batch_size / (time.perf_counter() - start)
        bar.set_postfix(loss=f"{value:.4f}", img_s=f"{speed:.1f}")
        if dist.is_main:
            log.add("training loss", step, value)
            log.add("learning rate", step, lr)
            log.add("images per second", step, speed)
        if args.val_interval and step % args.val_interval == 0 and step < args.iterations:
            validate()
        if step == stop or (args.checkpoint_interval and step % args.checkpoint_interval == 0):
            checkpoint()
    if step >= args.iterations:
        validate()
        if dist.is_main:
            nn.save_parameters(str(out / "final.h5"), nn.get_parameters(grad_only=False))
        print(f"finished {step} iterations; weights in {out / 'final.h5'}")
    else:
        print(f"stopped after iteration {step} of {args.iterations}; continue with --resume")
    loader.close()
    return out


def main(argv=None):
    args = build_parser().parse_args(argv)
    start = time.time()
    out = train(args)
    print(f"run directory: {out} ({time.time() - start:.0f} s)")
    return 0
