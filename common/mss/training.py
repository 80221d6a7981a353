"""Training skeleton shared by the music-source-separation papers (X-UMX / UMX, D3Net).

Both recipes train a network on random MUSDB18 excerpts (sources from random tracks, gain and
channel-swap augmentation per source, :class:`common.data.musdb.MUSDBExcerpts`), validate on
the 14 official validation tracks every epoch and keep the weights of the best validation
epoch. What differs is the network, its loss graph and the learning-rate policy; the rest is
here:

* :func:`add_data_args` / :func:`add_loop_args`: the MUSDB18 sampling and optimisation flags
  (each paper passes its own defaults; every number is range-checked);
* :func:`start_run`: compute context, data-parallel group, the run folder's lifecycle
  (:class:`common.train.run.TrainingRun`: an occupied ``--output`` is refused unless
  ``--resume``; ``--resume`` with an option that changes results is refused, listing the
  differences; nothing is written yet), seeds and out-of-core execution;
* :func:`musdb_training_data`: training excerpts, validation tracks and the resumable
  :class:`common.data.loader.BatchLoader`; every track file is checked first (one line naming
  an unreadable or incomplete one). On the bundled one-track root the validation split
  falls back to its training track (with a logged warning, see
  :func:`common.data.musdb.open_musdb`). The paper then calls ``run.begin()``, which writes
  ``config.yaml``;
* :func:`load_or_compute_stats`: per-bin mean / std of the mono mixture magnitude over the
  training tracks (the network's input normalisation, as both official scripts), cached in
  the run folder under a key of everything they depend on (the training track files, their
  sizes and times, the STFT and the number of bins) and written atomically;
* :func:`validation_loss`: mean loss over the validation tracks, each cut into pieces of the
  validation graph's length;
* :class:`PlateauSchedule` (X-UMX: reduce on plateau + early stopping) and
  :class:`StepSchedule` (D3Net: step decay at fixed epochs) with resumable state;
* :func:`train_epochs`: the loop. A checkpoint (parameters, Adam state, schedule, RNG states,
  loader position, running loss sums) is written every ``--checkpoint-interval`` iterations
  and at every epoch end, so ``--resume`` continues after a kill, even mid-epoch, with the same
  data order and bit-identical results. Ctrl-C writes a checkpoint of the finished iteration
  and stops with one line (exit status 130); a non-finite loss stops with one line naming the
  iteration, the last good checkpoint staying the newest. The best weights are exported at
  each improvement. Only the main process of a data-parallel group writes anything.

A loss graph is a tuple ``(mixture, target, loss)`` of nnabla variables: ``mixture``
``(batch, channels, samples)``, ``target`` ``(batch, n_targets * channels, samples)``, and the
scalar ``loss``.
"""
import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.cli import Bounded, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from common.context import context_from_args
from common.data.loader import BatchLoader
from common.data.musdb import MUSDBExcerpts, open_musdb, read_excerpt, source_augmentations
from common.errors import UserError
from common.fileio import atomic_write, write_npz
from common.mss.spectral import stft_numpy
from common.terminal import progress
from common.train.distributed import init_distributed
from common.train.monitor import TrainingLog
from common.train.out_of_core import add_ooc_args, out_of_core_from_args
from common.train.run import TrainingRun, add_checkpoint_args
from common.train.schedules import EarlyStopping, ReduceLROnPlateau, step_lr
from common.train.seeding import seed_everything

__all__ = ["add_data_args", "add_loop_args", "SMOKE_UNLESS", "start_run", "TrainingData",
           "musdb_training_data", "compute_input_statistics", "load_or_compute_stats",
           "validation_loss", "PlateauSchedule", "StepSchedule", "train_epochs"]

# A train.py runs its CPU smoke configuration unless one of these (or --config) is given
# (common.cli.Parser's smoke_unless): a dataset root means the paper's recipe.
SMOKE_UNLESS = ("root",)
# Options a resumed run may change: training longer continues the same trajectory (no
# schedule depends on the total number of epochs).
FREE_ON_RESUME = frozenset({"epochs"})
SEED = Bounded(int, 0, 2 ** 32 - 1)  # numpy's seed range
STATS_NAME = "input_stats.npz"
STATS_VERSION = 1  # bump when compute_input_statistics changes its numbers


# --------------------------------------------------------------------------- flags

