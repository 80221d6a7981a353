"""Training of X-UMX and UMX on MUSDB18 (the official recipe, resumable).

Recipe (``configs/xumx.yaml`` / ``configs/umx.yaml``): random 6 s excerpts, 64 per track per
epoch, batch 16, source gain 0.25-1.25 and channel swap on every source, sources mixed across
random tracks; Adam (lr 1e-3, weight decay 1e-5); the learning rate is multiplied by 0.3 after
80 epochs without validation improvement; training stops early after 140 such epochs; at most
1000 epochs. X-UMX minimises ``mcoef * SDR-combination + MSE-combination`` (all 14 combinations of
the four sources), UMX the spectrogram MSE of its one target. The network's input mean/scale
start from the training set's spectrogram statistics. Validation runs on the 14 official
validation tracks, in ``valid_dur`` pieces, in test mode.

Differences from the official script, on purpose:
* every model size flag is honoured (the official parses some and ignores them);
* early stopping (``--patience``) applies to X-UMX too (the official script applies it to UMX
  only; ``--patience 0`` reproduces that for X-UMX);
* unknown config keys / flags and out-of-range numbers are errors; the resolved config is
  saved with the run, and ``--resume`` refuses options that would change the results
  (``--epochs`` may grow);
* checkpoints (parameters, Adam state, scheduler, RNG, loader position) every
  ``checkpoint_interval`` iterations, at every epoch end and at Ctrl-C, so ``--resume``
  continues after a kill, even mid-epoch, with the same data order;
* with data-parallel training the learning rate is scaled by the number of processes
  (linear scaling), weight decay is not.

The data sampling, input statistics, validation, checkpointing and the loop itself are the
ones shared with D3Net (:mod:`common.mss.training`).

Configuration: with ``--root`` (and no ``--config``) the recipe above is trained
(``configs/xumx.yaml``; ``--model-type umx --target T`` for UMX); without a dataset root the
defaults are the CPU smoke run on the bundled sample (``configs/smoke.yaml``).

Outputs in ``--output``: ``config.yaml``, ``input_stats.npz``, ``checkpoints/``, the training
curves (``*.series.txt``), and the best weights in the official file format (``xumx.h5`` or
``<target>.h5``), which ``separate.py --model`` and ``eval.py --model`` accept.
"""
import argparse
import time
from pathlib import Path

from common.cli import Bounded, NonNegativeFloat, NonNegativeInt, Parser, PositiveFloat, PositiveInt
from common.context import add_context_args
from common.mss import training as mss_training

from .model import SOURCES, CrossNet, OpenUnmix, bandwidth_to_max_bin

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
SMOKE_CONFIG = CONFIG_DIR / "smoke.yaml"
RECIPE_CONFIG = CONFIG_DIR / "xumx.yaml"


