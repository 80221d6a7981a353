"""Training and evaluation of quantized networks for a named experiment (resumable).

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
  ``--checkpoint-interval`` iterations and at each epoch end; ``--resume``
  continues bit-exactly, also in the middle of an epoch;
* the sample order and augmentation come from per-sample generators seeded by
  ``--seed`` (:class:`common.data.loader.BatchLoader`).
"""
import time
from pathlib import Path

import numpy as np
import yaml

from common.cli import Parser
from common.config import check_resume_options, save_config
from common.context import add_context_args, context_from_args
from common.data import classification as D
from common.data.loader import BatchLoader
from common.errors import UserError
from common.fileio import atomic_write
from common.terminal import progress
from common.train.checkpoint import CheckpointManager, load_checkpoint
from common.train.monitor import TrainingLog
from common.train.out_of_core import add_ooc_args, out_of_core_from_args
from common.train.schedules import step_lr
from common.train.seeding import seed_everything
from mpdnn.experiments import SETTABLE_KEYS, get_experiment

PACKAGE_DIR = Path(__file__).resolve().parent.parent
SMOKE_CONFIG = PACKAGE_DIR / "configs" / "smoke.yaml"
QUANTIZER_IMPLEMENTATIONS = {"auto": None, "fused": True, "graph": False}
# Options that may differ between a run and its --resume.
RESUME_FREE = {"output", "resume", "stop_at_epoch", "context", "device_id", "type_config",
               "ooc_budget",
               "checkpoint_interval", "keep_last", "loader_threads", "config", "init_from"}



def parse_overrides(items):
    """``["epochs=4", "lr_milestones=[2, 3]"]`` -> dict with YAML-parsed values."""
    out = {}
    for item in items or []:
        key, sep, value = str(item).partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected KEY=VALUE")
        if key not in SETTABLE_KEYS:
            raise UserError(f"--set {key}: not an experiment field (see mpdnn/experiments.py)")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise UserError(f"--set {item!r}: the value is not valid YAML") from None
    return out


def add_common_args(p):
    p.add_argument("--experiment", default="PARAMETRIC_FP_WAQ_DELTA_XMAX",
                   help="experiment name from configs/experiments/*.yaml (e.g. DEFAULT, "
                        "PARAMETRIC_FP_WAQ_DELTA_XMAX_INIT, PARAMETRIC_POW2_WAMQ_XMIN_XMAX_CON_INIT)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one experiment field (repeatable), e.g. --set epochs=10 "
                        "--set target_weight_kbytes=40")
    p.add_argument("--dataset", choices=D.DATASETS, default=None,
                   help="default: the experiment's (cifar10 / imagenet); mnist5k = the bundled "
                        "real MNIST subset padded to 32x32")
    p.add_argument("--data-dir", default=None,
                   help="CIFAR-10 folder (cifar-10-batches-py) or ImageNet root")
    p.add_argument("--quantizers", choices=sorted(QUANTIZER_IMPLEMENTATIONS), default="auto",
                   help="fused = one numpy kernel per quantizer (CPU), graph = nnabla "
                        "functions (any device); auto = fused on CPU")
    p.add_argument("--loader-threads", type=int, default=2)
    p.add_argument("--train-samples", type=int, default=0,
                   help="use a fixed random subset of N training samples (0 = all)")
    p.add_argument("--val-samples", type=int, default=0,
                   help="use a fixed random subset of N validation samples (0 = all)")
    add_context_args(p)
    add_ooc_args(p)


def sample_shape(dataset):
    """Shape of one input sample (drawn with a generator: random crops need one)."""
    return tuple(dataset.__getitem__(0, np.random.default_rng(0))[0].shape)


class Subset:
    """The first ``n`` samples of a seeded permutation of ``dataset`` (fixed across runs)."""

    def __init__(self, dataset, n, seed=0):
        self.dataset = dataset
        self.index = np.random.default_rng(seed).permutation(len(dataset))[:n]

    def __len__(self):
        return len(self.index)

    def __getitem__(self, i, rng=None):
        return self.dataset.__getitem__(int(self.index[i]), rng)


