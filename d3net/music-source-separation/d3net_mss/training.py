"""Training of one D3Net music-source-separation network (one target per run), resumable.

Recipe (official ``train.py``; ``configs/train.yaml``): random 6 s excerpts, 64 per track per
epoch, batch 6; every source gets a random gain in [0.75, 1.25] and a random channel swap, and
comes from an independently drawn track (random track mixing); the mixture is the sum of the
sources. Loss: mean squared error between the network output and the target's magnitude
spectrogram (nnabla STFT, centred with reflect padding) on the first ``patch_length`` = 256
frames, for every target (the official script fixes 256 and ignores the network config's
``patch_length``, e.g. bass's 352). Adam, learning rate 1e-3, multiplied by 0.1 from epoch 40
on, weight decay 1e-4, 50 epochs; conv weights initialised with Glorot (Xavier) normal; the
network's input offset / scale start from the per-bin mean / std of the training mixtures' mono
magnitude.
The network itself is :class:`d3net_mss.model.D3NetMSS` built from ``--network-config``
(default: the target's official configuration ``configs/<target>.yaml``).

Differences from the official script, on purpose:

* validation: the official trains on all 100 MUSDB18 training tracks and never validates; here
  training uses musdb's 86-track train split and every epoch is scored on the 14 official
  validation tracks (test-mode batch norm, in pieces of the training excerpt length). The
  exported ``<target>.h5`` holds the best validation epoch (the official saves the last one).
  On the bundled one-track sample root the validation split falls back to its training track,
  with a logged warning;
* unknown config keys / flags and out-of-range numbers are errors; the resolved options are
  saved with the run, and ``--resume`` refuses options that would change the results
  (``--epochs`` may grow);
* checkpoints (parameters including batch-norm statistics, Adam state, schedule, RNG states,
  loader position) every ``checkpoint_interval`` iterations, at every epoch end and at
  Ctrl-C, so ``--resume`` continues after a kill, even mid-epoch, with the same data order
  and bit-identical results (the loop is :func:`common.mss.training.train_epochs`, shared
  with X-UMX).

Configuration: with ``--root`` (and no ``--config``) the recipe above is trained
(``configs/train.yaml``, with the target's official network ``configs/<target>.yaml``);
without a dataset root the defaults are the CPU smoke run of a tiny network on the bundled
sample (``configs/train_smoke.yaml``). ``--network-config`` also takes the official flat
per-source files (``valid_signal_idx: ...``, as in the official ``configs/``).

As officially, the learning rate and the weight decay are scaled by
``processes * batch_size / 6`` (so ``--lr`` and ``--weight-decay`` are the values for a total
batch of 6), and data-parallel training synchronises batch norm across processes.

Outputs in ``--output`` (several targets can share one folder, as officially):
``<target>.h5`` (best weights, official format: names prefixed ``<target>/``),
``<target>.yaml`` (the network configuration, official flat keys, read by ``separate.py`` /
``eval.py`` for non-official networks), and ``<target>/`` holding ``config.yaml``,
``input_stats.npz``, ``checkpoints/`` and the training curves (``*.series.txt``).
"""
import time
from pathlib import Path

import yaml

from common.cli import Bounded, NonNegativeInt, Parser, PositiveInt
from common.context import add_context_args
from common.errors import UserError
from common.fileio import atomic_write
from common.mss import training as mss_training

from .model import SAMPLE_RATE, SOURCES, D3NetMSS, load_config, spectrogram, stft

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
SMOKE_CONFIG = CONFIG_DIR / "train_smoke.yaml"
RECIPE_CONFIG = CONFIG_DIR / "train.yaml"
# The official script scales the learning rate and weight decay by (processes * batch) / 6.
REFERENCE_BATCH = 6


def build_parser():
    """Defaults: the recipe (``configs/train.yaml``), under the smoke configuration
    (``configs/train_smoke.yaml``) when neither ``--root`` nor ``--config`` is given."""
    p = Parser(description="Train the D3Net network of one source on MUSDB18: the paper's "
                           "recipe with --root, else a CPU smoke run of a tiny network on the "
                           "bundled one-track MUSDB18 sample.",
               default_config=str(RECIPE_CONFIG), smoke_config=str(SMOKE_CONFIG),
               smoke_unless=mss_training.SMOKE_UNLESS)
    p.add_argument("--output", required=True,
                   help="run folder: <target>.h5 / <target>.yaml and <target>/ go here")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    m = p.add_argument_group("model")
    m.add_argument("--target", choices=list(SOURCES), default="vocals",
                   help="the source this network separates (one network per source)")
    m.add_argument("--network-config", default=None, metavar="NAME|PATH",
                   help="network configuration: a YAML file (this repository's layout or an "
                        "official flat per-source file), or the name of one in "
                        "d3net/music-source-separation/configs/ (default: the target's "
                        "official configuration, e.g. vocals)")
    m.add_argument("--patch-length", type=PositiveInt, default=None,
                   help="STFT frames of each excerpt the loss sees (recipe: 256, as "
                        "officially; unset: the network config's training patch)")
    m.add_argument("--init-method", choices=["xavier", "normal", "nnabla"], default="xavier",
                   help="initialisation of the conv weights (official: xavier)")
    d = p.add_argument_group("data")
    mss_training.add_data_args(
        d, seq_dur=None, gain_range=(0.75, 1.25),
        seq_dur_help="excerpt length (s); the loss sees its first --patch-length frames "
                     "(recipe: 6, as officially; unset: patch_length * hop samples)")
    t = p.add_argument_group("optimisation")
    mss_training.add_loop_args(
        t, epochs=50, batch_size=6, lr=1e-3, weight_decay=1e-4,
        lr_help="learning rate for a total batch of 6; scaled by processes * batch / 6")
    t.add_argument("--lr-milestones", type=NonNegativeInt, nargs="*", default=[40],
                   help="epochs from which the learning rate is multiplied by --lr-gamma")
    t.add_argument("--lr-gamma", type=Bounded(float, 0, 1, low_open=True), default=0.1)
    add_context_args(p)
    return p


