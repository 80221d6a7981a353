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

Run lifecycle (:class:`common.train.run.TrainingRun`): an occupied ``--output`` is refused
unless ``--resume`` is given, and ``--resume`` refuses options that change results; nothing
is written before the data, the network and the backbone were checked; Ctrl-C writes a
checkpoint of the finished iteration and stops (exit 130, continue with ``--resume``, which
goes on bit for bit); a non-finite loss stops with one line naming the iteration.

Which recipe: the defaults are the official D3Net-L recipe (``configs/train_D3Net_L.yaml``;
the official script's default config is ``D3Net_L.yaml``), under ``--config FILE`` and the
flags. Only with neither ``--config`` nor a dataset ``--root`` does the CPU smoke run
(``configs/train_smoke.yaml``, a generated SYNTHETIC set) come in between. A network config given
on the command line (``--network-config``, officially ``-cfg``; the official flat files
carry the training values too) also sets the training values it holds (batch size, crop,
iterations, learning rates, momentum, weight decay, save interval) unless the command line
or the ``--config`` file set them.

Outputs in ``--output``: ``config.yaml`` (this script's options), ``network_config.yaml``
(the network config, readable by ``eval.py``/``infer.py`` ``--network-config``, which find
it beside the weights by themselves), ``checkpoints/``, the curves
``training-loss.series.txt`` and ``learning-rate.series.txt``, ``model_param_<iteration>.h5``
every ``save_interval`` iterations (iteration 0 = the initial weights) and ``final.h5`` at the
end, all nnabla parameter files with the official names (as the official script writes them).
"""
import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml

from common.cli import (Bounded, Fraction, NonNegativeFloat, NonNegativeInt, Parser, PositiveFloat,
                        PositiveInt)
from common.config import load_config as read_options
from common.context import add_context_args, context_from_args
from common.data.cityscapes import IGNORE_INDEX, Cityscapes, list_pairs, random_scale_crop_flip
from common.data.image_augment import PhotometricDistortion
from common.data.loader import BatchLoader
from common.errors import UserError
from common.fileio import atomic_write
from common.terminal import progress
from common.train.distributed import init_distributed
from common.train.monitor import TrainingLog
from common.train.out_of_core import add_ooc_args, out_of_core_from_args
from common.train.run import TrainingRun, add_checkpoint_args
from common.train.schedules import poly_lr
from common.train.seeding import seed_everything

from .model import RUN_CONFIG, D3NetSegmentation, min_input_size
from .model import load_config as load_network_config
from .weights import load_backbone

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
SMOKE_CONFIG = CONFIG_DIR / "train_smoke.yaml"
# The official train.py defaults to configs/D3Net_L.yaml.
PAPER_CONFIG = CONFIG_DIR / "train_D3Net_L.yaml"
# The smoke configuration applies unless a dataset root (or --config) is given: it never
# leaks into a recipe run (common.cli.Parser's smoke_unless).
SMOKE_UNLESS = ("root",)
SYNTHETIC_DIR = "synthetic-cityscapes"
# Network config keys that can be overridden from the command line / training config.
BLOCK_COMP = Bounded(float, 0, 1, low_open=True)
ARCH_KEYS = (("num_init_features", PositiveInt, None), ("num_layers", PositiveInt, "+"),
             ("n_blocks", PositiveInt, "+"), ("dens_k", PositiveInt, "+"),
             ("block_comp", BLOCK_COMP, "+"), ("dense_n_out_layer_block", PositiveInt, "+"),
             ("intermediate_out_ch", PositiveInt, "+"), ("trans_comp_factor", PositiveInt, None),
             ("channels", PositiveInt, None))
BACKBONES = {"D3Net_S": "d3net-s-backbone", "D3Net_L": "d3net-l-backbone"}
# Options that may change between a run and its --resume besides TrainingRun's ALWAYS_FREE:
# they change what is exported or how memory is used, not what is computed.
RESUME_FREE = {"save_interval", "backbone_weights", "recompute"}
# The training values a network config may hold (section ``train``; the official flat files
# hold them at the top level) -> this script's options.
RECIPE_OPTIONS = ("batch_size", "max_iter", "save_interval", "lr", "momentum", "weight_decay",
                  "power", "min_lr")


def build_parser():
    """Defaults: the D3Net-L recipe (``configs/train_D3Net_L.yaml``), under the smoke
    configuration (``configs/train_smoke.yaml``) when neither ``--root`` nor ``--config`` is
    given."""
    p = Parser(description="Train D3Net for Cityscapes semantic segmentation. Without "
                           "--config: the official D3Net-L recipe when a dataset --root is "
                           "given, else a CPU smoke run of a tiny D3Net on a generated "
                           "SYNTHETIC data set in the Cityscapes layout.",
               default_config=str(PAPER_CONFIG), smoke_config=str(SMOKE_CONFIG),
               smoke_unless=SMOKE_UNLESS)
    p.add_argument("--output", required=True, help="run directory")
    p.add_alias("--output-dir", "output")  # the official spellings
    p.add_alias("-o", "output")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("--stop-at-iter", type=NonNegativeInt, default=0,
                   help="end this run after that many iterations (checkpoint written, no "
                        "final.h5); the schedule still runs to --max-iter, continue with "
                        "--resume. 0 = run to --max-iter")
    d = p.add_argument_group("data")
    d.add_argument("--root", default=None,
                   help="Cityscapes root (leftImg8bit/, gtFine/ with *_labelTrainIds.png)")
    p.add_alias("--data-dir", "root")
    d.add_argument("--train-split", default="train", choices=["train", "val"])
    d.add_argument("--synthetic", action=argparse.BooleanOptionalAction, default=False,
                   help="train on a generated SYNTHETIC set in the Cityscapes layout (written "
                        f"to --root, default OUTPUT/{SYNTHETIC_DIR}); for smoke runs only")
    d.add_argument("--synthetic-images", type=PositiveInt, nargs=2, default=[8, 4],
                   metavar=("TRAIN", "VAL"), help="synthetic set size")
    d.add_argument("--synthetic-size", type=Bounded(int, 16), nargs=2, default=[128, 256],
                   metavar=("H", "W"), help="synthetic image size")
    d.add_argument("--crop-size", type=PositiveInt, nargs=2, default=[512, 1024],
                   metavar=("H", "W"))
    d.add_argument("--scale-range", type=PositiveFloat, nargs=2, default=[0.5, 2.0],
                   metavar=("MIN", "MAX"))
    d.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True,
                   help="random horizontal flip")
    d.add_argument("--photometric", action=argparse.BooleanOptionalAction, default=True,
                   help="photometric distortion (brightness/contrast/saturation/hue)")
    d.add_argument("--loader-threads", type=NonNegativeInt, default=4)
    m = p.add_argument_group("model")
    m.add_argument("--network-config", default="D3Net_L", metavar="{D3Net_S,D3Net_L,PATH}",
                   help="network config: D3Net_S, D3Net_L or a YAML file (our configs/"
                        "D3Net_*.yaml layout or the official flat one); the options below "
                        "override single entries of its model section")
    p.add_alias("--config-file", "network_config")
    p.add_alias("-cfg", "network_config")
    for key, kind, nargs in ARCH_KEYS:
        m.add_argument("--" + key.replace("_", "-"), type=kind, nargs=nargs, default=None,
                       help="override model." + key)
    m.add_argument("--backbone-weights", default="auto", metavar="{auto,none,NAME,PATH}",
                   help="ImageNet-pretrained backbone to start from: a .h5 path, a registry "
                        "name (d3net-s-backbone, d3net-l-backbone; downloaded once), none "
                        "(random initialisation) or auto (the published backbone of an "
                        "unmodified D3Net_S / D3Net_L, else none)")
    p.add_alias("--pretrained", "backbone_weights")
    p.add_alias("-p", "backbone_weights")
    m.add_argument("--recompute", action="store_true",
                   help="recompute convolution outputs in backward (less memory, slower)")
    p.add_alias("-r", "recompute")
    t = p.add_argument_group("optimisation")
    t.add_argument("--batch-size", type=PositiveInt, default=8, help="total over all processes")
    t.add_argument("--max-iter", type=PositiveInt, default=80000)
    t.add_argument("--lr", type=PositiveFloat, default=0.01)
    t.add_argument("--min-lr", type=NonNegativeFloat, default=1e-4)
    t.add_argument("--power", type=NonNegativeFloat, default=0.9,
                   help="polynomial decay power")
    t.add_argument("--momentum", type=Fraction, default=0.9)
    t.add_argument("--weight-decay", type=NonNegativeFloat, default=5e-4)
    t.add_argument("--seed", type=NonNegativeInt, default=0)
    t.add_argument("--save-interval", type=NonNegativeInt, default=8000,
                   help="write model_param_<iteration>.h5 every N iterations (0 = never)")
    add_checkpoint_args(t, interval=1000)
    t.add_argument("--log-interval", type=PositiveInt, default=50,
                   help="average the logged loss over N iterations")
    add_context_args(p)
    add_ooc_args(p)
    return p


# ---------------------------------------------------------------------------- options
def parse_args(argv=None):
    """Options of a run: flags over ``--config`` over the training values of a network
    config given on the command line over the default recipe (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    # The options set on the command line (a parse that starts from "unset" everywhere) ...
    unset = object()
    blank = argparse.Namespace(**dict.fromkeys(vars(args), unset))
    given = {k for k, v in vars(parser.parse_args(argv, blank)).items() if v is not unset}
    if "network_config" not in given:
        return args
    # ... or in the --config file keep their values.
    if args.config:
        given |= {str(key).replace("-", "_") for key in read_options(args.config)}
    train = load_network_config(args.network_config)["train"]
    flags = []
    for key in RECIPE_OPTIONS:
        if key in train and key not in given:
            flags += ["--" + key.replace("_", "-"), str(train[key])]
    crop = [train.get("image_height", args.crop_size[0]),
            train.get("image_width", args.crop_size[1])]
    if "crop_size" not in given and crop != args.crop_size:
        flags += ["--crop-size", *map(str, crop)]
    if not flags:
        return args
    try:
        return parser.parse_args(flags + argv)
    except UserError as exc:
        raise UserError(f"network config {args.network_config}: {exc}") from None


def network_config(args):
    """The network config (sections model/preprocess/palette/train) with the command-line
    overrides applied and validated; ``(config, modified)``."""
    config = load_network_config(args.network_config)
    modified = False
    for key, _, _ in ARCH_KEYS:
        value = getattr(args, key)
        if value is not None and value != config["model"].get(key):
            config["model"][key] = value
            modified = True
    if modified:
        config["name"] = f"{config.get('name', 'config')}-modified"
    return load_network_config(config), modified


def check_args(args):
    if args.min_lr > args.lr:
        raise UserError(f"--min-lr {args.min_lr} exceeds --lr {args.lr}")
    lo, hi = args.scale_range
    if lo > hi:
        raise UserError(f"--scale-range {lo} {hi}: MIN exceeds MAX")
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
            raise UserError(str(exc).replace("--model PATH", "--backbone-weights PATH")
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
    """The loader of this process's shard of the training split (the synthetic set is
    written first by the main process when asked for)."""
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
    try:
        loader = BatchLoader(dataset, args.batch_size // dist.size, shuffle=True,
                             seed=args.seed, rank=dist.rank, world_size=dist.size,
                             num_threads=args.loader_threads)
    except UserError as exc:
        raise UserError(f"{root}: {exc}") from None
    return loader


# ---------------------------------------------------------------------------- training
def _write_network_config(config, out):
    with atomic_write(out / RUN_CONFIG, "w") as f:
        f.write("# Network config of this run (d3net_seg.model.load_config layout); eval.py "
                "and infer.py read it beside the weights\n")
        yaml.safe_dump(config, f, sort_keys=False, default_flow_style=None)


def train(args):
    """Run (or continue) the training of ``args``; returns the run folder."""
    import nnabla as nn
    import nnabla.functions as F
    import nnabla.solvers as S

    from common.runtime.params_io import read_param_file

    started = time.time()
    run = TrainingRun(args.output, args, resume=args.resume, free=RESUME_FREE,
                      keep_last=args.keep_last).open()
    out = run.out
    check_args(args)
    if not args.synthetic:
        list_pairs(args.root, args.train_split)  # no data: fail before writing anything
    config, modified = network_config(args)
    if min(args.crop_size) < min_input_size(config):
        raise UserError(f"--crop-size {args.crop_size[0]} {args.crop_size[1]} is too small: "
                        f"D3Net needs at least {min_input_size(config)} pixels per side")
    dist = init_distributed(context_from_args(args))
    if args.batch_size % dist.size:
        raise UserError(f"--batch-size {args.batch_size} is not divisible by the "
                        f"{dist.size} processes")
    run.join(dist)
    backbone = (None if run.has_checkpoint()
                else resolve_backbone(args.backbone_weights, config, modified))
    run.begin()
    if dist.is_main:
        _write_network_config(config, out)
    nn.clear_parameters()  # the model below is the only one in nnabla's registry
    seed_everything(args.seed)
    ooc = out_of_core_from_args(args, dist.ctx)  # before the graph: it may set the context
    loader = prepare_data(args, out, dist)

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
        loaded, missing, _ = load_backbone(model, params)
        print(f"backbone initialised from {backbone}: {len(loaded)} parameters"
              + (f" ({len(missing)} backbone parameters not in the file keep their "
                 f"initialisation)" if missing else ""))
    solver = S.Momentum(args.lr, args.momentum)
    solver.set_parameters(nn.get_parameters())

    step, _ = run.restore({"momentum": solver})
    log = TrainingLog(out, resume_step=step if run.resuming else None,
                      interval=args.log_interval) if dist.is_main else None
    preprocess, num_classes = config["preprocess"], config["model"]["num_classes"]
    stop = args.max_iter if not args.stop_at_iter else min(args.stop_at_iter, args.max_iter)

    def export(name):
        if dist.is_main:
            model.save_parameters(str(out / name))

    def save(checkpoint=True):
        """The outputs of iteration ``step``: its parameter file when one is due, and a
        checkpoint."""
        if args.save_interval and step % args.save_interval == 0:
            export(f"model_param_{step:08d}.h5")
        if checkpoint:
            run.save(step, {"momentum": solver}, config=vars(args))

    if step == 0:
        save(checkpoint=False)  # the initial weights
    # The next batch is loaded in the background while this one trains (batches are pure
    # functions of the iteration, so this changes nothing but the speed).
    prefetch = ThreadPoolExecutor(1)

    def fetch(iteration):
        return loader.get_batch(*divmod(iteration, len(loader)))

    try:
        pending = prefetch.submit(fetch, step)
        bar = progress(range(step, stop), desc="training", unit="it")
        with run.guard():
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
                bar.set_postfix(loss=f"{value:.4f}")
                if dist.is_main:
                    log.add("training loss", step, value)
                    log.add("learning rate", step, lr)
                    log.time("training time", step)
                run.step_done(step, value, save=save)
                save(checkpoint=step == stop or (args.checkpoint_interval
                                                 and step % args.checkpoint_interval == 0))
    finally:
        prefetch.shutdown(cancel_futures=True)
        loader.close()
    took = f"{time.time() - started:.1f} s"
    if step >= args.max_iter:
        export("final.h5")
        print(f"finished {step} iterations in {took}; weights in {out / 'final.h5'}")
    else:
        print(f"stopped after iteration {step} of {args.max_iter} ({took}); continue with "
              f"--resume; outputs in {out}")
    return out


def main(argv=None):
    train(parse_args(argv))
    return 0
