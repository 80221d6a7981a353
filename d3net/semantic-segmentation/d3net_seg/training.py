"""Training of D3Net-S / D3Net-L for Cityscapes semantic segmentation (resumable).

Recipe (``configs/train_D3Net_S.yaml`` / ``configs/train_D3Net_L.yaml``; the official
sony/ai-research-code ``d3net/semantic-segmentation/train.py`` and its data pipeline):

* data: the Cityscapes ``train`` split, fine labels as ``*_gtFine_labelTrainIds.png``;
  per image a random rescale by ``U(0.5, 2.0)``, a random 512x1024 crop (padded with label
  255 where the scaled image is smaller), a horizontal flip with probability 1/2, then the
  photometric distortion of :mod:`common.data.image_augment` (brightness, contrast,
  saturation, hue; mmseg's ``PhotoMetricDistortion``), then ``(pixel - mean) / std`` with the
  network config's RGB mean/std;
* loss: per-pixel softmax cross-entropy over the 19 classes, label 255 ignored (it becomes
  nnabla's ignore label -1, i.e. contributes 0), averaged over all pixels of the batch, as
  officially (``F.mean``; mmseg's default too);
* optimiser: SGD with momentum 0.9, weight decay 5e-4 (``solver.weight_decay`` on every
  trained parameter, BN scale/shift included, as officially); learning rate
  ``(lr - min_lr) * (1 - i / max_iter) ** 0.9 + min_lr`` at iteration ``i`` (0-based), with
  lr 0.01 and min_lr 1e-4; 80k iterations of batch 8;
* initialisation: the ImageNet-pretrained backbone (``--backbone-weights``, registry names
  ``d3net-s-backbone`` / ``d3net-l-backbone`` of :mod:`common.pretrained`) loaded into the
  ``backbone`` scope; the head as the model builds it.

Differences from the official script, on purpose:

* ``--batch-size`` is the *total* batch over all processes (8 = the paper's); under
  ``mpirun`` every process gets ``batch_size / processes`` samples and the gradients are
  averaged. The official script takes 8 *per process* and rescales lr, min_lr and max_iter by
  the process count (and weight decay too); here lr/iterations are what the config says;
* the official crop re-draws its position up to 10 times while one class covers more than
  75 % of it (mmseg's ``cat_max_ratio``); :func:`common.data.cityscapes.random_scale_crop_flip`
  does not (one uniform draw). The official rescale keeps the aspect ratio at exactly 2:1;
  here both sides are scaled by the same factor (the same for Cityscapes' 1024x2048 images);
* random numbers come from per-sample generators (:class:`common.data.loader.BatchLoader`),
  so a run is reproducible from ``--seed`` and ``--resume`` continues bit-exactly;
* checkpoints (parameters, momentum buffers, iteration) every ``checkpoint_interval``
  iterations; unknown config keys / flags are errors; the resolved config is saved.

Outputs in ``--output``: ``config.yaml`` (this script's options), ``model_config.yaml`` (the
network config, readable by ``eval.py``/``infer.py`` ``--model-config``/``--config``),
``checkpoints/``, the curves ``training-loss.series.txt`` and ``learning-rate.series.txt``,
``model_param_<iteration>.h5`` every ``save_interval`` iterations (iteration 0 = the
initial weights) and ``final.h5`` at the end, all nnabla parameter files with the official
names (as the official script writes them).
"""
import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml

