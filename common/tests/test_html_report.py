"""HtmlReport pages are self-contained: rendered in headless Chromium with no network, every
image and audio element loads."""
import numpy as np
import pytest

from common.dev.browser import media_load_check
from common.report import HtmlReport


def test_page_with_plot_table_and_audio_loads_everything(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [1, 0])
    report = HtmlReport("A <test> & report")
    report.heading("plots")
    report.image(fig, caption="a line")
    plt.close(fig)
    report.table(["name", "value"], [["x", 1.5], ["<y>", 2]])
    t = np.arange(8000) / 8000.0
    report.audio(np.stack([np.sin(2 * np.pi * 440 * t)] * 2, axis=1) * 0.5, 8000, "stereo")
    report.audio(np.sin(2 * np.pi * 220 * t) * 0.5, 8000, "mono")
    path = report.write(tmp_path / "page.html")
    text = path.read_text()
    assert "&lt;test&gt; &amp; report" in text and "&lt;y&gt;" in text
    assert "src=\"http" not in text and "src='http" not in text
    assert media_load_check(path) == {"images": [True], "audio": [True, True]}


def test_a_broken_image_is_reported(tmp_path):
    report = HtmlReport("broken")
    report.image(b"not a png", caption="broken")
    path = report.write(tmp_path / "page.html")
    assert media_load_check(path) == {"images": [False], "audio": []}


def test_encoding_needs_ffmpeg(monkeypatch):
    from common import report as R
    from common.errors import UserError

    def missing(*a, **k):
        raise FileNotFoundError("ffmpeg")
    monkeypatch.setattr(R.subprocess, "run", missing)
    with pytest.raises(UserError, match="ffmpeg"):
        R.encode_mp3(np.zeros(100), 8000)
