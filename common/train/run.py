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
ALWAYS_FREE = frozenset({"output", "resume", "config", "context", "device_id", "type_config",
                         "ooc_budget", "loader_threads", "checkpoint_interval", "keep_last",
                         "stop_at_iter", "stop_at_epoch", "log_interval", "jobs"})


def holds_run(folder):
    """True when ``folder`` holds a training run (its config or checkpoints)."""
    folder = Path(folder)
    return (folder / CONFIG_NAME).is_file() or (folder / CHECKPOINT_DIR).is_dir()


class TrainingRun:
    """One run folder through its life (see the module docstring).

    ``options``: the resolved options (Namespace or dict) saved as ``config.yaml``;
    ``free``: option names that may differ on ``--resume`` besides :data:`ALWAYS_FREE`;
    ``is_main``: False on the data-parallel processes that must not write.
    """

    def __init__(self, output, options, *, resume=False, free=(), is_main=True, keep_last=3,
                 hint="use the run's config.yaml or a new --output"):
        self.out = Path(output)
        self.options = vars(options) if hasattr(options, "__dict__") else dict(options)
        self.resume = bool(resume)
        self.free = ALWAYS_FREE | set(free)
        self.is_main = is_main
        self.keep_last = keep_last
        self.hint = hint
        self.resuming = False   # True once open() found a run to continue
        self.checkpoints = None  # CheckpointManager after begin() (main process)
        self.step = 0
        self._last_saved = None

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
        """Create the folder, write ``config.yaml`` and make the checkpoint manager (main
        process). Call once the inputs have been validated. Returns the manager (None on
        other processes)."""
        from common.train.checkpoint import CheckpointManager

        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(self.options, self.out, CONFIG_NAME)
            self.checkpoints = CheckpointManager(self.out / CHECKPOINT_DIR,
                                                 keep_last=self.keep_last)
            self._last_saved = (self.checkpoints.checkpoints() or [(None, None)])[-1][0]
        return self.checkpoints

    def latest(self):
        """The newest valid checkpoint when resuming, else None."""
        if not self.resuming or self.checkpoints is None:
            return None
        return self.checkpoints.load_latest()

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
                    "continue with --resume (it starts from the beginning)")
        return (f"interrupted at iteration {self.step}; continue with --resume "
                f"(from the checkpoint of iteration {self._last_saved})")

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
        if interrupt_requested():
            if save is not None:
                save()
            raise Interrupted(self._interrupted_text())