from common.cli import Parser
from common.config import check_resume_options, save_config
from common.context import add_context_args, context_from_args
from common.data.cityscapes import IGNORE_INDEX, Cityscapes, list_pairs, random_scale_crop_flip
from common.data.image_augment import PhotometricDistortion
from common.data.loader import BatchLoader
from common.errors import UserError
from common.fileio import atomic_write
from common.terminal import progress
from common.train.checkpoint import CheckpointManager
from common.train.distributed import init_distributed
from common.train.monitor import TrainingLog
from common.train.out_of_core import add_ooc_args, out_of_core_from_args
from common.train.schedules import poly_lr
from common.train.seeding import seed_everything

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "train_smoke.yaml"
SYNTHETIC_DIR = "synthetic-cityscapes"
# Network config keys that can be overridden from the command line / training config.
ARCH_KEYS = (("num_init_features", int, None), ("num_layers", int, "+"),
             ("n_blocks", int, "+"), ("dens_k", int, "+"), ("block_comp", float, "+"),
             ("dense_n_out_layer_block", int, "+"), ("intermediate_out_ch", int, "+"),
             ("trans_comp_factor", int, None), ("channels", int, None))
BACKBONES = {"D3Net_S": "d3net-s-backbone", "D3Net_L": "d3net-l-backbone"}
# Options that may change between a run and its --resume (everything else must match).
RESUME_FREE = {"output", "resume", "stop_at_iter", "loader_threads", "context", "device_id",
               "ooc_budget",
               "type_config", "checkpoint_interval", "keep_last", "save_interval",
               "log_interval", "backbone_weights", "recompute", "config"}



def build_parser():
    p = Parser(description="Train D3Net for Cityscapes semantic segmentation (default: "
                                 "CPU smoke run of a tiny D3Net on a generated SYNTHETIC "
                                 "data set in the Cityscapes layout).",
                     default_config=str(DEFAULT_CONFIG))
    p.add_argument("--output", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("--stop-at-iter", type=int, default=0,
                   help="end this run after that many iterations (checkpoint written, no "
                        "final.h5); the schedule still runs to --max-iter, continue with "
                        "--resume. 0 = run to --max-iter")
    d = p.add_argument_group("data")
    d.add_argument("--root", default=None,
                   help="Cityscapes root (leftImg8bit/, gtFine/ with *_labelTrainIds.png)")
    d.add_argument("--train-split", default="train", choices=["train", "val"])
    d.add_argument("--synthetic", action=argparse.BooleanOptionalAction, default=False,
                   help="train on a generated SYNTHETIC set in the Cityscapes layout (written "
                        f"to --root, default OUTPUT/{SYNTHETIC_DIR}); for smoke runs only")
    d.add_argument("--synthetic-images", type=int, nargs=2, default=[8, 4],
                   metavar=("TRAIN", "VAL"), help="synthetic set size")
    d.add_argument("--synthetic-size", type=int, nargs=2, default=[128, 256],
                   metavar=("H", "W"), help="synthetic image size")
    d.add_argument("--crop-size", type=int, nargs=2, default=[512, 1024], metavar=("H", "W"))
    d.add_argument("--scale-range", type=float, nargs=2, default=[0.5, 2.0],
                   metavar=("MIN", "MAX"))
    d.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True,
                   help="random horizontal flip")
    d.add_argument("--photometric", action=argparse.BooleanOptionalAction, default=True,
                   help="photometric distortion (brightness/contrast/saturation/hue)")
    d.add_argument("--loader-threads", type=int, default=4)
    m = p.add_argument_group("model")
    m.add_argument("--model-config", default="D3Net_S",
                   help="network config: D3Net_S, D3Net_L or a YAML path (configs/D3Net_*.yaml "
                        "layout); the options below override single entries of its model "
                        "section")
    for key, kind, nargs in ARCH_KEYS:
        m.add_argument("--" + key.replace("_", "-"), type=kind, nargs=nargs, default=None,
                       help="override model." + key)
    m.add_argument("--backbone-weights", default="auto", metavar="{auto,none,NAME,PATH}",
                   help="ImageNet-pretrained backbone to start from: a .h5 path, a registry "
                        "name (d3net-s-backbone, d3net-l-backbone; downloaded once), none "
                        "(random initialisation) or auto (the published backbone of an "
                        "unmodified D3Net_S / D3Net_L, else none)")
    m.add_argument("--recompute", action="store_true",
                   help="recompute convolution outputs in backward (less memory, slower)")
    t = p.add_argument_group("optimisation")
    t.add_argument("--batch-size", type=int, default=8, help="total over all processes")
    t.add_argument("--max-iter", type=int, default=80000)
    t.add_argument("--lr", type=float, default=0.01)
    t.add_argument("--min-lr", type=float, default=1e-4)
    t.add_argument("--power", type=float, default=0.9, help="polynomial decay power")
    t.add_argument("--momentum", type=float, default=0.9)
    t.add_argument("--weight-decay", type=float, default=5e-4)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--save-interval", type=int, default=8000,
                   help="write model_param_<iteration>.h5 every N iterations (0 = never)")
    t.add_argument("--checkpoint-interval", type=int, default=1000,
                   help="resumable checkpoint every N iterations (and at the end)")
    t.add_argument("--keep-last", type=int, default=3)
    t.add_argument("--log-interval", type=int, default=50,
                   help="average the logged loss over N iterations")
    add_context_args(p)
    add_ooc_args(p)
    return p


