"""Training with a trace: what the influence pass and the replay need.

Plain minibatch SGD (the reference: learning rate 0.05, batch 64, no momentum, no
weight decay). For every step of the traced epochs (the last ``trace_epochs``) the
run records the minibatch indices, the learning rate and each sample's
augmentation seed (``trace.npz``). Parameters are cached:

* ``params/final.h5``: the parameters after training — all the storage-efficient
  method needs;
* ``params/steps/step_<k>.h5``: the parameters *before* every traced step — what
  SGD-influence (Hara et al.) needs, only written with ``cache="all"``;
* ``params/initial.h5`` and ``params/traced_start.h5``: the starting points of full
  retraining and of the replay of the traced epochs.

The order of epoch ``e`` is a seeded permutation of the training set and sample seeds
are ``e * n_train + position``, so the whole trace is a function of the seed;
checkpoints (every epoch end, and the step in progress on Ctrl-C) make ``--resume`` continue
bit-exactly.
"""
import itertools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from common.errors import UserError
from common.fileio import atomic_write, write_npz
from datacleansing import data as D
from datacleansing.models import build, per_sample_loss

# What to do when a folder holds a run of other options (the tools' runs have no --output).
OTHER_RUN_HINT = "train with the options in its config.yaml, or into another folder"


@dataclass
class TrainConfig:
    model: str = "cnn"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.05
    trace_epochs: int = 1
    cache: str = "final"          # "final" or "all" (also per-step parameters)
    seed: int = 0
    shift: int = 0                # augmentation: random shift in pixels (0 = off)
    flip: bool = False            # augmentation: horizontal flip


@dataclass
class Step:
    epoch: int
    index: int                    # step number within the traced span
    lr: float
    batch: np.ndarray             # training-set indices
    seeds: np.ndarray             # augmentation seed per sample


def bar(iterable, quiet=False, **kwargs):
    """A progress bar (``common.train.monitor.progress``), off when ``quiet``."""
    from common.terminal import progress
    return progress(iterable, **({"disable": True} if quiet else {}), **kwargs)


def epoch_order(n, seed, epoch):
    return np.random.default_rng([seed, epoch]).permutation(n)


def epoch_steps(cfg, n, epoch, removed=None):
    """The minibatches of ``epoch``: (indices, seeds) pairs; ``removed`` samples are
    dropped from their batch (the batch keeps its place in the order)."""
    order = epoch_order(n, cfg.seed, epoch)
    seeds = epoch * n + np.arange(n)
    out = []
    for start in range(0, n, cfg.batch_size):
        idx, sd = order[start:start + cfg.batch_size], seeds[start:start + cfg.batch_size]
        if removed is not None:
            keep = ~np.isin(idx, removed)
            out.append((idx, sd, keep))
        else:
            out.append((idx, sd, np.ones(len(idx), bool)))
    return out


def params_snapshot():
    import nnabla as nn
    return {k: v.d.copy() for k, v in nn.get_parameters(grad_only=False).items()}


def load_snapshot(params):
    import nnabla as nn
    current = nn.get_parameters(grad_only=False)
    for k, v in params.items():
        current[k].d = v


def save_params(path, params):
    from common.runtime.params_io import write_param_file
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_param_file(path, params)


def read_params(path):
    from common.runtime.params_io import read_param_file
    return read_param_file(path)[0]


