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
* unknown config keys / flags are errors; the resolved config is saved with the run;
* checkpoints (parameters, Adam state, scheduler, RNG, loader position) every
  ``checkpoint_interval`` iterations and at every epoch end, so ``--resume`` continues after a
  kill, even mid-epoch, with the same data order;
* with data-parallel training the learning rate is scaled by the number of processes
  (linear scaling), weight decay is not.

Outputs in ``--output``: ``config.yaml``, ``input_stats.npz``, ``checkpoints/``, the training
curves (``*.series.txt``), and the best weights in the official file format (``xumx.h5`` or
``<target>.h5``), which ``separate.py --model`` and ``eval.py --model`` accept.
"""
import time
from pathlib import Path

import numpy as np

from common.checkpoint import CheckpointManager
from common.config import ConfigParser, save_config
from common.context import add_context_args, context_from_args
from common.data.loader import BatchLoader
from common.data.musdb import MUSDBExcerpts, open_musdb, read_excerpt, source_augmentations
from common.distributed import init_distributed
from common.errors import UserError
from common.monitor import TrainingLog, progress
from common.schedules import EarlyStopping, ReduceLROnPlateau
from common.seeding import seed_everything

from . import spectral
from .model import SOURCES, CrossNet, OpenUnmix, bandwidth_to_max_bin

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "smoke.yaml"


def build_parser():
    p = ConfigParser(description="Train X-UMX or UMX on MUSDB18 (default: CPU smoke run on "
                                 "the bundled one-track MUSDB18 sample).",
                     default_config=str(DEFAULT_CONFIG))
    p.add_argument("--output", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    d = p.add_argument_group("data")
    d.add_argument("--root", default=None,
                   help="MUSDB18 root (default: the bundled one-track sample)")
    d.add_argument("--is-wav", action="store_true", help="decoded WAV layout of MUSDB18")
    d.add_argument("--seq-dur", type=float, default=6.0, help="excerpt length (s)")
    d.add_argument("--samples-per-track", type=int, default=64)
    d.add_argument("--source-augmentations", nargs="*", default=["gain", "channelswap"],
                   choices=["gain", "channelswap"])
    d.add_argument("--gain-range", type=float, nargs=2, default=[0.25, 1.25])
    d.add_argument("--random-track-mix", action="store_true", default=True)
    d.add_argument("--no-random-track-mix", dest="random_track_mix", action="store_false")
    d.add_argument("--valid-dur", type=float, default=100.0,
                   help="validation tracks are scored in pieces of this length (s)")
    d.add_argument("--loader-threads", type=int, default=4)
    m = p.add_argument_group("model")
    m.add_argument("--model-type", choices=["xumx", "umx"], default="xumx")
    m.add_argument("--target", choices=list(SOURCES), default="vocals",
                   help="the UMX target (UMX trains one network per target)")
    m.add_argument("--hidden-size", type=int, default=512)
    m.add_argument("--nfft", type=int, default=4096)
    m.add_argument("--nhop", type=int, default=1024)
    m.add_argument("--bandwidth", type=float, default=16000.0,
                   help="highest frequency (Hz) the LSTM sees; sets max_bin")
    m.add_argument("--nb-channels", type=int, choices=[1, 2], default=2)
    m.add_argument("--nb-layers", type=int, default=3)
    m.add_argument("--unidirectional", action="store_true")
    t = p.add_argument_group("optimisation")
    t.add_argument("--epochs", type=int, default=1000)
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--weight-decay", type=float, default=1e-5)
    t.add_argument("--lr-decay-patience", type=int, default=80)
    t.add_argument("--lr-decay-gamma", type=float, default=0.3)
    t.add_argument("--patience", type=int, default=140,
                   help="stop after this many epochs without validation improvement (0 = never)")
    t.add_argument("--mcoef", type=float, default=10.0, help="X-UMX weight of the SDR loss")
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--max-iter-per-epoch", type=int, default=0,
                   help="cap on iterations per epoch (0 = the whole epoch); for smoke runs")
    t.add_argument("--checkpoint-interval", type=int, default=200,
                   help="also checkpoint every N iterations inside an epoch")
    t.add_argument("--keep-last", type=int, default=3)
    add_context_args(p)
    return p


def compute_input_statistics(tracks, n_fft, n_hop, nb_bins):
    """Mean and std per frequency bin of the mono (channel-averaged) magnitude spectrogram
    over every frame of every training track, as the official script (which uses sklearn's
    StandardScaler); the std is floored at 1e-4 of its maximum."""
    count, total, total_sq = 0, np.zeros(nb_bins), np.zeros(nb_bins)
    for track in progress(tracks, desc="input statistics", unit="track"):
        audio = read_excerpt(track, "mixture")  # (channels, samples)
        mag = np.abs(spectral.stft_numpy(audio, n_fft, n_hop, center=True)).mean(axis=2)
        mag = mag[:, :nb_bins]
        count += mag.shape[0]
        total += mag.sum(axis=0)
        total_sq += (mag ** 2).sum(axis=0)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
    return mean, np.maximum(std, 1e-4 * std.max())


def _load_or_compute_stats(path, tracks, args, nb_bins, is_main):
    if path.exists():
        stats = np.load(path)
        if stats["mean"].shape == (nb_bins,):
            return stats["mean"], stats["std"]
    mean, std = compute_input_statistics(tracks, args.nfft, args.nhop, nb_bins)
    if is_main:
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, mean=mean, std=std)
        tmp.replace(path)
    return mean, std


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


def _validate(graph, valid_set, samples):
    """Mean validation loss over tracks; each track is the mean over its full pieces."""
    mixture, target, loss = graph
    losses = []
    for i in range(len(valid_set)):
        mix, tgt = valid_set[i]
        tgt = tgt.reshape(-1, tgt.shape[-1])
        pieces = []
        for start in range(0, mix.shape[-1] - samples + 1, samples):
            mixture.d = mix[None, :, start:start + samples]
            target.d = tgt[None, :, start:start + samples]
            loss.forward(clear_no_need_grad=True)
            pieces.append(float(loss.d))
        losses.append(np.mean(pieces))
    return float(np.mean(losses))


def train(args):
    import nnabla as nn
    import nnabla.solvers as S

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    ctx = context_from_args(args)
    dist = init_distributed(ctx)
    nn.set_default_context(dist.ctx)
    if dist.is_main:
        save_config(args, out)
    seed_everything(args.seed)

    train_db = open_musdb(args.root, subset="train", split="train", is_wav=args.is_wav)
    valid_db = open_musdb(args.root, subset="train", split="valid", is_wav=args.is_wav)
    targets = SOURCES if args.model_type == "xumx" else (args.target,)
    augment = source_augmentations(args.source_augmentations, tuple(args.gain_range))
    train_set = MUSDBExcerpts(train_db, targets=targets, seq_dur=args.seq_dur,
                              samples_per_track=args.samples_per_track, source_augment=augment,
                              random_track_mix=args.random_track_mix)
    valid_set = MUSDBExcerpts(valid_db, targets=targets, seq_dur=None)
    loader = BatchLoader(train_set, args.batch_size, shuffle=True, seed=args.seed,
                         rank=dist.rank, world_size=dist.size, num_threads=args.loader_threads)
    iters_per_epoch = len(loader)
    if args.max_iter_per_epoch > 0:
        iters_per_epoch = min(iters_per_epoch, args.max_iter_per_epoch)

    max_bin = bandwidth_to_max_bin(44100, args.nfft, args.bandwidth)
    mean, std = _load_or_compute_stats(out / "input_stats.npz", train_db.tracks, args,
                                       max_bin, dist.is_main)
    model = _build_model(args, mean, std)
    samples = int(round(args.seq_dur * train_set.rate))
    train_graph = _loss_graph(model, args, args.batch_size, samples, test=False)
    shortest = min(t.shape[-1] for t in (valid_set[i][0] for i in range(len(valid_set))))
    valid_samples = min(int(round(args.valid_dur * train_set.rate)), shortest)
    valid_graph = _loss_graph(model, args, 1, valid_samples, test=True)

    lr = args.lr * dist.size
    solver = S.Adam(lr)
    solver.set_parameters(nn.get_parameters())
    plateau = ReduceLROnPlateau(lr, factor=args.lr_decay_gamma, patience=args.lr_decay_patience)
    stopper = EarlyStopping(patience=args.patience)
    ckpts = CheckpointManager(out / "checkpoints", keep_last=args.keep_last)

    step, epoch, batch_index, loss_sum, loss_count, best_epoch = 0, 0, 0, 0.0, 0, -1
    if args.resume:
        resumed = ckpts.resume({"adam": solver})
        if resumed is None:
            print(f"no checkpoint in {out / 'checkpoints'}; starting from scratch")
        else:
            step, _, extra = resumed
            epoch, batch_index = int(extra["epoch"]), int(extra["batch_index"])
            loss_sum, loss_count = float(extra["loss_sum"]), int(extra["loss_count"])
            best_epoch = int(extra["best_epoch"])
            plateau.load_state_dict(extra["plateau"])
            stopper.load_state_dict(extra["stopper"])
            solver.set_learning_rate(plateau.lr)
            print(f"resumed at epoch {epoch}, iteration {step}")
    log = TrainingLog(out, resume_step=step if args.resume else None)
    mixture, target, loss = train_graph
    config = vars(args)

    def save(metric=None):
        if not dist.is_main:
            return
        ckpts.save(step, {"adam": solver}, config=config, metric=metric, epoch=epoch, extra={
            "epoch": epoch, "batch_index": batch_index, "loss_sum": loss_sum,
            "loss_count": loss_count, "best_epoch": best_epoch,
            "plateau": plateau.state_dict(), "stopper": stopper.state_dict()})

    stop = False
    while epoch < args.epochs and not stop:
        bar = progress(range(batch_index, iters_per_epoch), desc=f"epoch {epoch}", unit="it",
                       leave=False)
        for batch_index in bar:
            mix, tgt = loader.get_batch(epoch, batch_index)
            mixture.d = mix
            target.d = tgt.reshape(tgt.shape[0], -1, tgt.shape[-1])
            solver.zero_grad()
            loss.forward(clear_no_need_grad=True)
            loss.backward(clear_buffer=True)
            dist.all_reduce_grads(nn.get_parameters())
            solver.weight_decay(args.weight_decay)
            solver.update()
            step += 1
            loss_sum, loss_count = loss_sum + float(loss.d), loss_count + 1
            if dist.is_main:
                log.add("training loss per iteration", step, float(loss.d))
            bar.set_postfix(loss=f"{float(loss.d):.4f}")
            if args.checkpoint_interval and step % args.checkpoint_interval == 0:
                batch_index += 1  # the saved position names the next batch to run
                save()
        train_loss = loss_sum / max(loss_count, 1)
        valid_loss = dist.all_reduce_value(_validate(valid_graph, valid_set, valid_samples))
        new_lr = plateau.step(valid_loss)
        solver.set_learning_rate(new_lr)
        improved, stop = stopper.step(valid_loss)
        if improved or best_epoch < 0:
            best_epoch = epoch
            if dist.is_main:
                export_weights(model, args, out)
        if dist.is_main:
            log.add("training loss", epoch, train_loss)
            log.add("validation loss", epoch, valid_loss)
            log.add("learning rate", epoch, new_lr)
            log.time("epoch time", epoch)
            print(f"epoch {epoch}: train {train_loss:.5f}  valid {valid_loss:.5f}  "
                  f"lr {new_lr:.2e}  best epoch {best_epoch}")
        epoch, batch_index, loss_sum, loss_count = epoch + 1, 0, 0.0, 0
        save(metric=valid_loss)
    if stop:
        print(f"early stopping after epoch {epoch - 1} (best epoch {best_epoch})")
    return out


def export_weights(model, args, out):
    """Write the current parameters in the official file format and name."""
    name = "xumx.h5" if args.model_type == "xumx" else f"{args.target}.h5"
    model.save_parameters(str(Path(out) / name))


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.seq_dur <= 0 or args.batch_size < 1 or args.epochs < 1:
        raise UserError("--seq-dur, --batch-size and --epochs must be positive")
    start = time.time()
    out = train(args)
    print(f"done in {time.time() - start:.1f} s; outputs in {out}")
    return 0