def add_data_args(group, *, seq_dur, gain_range, seq_dur_help="excerpt length (s)"):
    """MUSDB18 sampling flags: ``--root --is-wav --seq-dur --samples-per-track
    --source-augmentations --gain-range --[no-]random-track-mix --loader-threads``."""
    group.add_argument("--root", default=None,
                       help="MUSDB18 root; given without --config, the paper's recipe is "
                            "trained (default: the bundled one-track sample, smoke run)")
    group.add_argument("--is-wav", action="store_true", help="decoded WAV layout of MUSDB18")
    group.add_argument("--seq-dur", type=PositiveFloat, default=seq_dur, help=seq_dur_help)
    group.add_argument("--samples-per-track", type=PositiveInt, default=64,
                       help="random excerpts per training track per epoch")
    group.add_argument("--source-augmentations", nargs="*", default=["gain", "channelswap"],
                       choices=["gain", "channelswap"])
    group.add_argument("--gain-range", type=NonNegativeFloat, nargs=2,
                       default=list(gain_range), metavar=("LOW", "HIGH"),
                       help="random gain per source, drawn uniformly from this range")
    group.add_argument("--random-track-mix", action="store_true", default=True,
                       help="draw every source from an independent random track (default)")
    group.add_argument("--no-random-track-mix", dest="random_track_mix", action="store_false")
    group.add_argument("--loader-threads", type=NonNegativeInt, default=4,
                       help="threads decoding excerpts ahead (0 = in the training loop)")
    return group


def add_loop_args(group, *, epochs, batch_size, lr, weight_decay, lr_help=None):
    """Optimisation and checkpointing flags: ``--epochs --batch-size --lr --weight-decay --seed
    --max-iter-per-epoch --checkpoint-interval --keep-last --ooc-budget``."""
    group.add_argument("--epochs", type=PositiveInt, default=epochs,
                       help="epochs to train (may grow on --resume)")
    group.add_argument("--batch-size", type=PositiveInt, default=batch_size)
    group.add_argument("--lr", type=PositiveFloat, default=lr, help=lr_help)
    group.add_argument("--weight-decay", type=NonNegativeFloat, default=weight_decay)
    group.add_argument("--seed", type=SEED, default=42)
    group.add_argument("--max-iter-per-epoch", type=NonNegativeInt, default=0,
                       help="cap on iterations per epoch (0 = the whole epoch); for smoke runs")
    add_checkpoint_args(group, interval=200, zero_means="at epoch ends only")
    add_ooc_args(group)
    return group


# --------------------------------------------------------------------------- setup

def start_run(args, run_dir):
    """Select the compute context, join the data-parallel group and open the run folder
    ``run_dir`` (:meth:`common.train.run.TrainingRun.open`: refusals happen here, before any
    data is read or anything is written); then seed every RNG and set up out-of-core
    execution (before any graph exists). ``args.root`` becomes an absolute path, so that the
    saved options name the data whatever the working folder; on ``--resume`` every option
    but :data:`FREE_ON_RESUME` (and the run-independent ones of
    :data:`common.train.run.ALWAYS_FREE`) must be the saved one.

    Returns ``(run, dist, ooc)``: the :class:`common.train.run.TrainingRun` (call
    ``run.begin()`` once the data was checked), the
    :class:`common.train.distributed.Distributed` handle and the
    :class:`common.train.out_of_core.OutOfCore` for :func:`train_epochs`."""
    import nnabla as nn

    low, high = args.gain_range
    if low > high:
        raise UserError(f"--gain-range {low:g} {high:g}: the low end is above the high end")
    if args.root is not None:
        args.root = str(Path(args.root).expanduser().resolve())
    ctx = context_from_args(args)
    dist = init_distributed(ctx)
    nn.set_default_context(dist.ctx)
    run = TrainingRun(run_dir, args, resume=args.resume, free=FREE_ON_RESUME, dist=dist,
                      keep_last=args.keep_last).open()
    seed_everything(args.seed)
    return run, dist, out_of_core_from_args(args, dist.ctx)


@dataclass
class TrainingData:
    train_db: object      # musdb.DB of the training split
    train_set: object     # MUSDBExcerpts of random excerpts
    valid_set: object     # MUSDBExcerpts of whole validation tracks
    loader: BatchLoader
    iters_per_epoch: int


def musdb_training_data(args, targets, seq_dur, dist):
    """Training excerpts of ``seq_dur`` seconds with the ``targets`` stacked, whole validation
    tracks, and the loader (``args``: the flags of :func:`add_data_args` and
    :func:`add_loop_args`)."""
    train_db = open_musdb(args.root, subset="train", split="train", is_wav=args.is_wav)
    valid_db = open_musdb(args.root, subset="train", split="valid", is_wav=args.is_wav)
    augment = source_augmentations(args.source_augmentations, tuple(args.gain_range))
    train_set = MUSDBExcerpts(train_db, targets=targets, seq_dur=seq_dur,
                              samples_per_track=args.samples_per_track, source_augment=augment,
                              random_track_mix=args.random_track_mix)
    valid_set = MUSDBExcerpts(valid_db, targets=targets, seq_dur=None)
    loader = BatchLoader(train_set, args.batch_size, shuffle=True, seed=args.seed,
                         rank=dist.rank, world_size=dist.size, num_threads=args.loader_threads)
    iters_per_epoch = len(loader)
    if args.max_iter_per_epoch > 0:
        iters_per_epoch = min(iters_per_epoch, args.max_iter_per_epoch)
    return TrainingData(train_db, train_set, valid_set, loader, iters_per_epoch)