def datasets(args, dataset_name):
    """(train, val) datasets, reduced to --train-samples / --val-samples when given."""
    out = []
    for split, n in (("train", args.train_samples), ("val", args.val_samples)):
        if n < 0:
            raise UserError(f"--{split}-samples must not be negative")
        ds = D.load(dataset_name, split, args.data_dir)
        out.append(Subset(ds, n) if 0 < n < len(ds) else ds)
    return out


def build_parser():
    p = Parser(description="Train a quantized network for one named experiment "
                                  "(default: CPU smoke run on the bundled MNIST subset).",
                      default_config=str(SMOKE_CONFIG))
    p.add_argument("--output", default=None, help="run directory (default runs/mpdnn/EXPERIMENT)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("--init-from", default=None, metavar="PATH",
                   help="run directory, checkpoint .npz or nnabla .h5 whose parameters start "
                        "this run (required when the experiment has init_from)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-interval", type=int, default=500,
                   help="also checkpoint every N iterations inside an epoch (0 = epoch ends only)")
    p.add_argument("--keep-last", type=int, default=2)
    p.add_argument("--stop-at-epoch", type=int, default=0,
                   help="end this run after that epoch (continue with --resume); 0 = all")
    add_common_args(p)
    return p


def resolve_experiment(args):
    exp = get_experiment(args.experiment, **parse_overrides(args.set))
    dataset = args.dataset or exp.dataset
    if exp.model == "resnet20" and dataset == "imagenet":
        raise UserError(f"experiment {exp.name} is a CIFAR ResNet; it cannot train on ImageNet")
    if exp.model != "resnet20" and dataset != "imagenet":
        raise UserError(f"experiment {exp.name} ({exp.model}) is an ImageNet network; use "
                        f"--dataset imagenet")
    return exp, dataset


# ----------------------------------------------------------------------------- the network

def build_network(exp, x, num_classes, test, fused):
    if exp.model == "resnet20":
        from mpdnn.resnet_cifar import resnet_cifar
        return resnet_cifar(x, num_classes, exp, test=test, fused=fused)
    from mpdnn.imagenet_models import MODELS
    return MODELS[exp.model](x, num_classes, exp, test=test, fused=fused)


def read_parameters(path):
    """Parameters (name -> array) from a run directory, checkpoint .npz or nnabla .h5."""
    from common.runtime.params_io import read_param_file
    from common.train.checkpoint import CheckpointManager as Manager
    path = Path(path)
    if path.is_dir():
        manager = Manager(path / "checkpoints" if (path / "checkpoints").is_dir() else path,
                          clean=False)
        ckpt = manager.load_best() or manager.load_latest()
        if ckpt is None:
            raise UserError(f"{path}: no checkpoint found")
        return dict(ckpt.params)
    if not path.is_file():
        raise UserError(f"{path}: no such file or directory")
    if path.suffix == ".h5":
        return dict(read_param_file(path)[0])
    return dict(load_checkpoint(path).params)


def load_initial_parameters(path):
    """Register every parameter of ``path`` before the network is built, so that the
    network picks them up (and quantizer steps start from the loaded weights' range)."""
    import nnabla as nn
    params = read_parameters(path)
    for name, value in params.items():
        var = nn.Variable.from_numpy_array(np.asarray(value, np.float32))
        var.need_grad = not (name.endswith(("/W_q", "/b_q", "/Asize", "/bn/mean", "/bn/var")))
        nn.parameter.set_parameter(name, var)
    return len(params)


def quantizer_parameters(exp):
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


