"""The life of a training run folder, the same for every ``train.py``, ``cleanse.py`` and
``sweep.py``.

A run folder (``--output``) holds ``config.yaml`` (every option that shaped the run) and
``checkpoints/``. :class:`TrainingRun` enforces, in this order:

1. :meth:`TrainingRun.open` (before any data is read or anything is written): the folder
   can be written; a folder that already holds a run is refused unless ``--resume`` is
   given (a finished, killed or interrupted run is never silently replaced), and a
   non-empty folder that holds no run is refused; with ``--resume`` every option that
   changes results must equal the saved one (the others are listed in ``free``);
2. :meth:`TrainingRun.begin` (after the inputs were validated): the folder, its
   ``config.yaml`` and the checkpoint manager are created, on the main process only;
3. inside :meth:`TrainingRun.guard`, :meth:`TrainingRun.step_done` after every optimiser
   step: a non-finite loss stops with one line naming the iteration (the last good
   checkpoint stays the newest), and Ctrl-C (deferred by :mod:`common.terminal`) writes a
   checkpoint of the finished step and stops with ``interrupted at iteration N; continue
   with --resume`` and exit status 130.
"""
import contextlib
import math
from pathlib import Path

from common.config import check_resume_options, load_config, save_config
from common.errors import Interrupted, UserError
from common.fileio import check_output_location
from common.terminal import interrupt_message, interrupt_requested

CONFIG_NAME = "config.yaml"
CHECKPOINT_DIR = "checkpoints"
# Options that never change what a run computes: where it runs, how it reports and how
# often it saves. A paper adds its own with ``free=``.
ALWAYS_FREE = frozenset({"output", "resume", "config", "verbose", "context", "device_id",
                         "type_config", "ooc_budget", "ooc_window", "loader_threads",
                         "checkpoint_interval", "keep_last", "stop_at_iter", "stop_at_epoch",
                         "log_interval", "jobs"})


def add_checkpoint_args(group, *, interval, keep_last=3, zero_means="only when the run ends"):
    """``--checkpoint-interval N`` (also checkpoint every N iterations; 0 = ``zero_means``)
    and ``--keep-last K`` (how many of the newest checkpoints are kept)."""
    from common.cli import NonNegativeInt, PositiveInt

    group.add_argument("--checkpoint-interval", type=NonNegativeInt, default=interval,
                       help=f"also checkpoint every N iterations (0 = {zero_means}; "
                            "default: %(default)s)")
    group.add_argument("--keep-last", type=PositiveInt, default=keep_last,
                       help="newest checkpoints kept, besides the best one (default: "
                            "%(default)s)")
    return group


def holds_run(folder):
    """True when ``folder`` holds a training run (its config or checkpoints)."""
    folder = Path(folder)
    return (folder / CONFIG_NAME).is_file() or (folder / CHECKPOINT_DIR).is_dir()