def compute_input_statistics(tracks, n_fft, n_hop, nb_bins):
    """Mean and std per frequency bin of the mono (channel-averaged) magnitude spectrogram
    over every frame of every training track, as the official scripts (which use sklearn's
    StandardScaler on nnabla's centred, reflect-padded STFT); the std is floored at 1e-4 of
    its maximum. Only the lowest ``nb_bins`` bins are kept."""
    count, total, total_sq = 0, np.zeros(nb_bins), np.zeros(nb_bins)
    for track in progress(tracks, desc="input statistics", unit="track"):
        audio = read_excerpt(track, "mixture")  # (channels, samples)
        mag = np.abs(stft_numpy(audio, n_fft, n_hop, center=True)).mean(axis=2)
        mag = mag[:, :nb_bins]
        count += mag.shape[0]
        total += mag.sum(axis=0)
        total_sq += (mag ** 2).sum(axis=0)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
    return mean, np.maximum(std, 1e-4 * std.max())


def _stats_key(tracks, n_fft, n_hop, nb_bins):
    """What the input statistics depend on: every training mixture file (resolved path, size,
    modification time: another root, layout or track list gives another key), the STFT and
    the number of bins."""
    files = []
    for track in tracks:
        path = Path(track.path).resolve()
        st = path.stat()
        files.append([str(path), st.st_size, st.st_mtime_ns])
    return json.dumps({"version": STATS_VERSION, "mixtures": files, "n_fft": int(n_fft),
                       "n_hop": int(n_hop), "nb_bins": int(nb_bins)}, sort_keys=True)


def load_or_compute_stats(run, tracks, n_fft, n_hop, nb_bins):
    """:func:`compute_input_statistics` of ``tracks``, cached as ``input_stats.npz`` in the run
    folder of ``run`` (a :class:`common.train.run.TrainingRun`): reused only when its key (see
    :func:`_stats_key`) is the current one; written atomically by the main process."""
    path = run.out / STATS_NAME
    key = _stats_key(tracks, n_fft, n_hop, nb_bins)
    if path.is_file():
        try:
            with np.load(path) as stats:  # plain arrays only: never unpickles
                if "key" in stats.files and str(stats["key"]) == key:
                    return stats["mean"], stats["std"]
        except (OSError, ValueError):  # unreadable: computed again and replaced
            pass
    mean, std = compute_input_statistics(tracks, n_fft, n_hop, nb_bins)
    if run.is_main:
        with atomic_write(path, "wb") as f:
            write_npz(f, {"mean": mean, "std": std, "key": np.array(key)})
    return mean, std


def validation_loss(graph, valid_set, samples):
    """Mean validation loss over tracks; each track is the mean over its full pieces of
    ``samples`` samples (``graph`` is a batch-1 test-mode loss graph of that length)."""
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


# --------------------------------------------------------------------------- schedules

class PlateauSchedule:
    """Learning rate times ``factor`` after ``patience`` epochs without validation improvement;
    stop after ``stop_patience`` such epochs (0 = never) or at a NaN validation loss."""

    def __init__(self, lr, factor, patience, stop_patience):
        self.plateau = ReduceLROnPlateau(lr, factor=factor, patience=patience)
        self.stopper = EarlyStopping(patience=stop_patience)

    @property
    def lr(self):
        return self.plateau.lr

    def epoch_end(self, epoch, valid_loss):
        """``(lr for the next epoch, improved, stop)``."""
        lr = self.plateau.step(valid_loss)
        improved, stop = self.stopper.step(valid_loss)
        return lr, improved, stop

    def state_dict(self):
        return {"plateau": self.plateau.state_dict(), "stopper": self.stopper.state_dict()}

    def load_state_dict(self, state):
        self.plateau.load_state_dict(state["plateau"])
        self.stopper.load_state_dict(state["stopper"])


class StepSchedule:
    """Learning rate ``base_lr * gamma ** (number of milestones <= epoch)`` for epoch ``epoch``
    (counted from 0); training runs all epochs (a NaN validation loss stops it) and the best
    epoch is the one with the lowest validation loss."""

    def __init__(self, base_lr, milestones, gamma=0.1):
        self.base_lr = float(base_lr)
        self.milestones = [int(m) for m in milestones]
        self.gamma = float(gamma)
        self.lr = step_lr(self.base_lr, 0, self.milestones, self.gamma)
        self.stopper = EarlyStopping(patience=0)

    def epoch_end(self, epoch, valid_loss):
        self.lr = step_lr(self.base_lr, epoch + 1, self.milestones, self.gamma)
        improved, stop = self.stopper.step(valid_loss)
        return self.lr, improved, stop

    def state_dict(self):
        return {"step_lr": self.lr, "stopper": self.stopper.state_dict()}

    def load_state_dict(self, state):
        self.lr = float(state["step_lr"])
        self.stopper.load_state_dict(state["stopper"])


