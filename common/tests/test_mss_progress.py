"""Progress on long jobs: a bar that keeps ticking through one long step (a short clip on the
slow nnabla CPU path is a single network call of minutes), shown only once a job has taken a
few seconds, and the same for an ONNX export."""
import time

import numpy as np
import pytest

import common.terminal as terminal_module
from common.mss.audio import chunked_apply
from common.terminal import NO_PROGRESS_ENV


@pytest.fixture
def quick_ticks(monkeypatch):
    """Bars appear after 0.3 s instead of TICK_DELAY; progress is not switched off."""
    monkeypatch.setattr(terminal_module, "TICK_DELAY", 0.3)
    monkeypatch.delenv(NO_PROGRESS_ENV, raising=False)


def slow_identity(seconds):
    def fn(chunk):
        time.sleep(seconds)
        return {"x": chunk}
    return fn


def elapsed_shown(stderr, done=r"\d+"):
    """The elapsed times a tqdm bar printed (with ``done`` steps finished), in seconds."""
    import re
    return [int(m) * 60 + int(s)
            for m, s in re.findall(rf"\b{done}/\d+ \[(\d\d):(\d\d)", stderr)] or [0]


def test_one_long_call_shows_a_ticking_bar(quick_ticks, capsys):
    audio = np.zeros((1000, 2), np.float32)
    out = chunked_apply(slow_identity(2.5), audio, chunk_len=0, desc="separating")
    np.testing.assert_array_equal(out["x"], audio)
    stderr = capsys.readouterr().err
    assert "separating" in stderr
    assert max(elapsed_shown(stderr, done=0)) >= 2  # redrawn while the one call was running


def test_long_chunks_tick_between_chunks_too(quick_ticks, capsys):
    audio = np.ones((300, 1), np.float32)
    out = chunked_apply(slow_identity(0.8), audio, chunk_len=100, overlap=0, desc="chunks")
    np.testing.assert_allclose(out["x"], audio)
    stderr = capsys.readouterr().err
    assert "chunks" in stderr and max(elapsed_shown(stderr)) >= 2


def test_quick_jobs_and_disabled_bars_print_nothing(quick_ticks, capsys):
    audio = np.zeros((1000, 2), np.float32)
    chunked_apply(slow_identity(0), audio, chunk_len=0)  # done before the bar's delay
    chunked_apply(slow_identity(0.6), audio, chunk_len=0, progress=False)
    assert capsys.readouterr().err == ""


def test_no_progress_environment_hides_the_bar(quick_ticks, capsys, monkeypatch):
    monkeypatch.setenv(NO_PROGRESS_ENV, "1")
    chunked_apply(slow_identity(0.6), np.zeros((10, 1), np.float32), chunk_len=0)
    assert capsys.readouterr().err == ""


def test_an_onnx_export_shows_a_bar(quick_ticks, capsys, monkeypatch, tmp_path):
    import nnabla.functions as F

    import common.runtime.onnx_export as onnx_export

    real_export = onnx_export.export_graph

    def slow_export(*args, **kw):
        time.sleep(1.5)
        return real_export(*args, **kw)
    monkeypatch.setattr(onnx_export, "export_graph", slow_export)
    result = onnx_export.export_cached(lambda x: F.relu(x), [(2, 3)], name="tiny",
                                       cache_dir=tmp_path)
    assert result.exported
    stderr = capsys.readouterr().err
    assert "exporting tiny to ONNX" in stderr and max(elapsed_shown(stderr, done=0)) >= 1
    # cached now: no export, no bar
    again = onnx_export.export_cached(lambda x: F.relu(x), [(2, 3)], name="tiny",
                                      cache_dir=tmp_path)
    assert not again.exported and capsys.readouterr().err == ""