class TrainingRun:
    """One run folder through its life (see the module docstring).

    ``options``: the resolved options (Namespace or dict) saved as ``config.yaml``;
    ``free``: option names that may differ on ``--resume`` besides :data:`ALWAYS_FREE`;
    ``how_to_continue``: the end of the Ctrl-C message (a sweep continues when run again);
    ``dist``: the :class:`common.train.distributed.Distributed` handle of a data-parallel
    run: only its main process writes, and every process waits at :meth:`begin` until the
    folder is ready (``is_main`` alone, without waiting, when there is no handle).
    """

    def __init__(self, output, options, *, resume=False, free=(), is_main=True, dist=None,
                 keep_last=3, hint="use the run's config.yaml or a new --output",
                 how_to_continue="continue with --resume"):
        self.out = Path(output)
        self.options = vars(options) if hasattr(options, "__dict__") else dict(options)
        self.resume = bool(resume)
        self.free = ALWAYS_FREE | set(free)
        self.dist = dist
        self._is_main = is_main
        self.keep_last = keep_last
        self.hint = hint
        self.how_to_continue = how_to_continue
        self.resuming = False   # True once open() found a run to continue
        self.checkpoints = None  # CheckpointManager after begin() (main process)
        self.step = 0
        self._last_saved = None

    @property
    def is_main(self):
        """True on the process that writes (the only one without a process group)."""
        return self.dist.is_main if self.dist is not None else self._is_main

    def join(self, dist):
        """Attach the process group once it exists (:meth:`open` may come first, so that a
        bad folder is refused before the group starts)."""
        self.dist = dist
        return self

    # ----------------------------------------------------------------- before anything
    def open(self):
        """Check the folder and, on ``--resume``, the options; write nothing."""
        check_output_location(self.out, "--output")
        if self.out.is_dir() and any(self.out.iterdir()):
            if not holds_run(self.out):
                raise UserError(f"--output {self.out} is a folder that is not empty and holds "
                                "no run; choose a new or empty folder")
            if not self.resume:
                raise UserError(f"--output {self.out} already holds a run: continue it with "
                                "--resume, or choose a new --output")
            self.resuming = True
            saved = self.saved_options()
            if saved is not None:
                check_resume_options(saved, self.options, self.free, self.hint)
        elif self.resume:
            print(f"--resume: {self.out} holds no run yet; starting a new one")
        return self

    def saved_options(self):
        """The options in the run's ``config.yaml`` (None if it has none)."""
        path = self.out / CONFIG_NAME
        return load_config(path) if path.is_file() else None

    # ----------------------------------------------------------------- first writes
    def begin(self):
        """Create the folder, write ``config.yaml`` and make the checkpoint manager (the
        main process writes; the others only read it). Call once the inputs have been
        validated, on every process. Returns the manager."""
        from common.train.checkpoint import CheckpointManager

        self._barrier()  # every process has finished open() before the folder changes
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(self.options, self.out, CONFIG_NAME)
            self.checkpoints = CheckpointManager(self.out / CHECKPOINT_DIR,
                                                 keep_last=self.keep_last)
        self._barrier()  # ... and the main one has tidied the checkpoints before all read them
        if not self.is_main:
            self.checkpoints = CheckpointManager(self.out / CHECKPOINT_DIR,
                                                 keep_last=self.keep_last, clean=False)
        self._last_saved = (self.checkpoints.checkpoints() or [(None, None)])[-1][0]
        return self.checkpoints

    def _barrier(self):
        if self.dist is not None:
            self.dist.barrier()

    def has_checkpoint(self):
        """Whether this run continues from a checkpoint (known right after :meth:`open`,
        e.g. to skip loading initial weights)."""
        from common.train.checkpoint import CheckpointManager

        return self.resuming and bool(
            CheckpointManager(self.out / CHECKPOINT_DIR, clean=False).checkpoints())

    def latest(self):
        """The newest valid checkpoint when resuming (on every process), else None."""
        if not self.resuming or self.checkpoints is None:
            return None
        return self.checkpoints.load_latest()

    def restore(self, solvers):
        """Continue from the newest checkpoint when resuming: parameters, solver states and
        RNG states restored on every process (call it after the graph and solvers exist).
        Returns ``(step, extra)``: ``(0, {})`` for a fresh start."""
        latest = self.latest()
        if latest is None:
            if self.resuming and self.is_main:
                print(f"no checkpoint in {self.out / CHECKPOINT_DIR} yet; starting from the "
                      "beginning")
            return 0, {}
        step, _, extra = self.checkpoints.restore(latest, solvers)
        self.step = step
        if self.is_main:
            print(f"resumed at iteration {step}")
        return step, extra

    def save(self, step, solvers, **kwargs):
        """``CheckpointManager.save`` on the main process; records the step."""
        if self.is_main and self.checkpoints is not None:
            self.checkpoints.save(step, solvers, **kwargs)
        self._last_saved = step

    # ----------------------------------------------------------------- while training
    @contextlib.contextmanager
    def guard(self):
        """Interruptions found by progress bars (e.g. during validation) name the run's
        iteration and last checkpoint."""
        with interrupt_message(self._interrupted_text):
            yield self

    def _interrupted_text(self):
        if self._last_saved is None:
            return (f"interrupted at iteration {self.step}, before the first checkpoint; "
                    f"{self.how_to_continue} (it starts from the beginning)")
        return (f"interrupted at iteration {self.step}; {self.how_to_continue} "
                f"(from the checkpoint of iteration {self._last_saved})")

    def _interrupt_everywhere(self):
        """Ctrl-C reaches each process of an ``mpirun`` on its own; every process stops at
        the same step when any of them saw it (else the others would wait in the next
        all-reduce forever)."""
        requested = interrupt_requested()
        if self.dist is not None and self.dist.enabled:
            requested = self.dist.all_reduce_value(float(requested), average=False) > 0
        return requested

    def step_done(self, step, loss, save=None):
        """After optimiser step ``step`` (1-based count of steps done) with loss ``loss``:
        stop on a non-finite loss; on Ctrl-C call ``save()`` (a checkpoint at ``step``)
        and stop."""
        self.step = step
        if loss is not None and not math.isfinite(float(loss)):
            last = ("no checkpoint was written yet" if self._last_saved is None
                    else f"the last checkpoint (iteration {self._last_saved}) is intact")
            raise UserError(f"training diverged at iteration {step}: the loss is "
                            f"{float(loss)}; {last}; try a lower learning rate")
        if self._interrupt_everywhere():
            if save is not None:
                save()
            raise Interrupted(self._interrupted_text())
