"""``separate.py --report``: one self-contained page per input (a spectrogram and an audio
player for the mixture and every estimate), rendered in headless Chromium with no network:
every image and every audio element must load."""
import re
from pathlib import Path

import numpy as np
import pytest

from common.dev.browser import media_load_check
from common.dev.testing import QUIET_ENV, files_under, run_script, synthetic_music, write_audio

XUMX = Path(__file__).resolve().parents[2] / "x-umx"


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """X-UMX separate.py --report (MP3 estimates) on a mono 22.05 kHz clip and a 3-channel
    48 kHz one (its page shows the two channels that were separated)."""
    from xumx.model import CrossNet

    root = tmp_path_factory.mktemp("report")
    model = CrossNet(hidden_size=8, nb_layers=1, max_bin=600)
    model.create_parameters()
    rng = np.random.RandomState(0)
    for name, var in model.get_parameters().items():
        if not (name.startswith(("input_", "output_")) or "/bn/" in name):
            var.d = rng.uniform(-0.5, 0.5, var.shape)
    model.save_parameters(str(root / "xumx.h5"))
    songs = [write_audio(root / "mono.wav", synthetic_music(1.5, 22050, 1), 22050),
             write_audio(root / "multi.flac", synthetic_music(1.0, 48000, 3, seed=1), 48000)]
    run_script(XUMX / "separate.py", *songs, "--model", root / "xumx.h5", "--out-dir",
               root / "out", "--targets", "vocals", "bass", "--format", "mp3", "--report",
               env=QUIET_ENV)
    return root / "out"


def test_report_sits_beside_the_estimates(reports):
    assert files_under(reports) == sorted(
        f"{stem}/{name}" for stem in ("mono", "multi")
        for name in ("bass.mp3", "vocals.mp3", "report.html"))


@pytest.mark.parametrize("stem", ["mono", "multi"])
def test_every_image_and_player_loads_in_chromium(reports, stem):
    page = reports / stem / "report.html"
    text = page.read_text(encoding="utf-8")
    # everything is embedded: every src is a data URI
    sources = re.findall(r'src="([^"]*)"', text)
    assert sources and all(s.startswith(("data:image/png;base64,", "data:audio/mpeg;base64,"))
                           for s in sources)
    assert [h for h in re.findall(r"<h2>([^<]*)</h2>", text)] == ["mixture", "vocals", "bass"]
    # mixture + two estimates: a spectrogram and a player each, all loaded
    assert media_load_check(page) == {"images": [True] * 3, "audio": [True] * 3}