def build_parser():
    """Defaults: the recipe (``configs/xumx.yaml``), under the smoke configuration
    (``configs/smoke.yaml``) when neither ``--root`` nor ``--config`` is given."""
    p = Parser(description="Train X-UMX or UMX on MUSDB18: the paper's recipe with --root, "
                           "else a CPU smoke run on the bundled one-track MUSDB18 sample.",
               default_config=str(RECIPE_CONFIG), smoke_config=str(SMOKE_CONFIG),
               smoke_unless=mss_training.SMOKE_UNLESS)
    p.add_argument("--output", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    d = p.add_argument_group("data")
    mss_training.add_data_args(d, seq_dur=6.0, gain_range=(0.25, 1.25))
    d.add_argument("--valid-dur", "--valid_dur", type=PositiveFloat, default=10.0,
                   help="validation tracks are scored in pieces of this length (s)")
    m = p.add_argument_group("model")
    # The official boolean spelling of --model-type umx; declared first so that YAML files
    # set --model-type (argparse takes a dest's default from its first option).
    m.add_argument("--umx-train", dest="model_type", action="store_const", const="umx",
                   default="xumx", help=argparse.SUPPRESS)
    m.add_argument("--model-type", choices=["xumx", "umx"], default="xumx")
    m.add_argument("--target", "--source", choices=list(SOURCES), default="vocals",
                   help="the UMX target (UMX trains one network per target)")
    m.add_argument("--hidden-size", type=PositiveInt, default=512)
    m.add_argument("--nfft", type=PositiveInt, default=4096)
    m.add_argument("--nhop", type=PositiveInt, default=1024)
    m.add_argument("--bandwidth", type=PositiveFloat, default=16000.0,
                   help="highest frequency (Hz) the LSTM sees; sets max_bin")
    m.add_argument("--nb-channels", type=PositiveInt, choices=[1, 2], default=2)
    m.add_argument("--nb-layers", type=PositiveInt, default=3)
    m.add_argument("--unidirectional", action="store_true")
    t = p.add_argument_group("optimisation")
    mss_training.add_loop_args(t, epochs=1000, batch_size=16, lr=1e-3, weight_decay=1e-5)
    t.add_argument("--lr-decay-patience", type=NonNegativeInt, default=80)
    t.add_argument("--lr-decay-gamma", type=Bounded(float, 0, 1, low_open=True), default=0.3)
    t.add_argument("--patience", type=NonNegativeInt, default=140,
                   help="stop after this many epochs without validation improvement (0 = never)")
    t.add_argument("--mcoef", type=NonNegativeFloat, default=10.0,
                   help="X-UMX weight of the SDR loss")
    add_context_args(p)
    return p


def _build_model(args, mean, std):
    import nnabla as nn

    cls = CrossNet if args.model_type == "xumx" else OpenUnmix
    max_bin = bandwidth_to_max_bin(44100, args.nfft, args.bandwidth)
    # The global parameter scope, so that checkpoints and solvers see the parameters.
    return cls(hidden_size=args.hidden_size, n_fft=args.nfft, n_hop=args.nhop, max_bin=max_bin,
               nb_channels=args.nb_channels, nb_layers=args.nb_layers,
               bidirectional=not args.unidirectional, input_mean=mean, input_scale=std,
               param_scope=nn.parameter.get_current_parameter_scope())


def _loss_graph(model, args, batch, samples, test):
    import nnabla as nn

    n_targets = len(SOURCES) if args.model_type == "xumx" else 1
    mixture = nn.Variable((batch, 2, samples))
    target = nn.Variable((batch, n_targets * 2, samples))
    if args.model_type == "xumx":
        loss = model.training_loss(mixture, target, mcoef=args.mcoef, test=test)
    else:
        loss = model.training_loss(mixture, target, test=test)
    loss.persistent = True
    return mixture, target, loss


def train(args):
    import nnabla as nn
    import nnabla.solvers as S

    run, dist, ooc = mss_training.start_run(args, Path(args.output))
    targets = SOURCES if args.model_type == "xumx" else (args.target,)
    data = mss_training.musdb_training_data(args, targets, args.seq_dur, dist)
    run.begin()

    with run.guard():  # Ctrl-C while the statistics are computed names the run, too
        max_bin = bandwidth_to_max_bin(44100, args.nfft, args.bandwidth)
        mean, std = mss_training.load_or_compute_stats(run, data.train_db.tracks, args.nfft,
                                                       args.nhop, max_bin)
    model = _build_model(args, mean, std)
    samples = int(round(args.seq_dur * data.train_set.rate))
    train_graph = _loss_graph(model, args, args.batch_size, samples, test=False)
    valid_set = data.valid_set
    shortest = min(t.shape[-1] for t in (valid_set[i][0] for i in range(len(valid_set))))
    valid_samples = min(int(round(args.valid_dur * data.train_set.rate)), shortest)
    valid_graph = _loss_graph(model, args, 1, valid_samples, test=True)

    lr = args.lr * dist.size
    solver = S.Adam(lr)
    solver.set_parameters(nn.get_parameters())
    schedule = mss_training.PlateauSchedule(lr, factor=args.lr_decay_gamma,
                                            patience=args.lr_decay_patience,
                                            stop_patience=args.patience)
    return mss_training.train_epochs(
        args, run, dist=dist, ooc=ooc, solver=solver, graph=train_graph,
        validate=lambda: mss_training.validation_loss(valid_graph, valid_set, valid_samples),
        loader=data.loader, iters_per_epoch=data.iters_per_epoch, schedule=schedule,
        export=lambda: export_weights(model, args, run.out), weight_decay=args.weight_decay)


def export_weights(model, args, out):
    """Write the current parameters in the official file format and name."""
    name = "xumx.h5" if args.model_type == "xumx" else f"{args.target}.h5"
    model.save_parameters(str(Path(out) / name))


def main(argv=None):
    args = build_parser().parse_args(argv)
    start = time.time()
    out = train(args)
    print(f"done in {time.time() - start:.1f} s; outputs in {out}")
    return 0