def network_config(args):
    """The flat network config (official keys) of this run, for ``args.target``."""
    config = dict(load_config(args.network_config or args.target))
    config["target"] = args.target
    if args.patch_length is not None:
        config["patch_length"] = args.patch_length
    if not config.get("patch_length"):
        raise UserError("the network config has no training patch length; "
                        "give --patch-length")
    multiple = D3NetMSS(config).frame_multiple
    if config["patch_length"] < 1 or config["patch_length"] % multiple:
        raise UserError(f"patch length {config['patch_length']} must be a positive multiple "
                        f"of {multiple} (2 ** the network's down-sampling levels)")
    if config["fs"] != SAMPLE_RATE:
        raise UserError(f"the network config's sample rate {config['fs']} is not MUSDB18's "
                        f"{SAMPLE_RATE}")
    return config


def excerpt_samples(args, config):
    """Samples per training excerpt: ``--seq-dur`` or ``patch_length * hop``; the STFT of the
    excerpt must have at least ``patch_length`` frames."""
    patch, hop = config["patch_length"], config["hop_size"]
    if args.seq_dur is None:
        return patch * hop
    samples = int(round(args.seq_dur * SAMPLE_RATE))
    if 1 + samples // hop < patch:
        raise UserError(f"--seq-dur {args.seq_dur:g} s gives {1 + samples // hop} STFT frames, "
                        f"fewer than the patch length {patch} (use at least "
                        f"{(patch - 1) * hop / SAMPLE_RATE:.3f} s)")
    return samples


def _loss_graph(model, config, batch, samples, test, comm=None, init_method=None):
    """``(mixture, target, loss)``: MSE between the network output and the target magnitude
    on the first ``patch_length`` frames, as the official training graph."""
    import nnabla as nn
    import nnabla.functions as F

    mixture = nn.Variable((batch, 2, samples))
    target = nn.Variable((batch, 2, samples))
    n_fft, hop, patch = config["fft_size"], config["hop_size"], config["patch_length"]
    mono = config["n_channels"] == 1
    mix_spec = spectrogram(*stft(mixture, n_fft, hop, patch_length=patch), mono=mono)
    tgt_spec = spectrogram(*stft(target, n_fft, hop, patch_length=patch), mono=mono)
    pred = model.network(mix_spec, test=test, comm=comm, init_method=init_method)
    loss = F.mean(F.squared_error(pred, tgt_spec))
    loss.persistent = True
    return mixture, target, loss


def export_weights(model, config, out):
    """Write ``<target>.yaml`` (network config) and ``<target>.h5`` (official parameter file)."""
    target = config["target"]
    with atomic_write(Path(out) / f"{target}.yaml", "w") as f:
        yaml.safe_dump(dict(config), f, sort_keys=False, default_flow_style=None)
    model.save_parameters(str(Path(out) / f"{target}.h5"))


def train(args):
    import nnabla as nn
    import nnabla.solvers as S

    config = network_config(args)
    samples = excerpt_samples(args, config)
    out = Path(args.output)
    # Several targets share one --output (as officially): each has its own run folder in it.
    run, dist, ooc = mss_training.start_run(args, out / args.target)
    data = mss_training.musdb_training_data(args, (args.target,), samples / SAMPLE_RATE, dist)
    run.begin()
    n_fft, hop = config["fft_size"], config["hop_size"]
    with run.guard():  # Ctrl-C while the statistics are computed names the run, too
        mean, std = mss_training.load_or_compute_stats(run, data.train_db.tracks, n_fft, hop,
                                                       n_fft // 2 + 1)
    # The global parameter scope, so that checkpoints and solvers see the parameters.
    model = D3NetMSS(config, input_mean=mean, input_scale=std,
                     param_scope=nn.parameter.get_current_parameter_scope())
    comm = dist.comm if dist.enabled else None
    init = None if args.init_method == "nnabla" else args.init_method
    train_graph = _loss_graph(model, config, args.batch_size, samples, test=False, comm=comm,
                              init_method=init)
    valid_graph = _loss_graph(model, config, 1, samples, test=True)

    scale = dist.size * args.batch_size / REFERENCE_BATCH
    solver = S.Adam(args.lr * scale)
    solver.set_parameters(nn.get_parameters())
    schedule = mss_training.StepSchedule(args.lr * scale, args.lr_milestones, args.lr_gamma)
    mss_training.train_epochs(
        args, run, dist=dist, ooc=ooc, solver=solver, graph=train_graph,
        validate=lambda: mss_training.validation_loss(valid_graph, data.valid_set, samples),
        loader=data.loader, iters_per_epoch=data.iters_per_epoch, schedule=schedule,
        export=lambda: export_weights(model, config, out),
        weight_decay=args.weight_decay * scale)
    return out


def main(argv=None):
    args = build_parser().parse_args(argv)
    start = time.time()
    out = train(args)
    print(f"done in {time.time() - start:.1f} s; outputs in {out} "
          f"({args.target}.h5, {args.target}.yaml, {args.target}/)")
    return 0
