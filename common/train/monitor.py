"""Training curves on disk via ``nnabla.monitor``, readable back for reports.

nnabla's ``MonitorSeries`` writes ``<name>.series.txt`` with one
``"<step> <value>"`` line per flush (value formatted with ``%g``), and
``MonitorTimeElapsed`` writes ``<name>.timer.txt`` with
``"<step> <lap seconds> <iterations in lap> <total seconds>"``. Both truncate
their file when constructed, which would wipe a run's history on ``--resume``;
:class:`TrainingLog` attaches the file path itself so it always appends, and on
resume first drops lines logged after the checkpoint being resumed (they would
otherwise appear twice).
"""
import os
from pathlib import Path

import numpy as np

SERIES_SUFFIX = ".series.txt"
TIMER_SUFFIX = ".timer.txt"


def _file_stem(name):
    """File name for a series; '/' and spaces would create dirs or break nnabla's naming."""
    return name.replace(" ", "-").replace("/", "-").replace(os.sep, "-")


def _parse_lines(path, columns):
    """Rows of floats from a monitor file, skipping malformed (e.g. half-written) lines."""
    rows = []
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return rows
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != columns:
            continue
        try:
            rows.append([float(p) for p in parts])
        except ValueError:
            continue
    return rows


def _truncate_after(path, step, columns):
    """Rewrite ``path`` keeping only well-formed rows with index <= step;
    return the last kept index (or None)."""
    from common.fileio import atomic_write

    lines, last = [], None
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) != columns:
            continue
        try:
            index = float(parts[0])
            [float(p) for p in parts[1:]]
        except ValueError:
            continue
        if index <= step:
            lines.append(line + "\n")
            last = int(index)
    with atomic_write(path, "w") as f:
        f.writelines(lines)
    return last


class TrainingLog:
    """Named scalar series and timers in ``out_dir``.

    ``resume_step``: when resuming from a checkpoint taken at that step, rows
    with a larger step (logged after it, before the crash) are removed first.
    ``interval`` averages values over that many steps per written row, as
    ``MonitorSeries`` does. ``verbose`` echoes rows through nnabla's logger.
    """

    def __init__(self, out_dir, resume_step=None, interval=1, verbose=False):
        from nnabla.monitor import Monitor

        self.monitor = Monitor(str(out_dir))
        self.out_dir = Path(out_dir)
        self.interval = interval
        self.verbose = verbose
        self._series = {}
        self._timers = {}
        self._last_row = {}  # file name -> step of its last row kept on resume
        if resume_step is not None:
            for suffix, columns in ((SERIES_SUFFIX, 2), (TIMER_SUFFIX, 4)):
                for path in self.out_dir.glob("*" + suffix):
                    self._last_row[path.name] = _truncate_after(path, resume_step, columns)

    def _attach(self, monitor_obj, suffix, name):
        # Built without a Monitor (so nothing is truncated), then pointed at our file.
        file_name = _file_stem(name) + suffix
        monitor_obj.sp = str(self.out_dir / file_name)
        last = self._last_row.get(file_name)
        if last is not None:  # keep the interval cadence of the interrupted run
            monitor_obj.flush_at = last
        return monitor_obj

    def add(self, name, step, value, interval=None):
        """Record ``value`` for series ``name`` at integer ``step``."""
        from nnabla.monitor import MonitorSeries

        series = self._series.get(name)
        if series is None:
            series = MonitorSeries(name, None, interval=interval or self.interval,
                                   verbose=self.verbose)
            self._series[name] = self._attach(series, SERIES_SUFFIX, name)
        series.add(int(step), float(value))

    def time(self, name, step, interval=None):
        """Record elapsed wall time for timer ``name`` at ``step``."""
        from nnabla.monitor import MonitorTimeElapsed

        timer = self._timers.get(name)
        if timer is None:
            timer = MonitorTimeElapsed(name, None, interval=interval or self.interval,
                                       verbose=self.verbose)
            self._timers[name] = self._attach(timer, TIMER_SUFFIX, name)
        timer.add(int(step))

    def read(self, name):
        """(steps, values) of series ``name`` written so far."""
        return read_series(self.out_dir, name)


def read_series(out_dir, name):
    """Read ``<name>.series.txt`` from ``out_dir`` as ``(steps int64, values float64)``.

    Also reads files written by a plain ``nnabla.monitor.MonitorSeries``.
    Missing file -> two empty arrays.
    """
    rows = _parse_lines(Path(out_dir) / (_file_stem(name) + SERIES_SUFFIX), 2)
    data = np.asarray(rows, dtype=np.float64).reshape(-1, 2)
    return data[:, 0].astype(np.int64), data[:, 1]


def read_timer(out_dir, name):
    """Read ``<name>.timer.txt``: dict of int64 ``step`` and float64 ``lap_seconds``,
    ``lap_iters``, ``total_seconds`` arrays."""
    rows = _parse_lines(Path(out_dir) / (_file_stem(name) + TIMER_SUFFIX), 4)
    data = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    return {"step": data[:, 0].astype(np.int64), "lap_seconds": data[:, 1],
            "lap_iters": data[:, 2], "total_seconds": data[:, 3]}


def list_series(out_dir):
    """Names (file stems) of every series in ``out_dir``, sorted."""
    return sorted(p.name[:-len(SERIES_SUFFIX)] for p in Path(out_dir).glob("*" + SERIES_SUFFIX))