class Trainer:
    """SGD on a Splits object; one graph per batch size (batch-norm statistics must cover
    exactly the samples of the step, so smaller batches cannot be padded). ``ooc``
    (:class:`common.train.out_of_core.OutOfCore`, may be shared by several trainers) wraps every
    step, with one schedule per graph of this trainer."""

    _count = itertools.count()

    def __init__(self, cfg, splits, labels=None, ooc=None):
        import nnabla as nn
        import nnabla.solvers as S

        from common.train.out_of_core import OutOfCore
        self.cfg, self.splits = cfg, splits
        self.labels = splits.y_train if labels is None else labels
        self.ooc = ooc or OutOfCore()
        self._id = next(Trainer._count)
        self._graphs = {}
        self._graph(cfg.batch_size)  # the parameters exist before the solver sees them
        self.solver = S.Sgd(cfg.lr)
        self.solver.set_parameters(nn.get_parameters())

    def _graph(self, n):
        """(x, y, w, loss) for a batch of ``n`` samples; ``w`` weighs every sample's loss."""
        if n not in self._graphs:
            import nnabla as nn
            import nnabla.functions as F
            xv = nn.Variable((n,) + self.splits.image_shape)
            yv, wv = nn.Variable((n, 1)), nn.Variable((n,))
            logits = build(self.cfg.model, xv, self.splits.n_classes, bn="batch")
            self._graphs[n] = (xv, yv, wv, F.sum(per_sample_loss(logits, yv) * wv))
        return self._graphs[n]

    def step(self, idx, seeds, keep, lr):
        """One SGD step on the kept samples of a recorded batch. The loss is the sum over
        kept samples divided by the recorded batch size (the reference's replay scaling).
        A batch with no kept sample is skipped. Batch-norm statistics cover the kept
        samples only (padding would change them), so other sizes get their own graph."""
        n = int(keep.sum())
        if n == 0:
            return None
        x = D.augment(self.splits.x_train[idx[keep]], seeds[keep], self.cfg.shift, self.cfg.flip)
        y = self.labels[idx[keep]]
        xv, yv, wv, loss = self._graph(n)
        self.solver.set_learning_rate(lr)
        with self.ooc.step(key=(self._id, n)) as hooks:
            xv.d, yv.d = x, y.reshape(-1, 1)
            wv.d = np.full(n, 1.0 / len(idx), np.float32)
            self.solver.zero_grad()
            loss.forward(clear_no_need_grad=True, **hooks)
            loss.backward(clear_buffer=True, **hooks)
            self.solver.update()
        return float(loss.d)


def evaluate(model, splits, x, y, batch=256):
    """(mean cross-entropy, accuracy) of the test-mode network on arrays x, y."""
    import nnabla as nn
    import nnabla.functions as F
    losses, correct = 0.0, 0
    graphs = {}
    for start in range(0, len(y), batch):
        xb, yb = x[start:start + batch], y[start:start + batch]
        if len(yb) not in graphs:
            xv, yv = nn.Variable(xb.shape), nn.Variable((len(yb), 1))
            logits = build(model, xv, splits.n_classes, bn="test")
            graphs[len(yb)] = (xv, yv, logits, F.sum(per_sample_loss(logits, yv)))
        xv, yv, logits, loss = graphs[len(yb)]
        xv.d, yv.d = xb, yb.reshape(-1, 1)
        loss.forward(clear_buffer=False)
        losses += float(loss.d)
        correct += int(np.sum(np.argmax(logits.d, axis=1) == yb))
    return losses / len(y), correct / len(y)


def write_trace(path, steps):
    sizes = np.array([len(s.batch) for s in steps], np.int64)
    with atomic_write(path, "wb") as f:
        write_npz(f, {"epoch": np.array([s.epoch for s in steps]),
                      "lr": np.array([s.lr for s in steps]), "sizes": sizes,
                      "batch": np.concatenate([s.batch for s in steps]),
                      "seeds": np.concatenate([s.seeds for s in steps])})


def read_trace(path):
    if not Path(path).is_file():
        raise UserError(f"{path} missing: train the run first")
    with np.load(path) as z:
        bounds = np.concatenate([[0], np.cumsum(z["sizes"])])
        return [Step(int(z["epoch"][k]), k, float(z["lr"][k]), z["batch"][bounds[k]:bounds[k + 1]],
                     z["seeds"][bounds[k]:bounds[k + 1]]) for k in range(len(z["sizes"]))]


def cache_sizes(run):
    """Bytes of the parameter caches each influence method reads."""
    run = Path(run)
    final = (run / "params" / "final.h5").stat().st_size
    steps = sorted((run / "params" / "steps").glob("step_*.h5"))
    return {"final_bytes": final, "all_steps_bytes": sum(p.stat().st_size for p in steps),
            "all_steps_files": len(steps)}


def is_finished(out, cfg):
    """True when ``out`` holds the finished run of ``cfg``; a run of other options there is
    refused in one line (nothing is written)."""
    from common.train.run import TrainingRun, holds_run

    out = Path(out)
    if holds_run(out):
        TrainingRun(out, asdict(cfg), resume=True, hint=OTHER_RUN_HINT).open()
    return (out / "summary.json").is_file()