def clip_quantizer_gradients(exp, groups):
    """Under a memory constraint, clip step/range gradients to +-d (U3) or +-q_min (P3)."""
    for group, params in groups.items():
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
    and q_min < q_max (P3)."""
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


# ----------------------------------------------------------------------------- evaluation

class Evaluator:
    """Validation error of the test-mode network, batch by batch (last batch padded)."""

    def __init__(self, exp, dataset, num_classes, batch_size, fused, threads=0):
        import nnabla as nn
        self.loader = BatchLoader(dataset, batch_size, shuffle=False, drop_last=False,
                                  num_threads=threads)
        self.batch = batch_size
        shape = (batch_size,) + sample_shape(dataset)
        self.image = nn.Variable(shape)
        self.logits = build_network(exp, self.image, num_classes, test=True, fused=fused)
        self.logits.persistent = True

    def error(self, desc="validation"):
        wrong = total = 0
        for b in progress(range(len(self.loader)), desc=desc, unit="batch", leave=False):
            images, labels = self.loader.get_batch(0, b)
            n = len(labels)
            if n < self.batch:
                pad = np.zeros((self.batch - n,) + images.shape[1:], images.dtype)
                images = np.concatenate([images, pad])
            self.image.d = images
            self.logits.forward(clear_buffer=True)
            wrong += int(np.sum(np.argmax(self.logits.d[:n], axis=1) != labels))
            total += n
        return wrong / max(total, 1)


# ----------------------------------------------------------------------------- training

def check_args(args):
    for name in ("checkpoint_interval", "stop_at_epoch", "loader_threads"):
        if getattr(args, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} must not be negative")
    if args.keep_last < 1:
        raise UserError("--keep-last must be at least 1")


def train(args):
    import nnabla as nn
    import nnabla.functions as F
    import nnabla.solvers as S

    from mpdnn.memory import NetworkMemory
    from mpdnn.report import write_report

    check_args(args)
    exp, dataset_name = resolve_experiment(args)
    out = Path(args.output or Path("runs") / "mpdnn" / exp.name)
    if exp.init_from and not args.init_from and not args.resume:
        raise UserError(f"experiment {exp.name} starts from the trained network of experiment "
                        f"{exp.init_from}: pass --init-from PATH (that run's directory, a "
                        f"checkpoint or an .h5 file)")
    train_set, val_set = datasets(args, dataset_name)
    num_classes = D.NUM_CLASSES[dataset_name]
    fused = QUANTIZER_IMPLEMENTATIONS[args.quantizers]

    out.mkdir(parents=True, exist_ok=True)
    ctx = context_from_args(args)
    ooc = out_of_core_from_args(args, ctx)  # before the graph: it may set the context
    nn.clear_parameters()
    ckpts = CheckpointManager(out / "checkpoints", keep_last=args.keep_last)
    latest = ckpts.load_latest() if args.resume else None
    if latest is not None:
        check_resume_options(latest.config.get("args", {}), args, RESUME_FREE)
    save_config(args, out)
    with atomic_write(out / "experiment.yaml", "w") as f:
        yaml.safe_dump(exp.as_dict(), f, sort_keys=False)
    seed_everything(args.seed)
    if args.init_from and latest is None:
        count = load_initial_parameters(args.init_from)
        print(f"initialised {count} parameters from {args.init_from}")

    loader = BatchLoader(train_set, exp.batch_size, shuffle=True, seed=args.seed,
                         num_threads=args.loader_threads)
    image = nn.Variable((exp.batch_size,) + sample_shape(train_set))
    label = nn.Variable((exp.batch_size, 1))
    logits = build_network(exp, image, num_classes, test=False, fused=fused)
    cross_entropy = F.mean(F.softmax_cross_entropy(logits, label))
    memory = NetworkMemory(exp)
    penalty = memory.penalty()
    loss = cross_entropy if penalty is None else cross_entropy + penalty
    for v in (logits, cross_entropy, loss):
        v.persistent = True
    evaluator = Evaluator(exp, val_set, num_classes, min(100, len(val_set)), fused,
                          args.loader_threads)

    lr0 = exp.initial_learning_rate
    solver = S.Adam(alpha=lr0) if exp.optimizer == "adam" else S.Momentum(lr0, exp.momentum)
    solver.set_parameters(nn.get_parameters())
    groups = quantizer_parameters(exp)

    step = 0
    stats = {"loss": 0.0, "cross_entropy": 0.0, "wrong": 0, "seen": 0}
    if latest is not None:
        step, _, extra = ckpts.restore(latest, {"solver": solver})
        stats = extra["epoch_stats"]
        print(f"resumed at iteration {step}")
    elif args.resume:
        print(f"no checkpoint in {out / 'checkpoints'}; starting from scratch")
    per_epoch = len(loader)
    log = TrainingLog(out, resume_step=step if args.resume else None)
    best = ckpts.load_best()
    best_error = best.metric if best is not None else None
    last_epoch = exp.epochs if not args.stop_at_epoch else min(args.stop_at_epoch, exp.epochs)

    def checkpoint(metric=None):
        ckpts.save(step, {"solver": solver}, config={"args": vars(args),
                   "experiment": exp.as_dict()}, metric=metric, mode="min",
                   extra={"epoch_stats": stats}, epoch=step // per_epoch)

    start_epoch = step // per_epoch
    for epoch in range(start_epoch, last_epoch):
        lr = step_lr(lr0, epoch, exp.lr_milestones, exp.lr_decay)
        solver.set_learning_rate(lr)
        bar = progress(range(step % per_epoch, per_epoch), desc=f"epoch {epoch + 1}/{exp.epochs}",
                       unit="it")
        for b in bar:
            with ooc.step() as hooks:
                images, labels = loader.get_batch(epoch, b)
                image.d, label.d = images, labels.reshape(-1, 1)
                solver.zero_grad()
                loss.forward(clear_no_need_grad=True, **hooks)
                loss.backward(clear_buffer=True, **hooks)
                solver.weight_decay(exp.weight_decay)
                if memory.constrained:
                    clip_quantizer_gradients(exp, groups)
                solver.update()
                project_quantizer_parameters(exp, groups)
            step += 1
            value = float(loss.d)
            if not np.isfinite(value):
                raise UserError(f"training diverged at iteration {step} (loss {value}); "
                                "try a lower initial_learning_rate (--set)")
            stats["loss"] += value
            stats["cross_entropy"] += float(cross_entropy.d)
            stats["wrong"] += int(np.sum(np.argmax(logits.d, axis=1) != labels))
            stats["seen"] += len(labels)
            bar.set_postfix(loss=f"{value:.3f}")
            if args.checkpoint_interval and step % args.checkpoint_interval == 0 \
                    and step % per_epoch:
                checkpoint()
        sizes = memory.evaluate()
        val_error = evaluator.error()
        n_batches = max(stats["seen"] / exp.batch_size, 1)
        row = {"epoch": epoch + 1, "train_loss": stats["loss"] / n_batches,
               "train_cross_entropy": stats["cross_entropy"] / n_batches,
               "train_error": stats["wrong"] / max(stats["seen"], 1), "val_error": val_error,
               **sizes, "learning_rate": lr}
        for key, v in row.items():
            if key != "epoch":
                log.add(key.replace("_", " "), epoch + 1, v)
        ok = memory.satisfied(sizes)
        print(f"epoch {epoch + 1}: loss {row['train_loss']:.4f}, train error "
              f"{row['train_error']:.4f}, val error {val_error:.4f}, weights "
              f"{sizes['weight_kbytes']:.1f} kB, activations {sizes['activation_kbytes']:.1f} kB"
              + ("" if ok else " (constraints not met)"))
        stats = {"loss": 0.0, "cross_entropy": 0.0, "wrong": 0, "seen": 0}
        checkpoint(metric=val_error if ok else None)
        if ok and (best_error is None or val_error < best_error):
            best_error = val_error

    if step // per_epoch < exp.epochs:
        print(f"stopped after epoch {step // per_epoch} of {exp.epochs}; continue with --resume")
        return out, None
    summary = write_report(out, exp, dataset_name, val_set, fused)
    print(f"finished: best validation error {summary['val_error']:.4f} "
          f"(weights {summary['weight_kbytes']:.1f} kB, activations "
          f"{summary['activation_kbytes']:.1f} kB); report in {out / 'report.md'}")
    return out, summary


def main(argv=None):
    args = build_parser().parse_args(argv)
    start = time.time()
    out, _ = train(args)
    print(f"done in {time.time() - start:.1f} s; outputs in {out}")
    return 0
