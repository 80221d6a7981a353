"""TrainingLog writes nnabla's monitor format, appends on resume, reads back."""
import io

import numpy as np
from nnabla.monitor import Monitor, MonitorSeries

from common.terminal import NO_PROGRESS_ENV, progress
from common.train.monitor import TrainingLog, list_series, read_series, read_timer


def test_series_written_in_nnabla_format_and_read_back(tmp_path):
    log = TrainingLog(tmp_path)
    for step in range(1, 4):
        log.add("train/loss", step, 1.0 / step)
    log.add("val loss", 3, 0.25)
    text = (tmp_path / "train-loss.series.txt").read_text()
    assert text.splitlines() == ["1 1", "2 0.5", "3 0.333333"]
    steps, values = read_series(tmp_path, "train/loss")
    assert steps.tolist() == [1, 2, 3] and steps.dtype == np.int64
    assert np.allclose(values, [1, 0.5, 1 / 3], rtol=1e-5)
    assert log.read("val loss")[1].tolist() == [0.25]
    assert list_series(tmp_path) == ["train-loss", "val-loss"]


def test_reader_parses_plain_nnabla_monitor_files(tmp_path):
    series = MonitorSeries("acc", Monitor(str(tmp_path)), interval=2, verbose=False)
    for i in range(6):
        series.add(i, float(i))
    steps, values = read_series(tmp_path, "acc")
    assert steps.tolist() == [1, 3, 5]
    assert values.tolist() == [0.5, 2.5, 4.5]  # averaged over each interval


def test_resume_appends_and_drops_rows_after_the_checkpoint(tmp_path):
    log = TrainingLog(tmp_path)
    for step in range(1, 8):
        log.add("loss", step, step)
    with open(tmp_path / "loss.series.txt", "a") as f:
        f.write("8 8.")  # half-written row from a killed process
    # Resume from a checkpoint taken at step 5: rows 6-8 will be redone.
    log = TrainingLog(tmp_path, resume_step=5)
    assert read_series(tmp_path, "loss")[0].tolist() == [1, 2, 3, 4, 5]
    for step in range(6, 9):
        log.add("loss", step, step * 10)
    steps, values = read_series(tmp_path, "loss")
    assert steps.tolist() == list(range(1, 9))
    assert values.tolist() == [1, 2, 3, 4, 5, 60, 70, 80]
    # Without resume_step existing rows are kept too (never truncated).
    TrainingLog(tmp_path).add("loss", 9, 90)
    assert read_series(tmp_path, "loss")[0].tolist() == list(range(1, 10))


def test_resume_keeps_interval_cadence(tmp_path):
    log = TrainingLog(tmp_path, interval=2)
    for step in range(0, 6):
        log.add("l", step, step)
    log = TrainingLog(tmp_path, resume_step=3, interval=2)
    for step in range(4, 8):
        log.add("l", step, step)
    assert read_series(tmp_path, "l")[0].tolist() == [1, 3, 5, 7]


def test_timer_rows(tmp_path):
    log = TrainingLog(tmp_path)
    for step in range(3):
        log.time("iter", step)
    timer = read_timer(tmp_path, "iter")
    assert timer["step"].tolist() == [0, 1, 2]
    assert np.all(timer["lap_iters"] == 1)
    assert np.all(np.diff(timer["total_seconds"]) >= 0)


def test_missing_series_is_empty(tmp_path):
    steps, values = read_series(tmp_path, "nothing")
    assert steps.size == 0 and values.size == 0


def test_progress_env_switch(monkeypatch):
    buf = io.StringIO()
    monkeypatch.delenv(NO_PROGRESS_ENV, raising=False)
    assert list(progress(range(3), file=buf, desc="t")) == [0, 1, 2]
    assert "3/3" in buf.getvalue()
    monkeypatch.setenv(NO_PROGRESS_ENV, "1")
    buf = io.StringIO()
    bar = progress(range(3), file=buf)
    assert bar.disable and list(bar) == [0, 1, 2] and buf.getvalue() == ""