def train(cfg, splits, out, labels=None, run=None, resume=False, quiet=False, stop_after=None,
          ooc=None, announce=True):
    """Train with the trace into ``out``; returns the summary dict (also summary.json), or
    None when ``stop_after`` (an epoch count) ended the run early (continue with resume).
    ``quiet``: no progress bars; ``announce=False``: no "resuming at iteration" line either.

    ``run``: the run's begun :class:`common.train.run.TrainingRun` (its checkpoints, Ctrl-C and
    non-finite-loss handling); without one, a run folder of its own is opened on ``out``
    (``resume`` continues it). A checkpoint is written at every epoch end and, on Ctrl-C,
    after the step in progress; resuming continues from that iteration bit-exactly.
    ``ooc``: an optional :class:`common.train.out_of_core.OutOfCore` around every step."""
    import nnabla as nn

    from common.train.run import TrainingRun, holds_run
    from common.train.seeding import seed_everything

    if cfg.cache not in ("final", "all"):
        raise UserError(f"cache must be 'final' or 'all', not {cfg.cache!r}")
    if not 1 <= cfg.trace_epochs <= cfg.epochs:
        raise UserError(f"trace_epochs must be in 1..{cfg.epochs}")
    out = Path(out)
    if run is None:
        run = TrainingRun(out, asdict(cfg), resume=resume and holds_run(out), keep_last=1,
                          hint=OTHER_RUN_HINT).open()
        run.begin()
    nn.clear_parameters()
    seed_everything(cfg.seed)
    trainer = Trainer(cfg, splits, labels, ooc)
    n = len(splits.y_train)
    steps_per_epoch = (n + cfg.batch_size - 1) // cfg.batch_size
    done = 0                      # optimiser steps finished
    latest = run.latest()
    if latest is not None:
        if latest.epoch is None:  # epoch-numbered checkpoints of earlier versions
            raise UserError(f"{latest.path} was written by an older version of this code; "
                            "train again into a new --output")
        done, _, _ = run.checkpoints.restore(latest, {"sgd": trainer.solver})
        if announce:
            print(f"resuming at iteration {done} of {cfg.epochs * steps_per_epoch}", flush=True)
    else:
        save_params(out / "params" / "initial.h5", params_snapshot())
    first_traced = cfg.epochs - cfg.trace_epochs
    start_epoch, skip = divmod(done, steps_per_epoch)

    def save(epochs_done):
        run.save(done, {"sgd": trainer.solver}, config=asdict(cfg), epoch=epochs_done)

    with run.guard():
        for e in bar(range(start_epoch, cfg.epochs), quiet, desc="training", unit="epoch"):
            if e == first_traced and not (e == start_epoch and skip):
                save_params(out / "params" / "traced_start.h5", params_snapshot())
            for k, (idx, seeds, keep) in enumerate(epoch_steps(cfg, n, e)):
                if e == start_epoch and k < skip:
                    continue
                if e >= first_traced and cfg.cache == "all":
                    step_no = (e - first_traced) * steps_per_epoch + k
                    save_params(out / "params" / "steps" / f"step_{step_no:06d}.h5",
                                params_snapshot())
                loss = trainer.step(idx, seeds, keep, cfg.lr)
                done += 1
                run.step_done(done, loss, save=lambda e=e: save(e))
            save(e + 1)
            if stop_after is not None and e + 1 >= stop_after and e + 1 < cfg.epochs:
                return None
    steps = []
    for e in range(first_traced, cfg.epochs):
        for idx, seeds, _ in epoch_steps(cfg, n, e):
            steps.append(Step(e, len(steps), cfg.lr, idx, seeds))
    write_trace(out / "trace.npz", steps)
    save_params(out / "params" / "final.h5", params_snapshot())
    val_loss, val_acc = evaluate(cfg.model, splits, splits.x_val, splits.y_val)
    test_loss, test_acc = evaluate(cfg.model, splits, splits.x_test, splits.y_test)
    summary = {"val_loss": val_loss, "val_accuracy": val_acc, "test_loss": test_loss,
               "test_accuracy": test_acc, "traced_steps": len(steps), **cache_sizes(out)}
    with atomic_write(out / "summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    return summary