# --------------------------------------------------------------------------- loop

def train_epochs(args, run, *, dist, ooc, solver, graph, validate, loader, iters_per_epoch,
                 schedule, export, weight_decay):
    """Train ``args.epochs`` epochs (continuing the newest checkpoint when ``run`` resumes)
    and return the run folder.

    ``run``: the begun :class:`common.train.run.TrainingRun`; ``graph``: the training loss
    graph; ``validate()``: the validation loss (this process's share; averaged over processes
    here); ``schedule``: :class:`PlateauSchedule` or :class:`StepSchedule`; ``export()``:
    writes the current weights (called on the main process at every validation improvement).
    ``solver`` holds the parameters already; its learning rate is the schedule's. ``ooc``
    (from :func:`start_run`) wraps every iteration. Writes ``checkpoints/`` and the curves
    ``training loss``, ``validation loss``, ``learning rate`` (per epoch; the rate set for the
    next epoch), ``training loss per iteration`` and the ``epoch time`` timer into the run
    folder (main process).
    """
    import nnabla as nn

    epoch, batch_index, loss_sum, loss_count, best_epoch = 0, 0, 0.0, 0, -1
    step, extra = run.restore({"adam": solver})
    if step:
        epoch, batch_index = int(extra["epoch"]), int(extra["batch_index"])
        loss_sum, loss_count = float(extra["loss_sum"]), int(extra["loss_count"])
        best_epoch = int(extra["best_epoch"])
        schedule.load_state_dict(extra)
        solver.set_learning_rate(schedule.lr)
    log = (TrainingLog(run.out, resume_step=step if run.resuming else None)
           if dist.is_main else None)
    mixture, target, loss = graph
    config = vars(args)

    def save(next_batch, metric=None):
        run.save(step, {"adam": solver}, config=config, metric=metric, epoch=epoch, extra={
            "epoch": epoch, "batch_index": next_batch, "loss_sum": loss_sum,
            "loss_count": loss_count, "best_epoch": best_epoch, **schedule.state_dict()})

    stop = False
    with run.guard():
        while epoch < args.epochs and not stop:
            bar = progress(range(batch_index, iters_per_epoch), desc=f"epoch {epoch}",
                           unit="it", leave=False)
            for batch_index in bar:
                with ooc.step() as hooks:
                    mix, tgt = loader.get_batch(epoch, batch_index)
                    mixture.d = mix
                    target.d = tgt.reshape(tgt.shape[0], -1, tgt.shape[-1])
                    solver.zero_grad()
                    loss.forward(clear_no_need_grad=True, **hooks)
                    loss.backward(clear_buffer=True, **hooks)
                    dist.all_reduce_grads(nn.get_parameters())
                    solver.weight_decay(weight_decay)
                    solver.update()
                step += 1
                value = float(loss.d)
                saved = False
                if math.isfinite(value):
                    loss_sum, loss_count = loss_sum + value, loss_count + 1
                    if log is not None:
                        log.add("training loss per iteration", step, value)
                    bar.set_postfix(loss=f"{value:.4f}")
                    if args.checkpoint_interval and step % args.checkpoint_interval == 0:
                        save(batch_index + 1)  # the saved position names the next batch
                        saved = True
                # A non-finite loss stops here (nothing saved); Ctrl-C saves this iteration.
                run.step_done(step, value,
                              save=None if saved else functools.partial(save, batch_index + 1))
            train_loss = loss_sum / max(loss_count, 1)
            valid_loss = dist.all_reduce_value(validate())
            new_lr, improved, stop = schedule.epoch_end(epoch, valid_loss)
            solver.set_learning_rate(new_lr)
            if improved or best_epoch < 0:
                best_epoch = epoch
                if dist.is_main:
                    export()
            if log is not None:
                log.add("training loss", epoch, train_loss)
                log.add("validation loss", epoch, valid_loss)
                log.add("learning rate", epoch, new_lr)
                log.time("epoch time", epoch)
                print(f"epoch {epoch}: train {train_loss:.5f}  valid {valid_loss:.5f}  "
                      f"lr {new_lr:.2e}  best epoch {best_epoch}")
            epoch, batch_index, loss_sum, loss_count = epoch + 1, 0, 0.0, 0
            save(0, metric=valid_loss)
            run.step_done(step, None)  # Ctrl-C during validation: the epoch is saved now
    if stop:
        print(f"early stopping after epoch {epoch - 1} (best epoch {best_epoch})")
    return run.out