# ---------------------------------------------------------------------------- configuration
def network_config(args):
    """The network config (sections model/preprocess/palette/train) with the command-line
    overrides applied and validated; ``(config, modified)``."""
    from .model import load_config

    config = load_config(args.model_config)
    modified = False
    for key, _, _ in ARCH_KEYS:
        value = getattr(args, key)
        if value is not None and value != config["model"].get(key):
            config["model"][key] = value
            modified = True
    if modified:
        config["name"] = f"{config.get('name', 'config')}-modified"
    return load_config(config), modified


def check_args(args):
    for name in ("batch_size", "max_iter", "log_interval", "keep_last"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("save_interval", "checkpoint_interval", "stop_at_iter", "loader_threads"):
        if getattr(args, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} must not be negative")
    if not 0 <= args.min_lr <= args.lr:
        raise UserError("need 0 <= --min-lr <= --lr")
    lo, hi = args.scale_range
    if not 0 < lo <= hi:
        raise UserError("--scale-range needs 0 < MIN <= MAX")
    if min(args.crop_size) < 1:
        raise UserError("--crop-size must be positive")
    if args.root is None and not args.synthetic:
        raise UserError("--root is required: the Cityscapes folder holding leftImg8bit/ and "
                        "gtFine/ (or --synthetic for a smoke run on generated data)")


def learning_rate(args, iteration):
    """The official polynomial schedule: decays from lr to min_lr over max_iter iterations."""
    return args.min_lr + poly_lr(args.lr - args.min_lr, iteration, args.max_iter, args.power)


def backbone_source(value, config, modified):
    """What ``--backbone-weights`` names: ``None`` (random initialisation), a registry name
    of :mod:`common.pretrained` or a local path (not checked here)."""
    choice = str(value or "auto")
    if choice.lower() == "none":
        return None
    if choice.lower() == "auto":
        name = config.get("name")
        return None if modified or name not in BACKBONES else BACKBONES[name]
    return choice


def resolve_backbone(value, config, modified):
    """Path of the backbone weights to load (downloaded once for a registry name), or None."""
    from common.pretrained import REGISTRY, get_weights

    choice = backbone_source(value, config, modified)
    if choice is None:
        return None
    if choice in REGISTRY:
        try:
            return Path(get_weights(choice))
        except UserError as exc:
            hint = " (or --backbone-weights none to train from random initialisation)"
            raise UserError(str(exc).replace("--weights PATH", "--backbone-weights PATH")
                            + hint) from None
    path = Path(choice).expanduser()
    if not path.is_file():
        raise UserError(f"--backbone-weights {choice}: no such file, and not one of "
                        f"auto, none, {', '.join(sorted(set(BACKBONES.values())))}")
    return path


# ---------------------------------------------------------------------------- data
def train_transform(args):
    """Joint scale/crop/flip, then the photometric distortion: ``(img, lbl, rng)``."""
    joint = random_scale_crop_flip(tuple(args.crop_size), tuple(args.scale_range),
                                   flip=args.flip)
    photometric = PhotometricDistortion() if args.photometric else None

    def transform(img, lbl, rng):
        img, lbl = joint(img, lbl, rng)
        if photometric is not None:
            img = photometric(img, rng)
        return img, lbl

    return transform


def normalize_batch(images, preprocess):
    """uint8 ``(N, 3, H, W)`` RGB -> float32 network input, as
    :func:`d3net_seg.inference.normalize` does per image."""
    x = images.astype(np.float32)
    if not preprocess.get("to_rgb", True):
        x = x[:, ::-1]
    mean = np.asarray(preprocess["mean"], np.float32).astype(np.float64)[None, :, None, None]
    stdinv = 1.0 / np.asarray(preprocess["std"], np.float32).astype(np.float64)
    return ((x - mean) * stdinv[None, :, None, None]).astype(np.float32)


def label_targets(labels, num_classes):
    """uint8 trainIds ``(N, H, W)`` -> ``(N, 1, H, W)`` targets with 255 -> -1 (ignored)."""
    t = labels.astype(np.int32)
    bad = (t != IGNORE_INDEX) & (t >= num_classes)
    if bad.any():
        raise UserError(f"training labels hold id {int(t[bad][0])}; expected trainIds "
                        f"0..{num_classes - 1} or {IGNORE_INDEX} (ignore)")
    t[t == IGNORE_INDEX] = -1
    return t[:, None]


def prepare_data(args, out, dist):
    root = args.root
    if args.synthetic:
        from .synthetic import make_synthetic_cityscapes

        root = root or str(out / SYNTHETIC_DIR)
        if dist.is_main:
            n_train, n_val = args.synthetic_images
            h, w = args.synthetic_size
            make_synthetic_cityscapes(root, n_train, n_val, h, w, seed=args.seed)
        dist.barrier()
    dataset = Cityscapes(root, args.train_split, transform=train_transform(args))
    per_rank = args.batch_size // dist.size
    if per_rank * dist.size != args.batch_size:
        raise UserError(f"--batch-size {args.batch_size} is not divisible by the "
                        f"{dist.size} processes")
    try:
        loader = BatchLoader(dataset, per_rank, shuffle=True, seed=args.seed,
                             rank=dist.rank, world_size=dist.size,
                             num_threads=args.loader_threads)
    except ValueError as exc:
        raise UserError(f"{root}: {len(dataset)} training images are too few: {exc}") from None
    return root, loader


# ---------------------------------------------------------------------------- training
def _write_model_config(config, out):
    with atomic_write(out / "model_config.yaml", "w") as f:
        f.write("# Network config of this run (d3net_seg.model.load_config layout); pass it as "
                "--model-config to eval.py\n")
        yaml.safe_dump(config, f, sort_keys=False, default_flow_style=None)


def train(args):
    import nnabla as nn
    import nnabla.functions as F
    import nnabla.solvers as S

    from common.runtime.params_io import read_param_file

    from .model import D3NetSegmentation, min_input_size

    check_args(args)
    if not args.synthetic:
        list_pairs(args.root, args.train_split)  # no data: fail before writing anything
    config, modified = network_config(args)
    if min(args.crop_size) < min_input_size(config):
        raise UserError(f"--crop-size {args.crop_size[0]} {args.crop_size[1]} is too small: "
                        f"D3Net needs at least {min_input_size(config)} pixels per side")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    ctx = context_from_args(args)
    dist = init_distributed(ctx)
    nn.set_default_context(dist.ctx)
    ckpts = CheckpointManager(out / "checkpoints", keep_last=args.keep_last)
    latest = ckpts.load_latest() if args.resume else None
    if latest is not None:
        check_resume_options(latest.config, args, RESUME_FREE,
                             "use the run's config.yaml or a new --output")
    backbone = None if latest is not None else resolve_backbone(args.backbone_weights, config,
                                                                modified)
    if dist.is_main:
        save_config(args, out)
        _write_model_config(config, out)
    seed_everything(args.seed)
    ooc = out_of_core_from_args(args, dist.ctx)  # before the graph: it may set the context
    root, loader = prepare_data(args, out, dist)

    model = D3NetSegmentation(config, param_scope=nn.parameter.get_current_parameter_scope())
    batch = loader.batch_size
    h, w = args.crop_size
    image = nn.Variable((batch, 3, h, w))
    target = nn.Variable((batch, 1, h, w))
    logits = model(image, test=False, recompute=args.recompute)
    loss = F.mean(F.softmax_cross_entropy(logits, target, axis=1))
    loss.persistent = True
    if backbone is not None:
        params, _ = read_param_file(str(backbone))
        loaded, missing, _ = model.load_backbone_parameters(params)
        print(f"backbone initialised from {backbone}: {len(loaded)} parameters"
              + (f" ({len(missing)} backbone parameters not in the file keep their "
                 f"initialisation)" if missing else ""))
    solver = S.Momentum(args.lr, args.momentum)
    solver.set_parameters(nn.get_parameters())

    step = 0
    if args.resume:
        if latest is None:
            print(f"no checkpoint in {out / 'checkpoints'}; starting from scratch")
        else:
            step, _, _ = ckpts.restore(latest, {"momentum": solver})
            print(f"resumed at iteration {step}")
    log = TrainingLog(out, resume_step=step if args.resume else None,
                      interval=args.log_interval) if dist.is_main else None
    preprocess, num_classes = config["preprocess"], config["model"]["num_classes"]
    stop = args.max_iter if not args.stop_at_iter else min(args.stop_at_iter, args.max_iter)

    def export(name):
        if dist.is_main:
            model.save_parameters(str(out / name))

    def checkpoint():
        if dist.is_main:
            ckpts.save(step, {"momentum": solver}, config=vars(args))

    if step == 0 and args.save_interval:
        export(f"model_param_{0:08d}.h5")  # the initial weights
    # The next batch is loaded in the background while this one trains (batches are pure
    # functions of the iteration, so this changes nothing but the speed).
    prefetch = ThreadPoolExecutor(1)

    def fetch(iteration):
        return loader.get_batch(*divmod(iteration, len(loader)))

    pending = prefetch.submit(fetch, step)
    bar = progress(range(step, stop), desc="training", unit="it")
    for _ in bar:
        images, labels = pending.result()
        if step + 1 < stop:
            pending = prefetch.submit(fetch, step + 1)
        lr = learning_rate(args, step)
        solver.set_learning_rate(lr)
        with ooc.step() as hooks:
            image.d = normalize_batch(images, preprocess)
            target.d = label_targets(labels, num_classes)
            solver.zero_grad()
            loss.forward(clear_no_need_grad=True, **hooks)
            loss.backward(clear_buffer=True, **hooks)
            dist.all_reduce_grads(solver.get_parameters())
            solver.weight_decay(args.weight_decay)
            solver.update()
        step += 1
        value = dist.all_reduce_value(float(loss.d))
        if not np.isfinite(value):
            raise UserError(f"training diverged at iteration {step} (loss {value}); "
                            "try a lower --lr")
        bar.set_postfix(loss=f"{value:.4f}")
        if dist.is_main:
            log.add("training loss", step, value)
            log.add("learning rate", step, lr)
            log.time("training time", step)
        if args.save_interval and step % args.save_interval == 0:
            export(f"model_param_{step:08d}.h5")
        if step == stop or (args.checkpoint_interval and step % args.checkpoint_interval == 0):
            checkpoint()
    if step >= args.max_iter:
        export("final.h5")
        print(f"finished {step} iterations; weights in {out / 'final.h5'}")
    else:
        print(f"stopped after iteration {step} of {args.max_iter}; continue with --resume")
    prefetch.shutdown(cancel_futures=True)
    loader.close()
    return out


def main(argv=None):
    args = build_parser().parse_args(argv)
    start = time.time()
    out = train(args)
    print(f"done in {time.time() - start:.1f} s; outputs in {out}")
    return 0
