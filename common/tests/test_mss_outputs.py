"""What ``separate.py`` writes (both papers share it, :mod:`common.mss.separation`), through the
real scripts with tiny random models: WAV (float32, 16 and 24 bit), FLAC and MP3 (read back:
subtype, channels, rate, duration; the MP3 bitrate through ffprobe), the input's channel count
kept (``--channels`` overrides it), the clipping choice, inputs at 22.05 and 48 kHz, refused
flag combinations in one line, and the output contracts (full disk, inputs never replaced)
with the new formats. Also the separators' ``sample_rate`` argument and the refusal of an
ambiguous array layout, and the one-flag hint of ``eval.py`` with a single target."""
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from common.dev.testing import (QUIET_ENV, SmallDisk, assert_one_line_error, files_under,
                                run_script, synthetic_music, write_audio)
from common.errors import UserError
from common.mss.audio import resample

REPO = Path(__file__).resolve().parents[2]
XUMX = REPO / "x-umx"
D3NET = REPO / "d3net" / "music-source-separation"
# Two outputs keep the runs short; X-UMX adds the accompaniment next to one target.
XUMX_FLAGS = ("--targets", "vocals")
XUMX_OUTPUTS = ("vocals", "accompaniment")
D3NET_FLAGS = ("--no-flip-average",)
D3NET_OUTPUTS = ("vocals", "drums")


def separate(script_dir, *args, check=True, **kw):
    return run_script(script_dir / "separate.py", *args, check=check, env=QUIET_ENV, **kw)


@pytest.fixture(scope="module")
def xumx_model(tmp_path_factory):
    from xumx.model import CrossNet

    path = tmp_path_factory.mktemp("xumx") / "xumx.h5"
    model = CrossNet(hidden_size=8, nb_layers=1, max_bin=600)
    model.create_parameters()
    rng = np.random.RandomState(0)
    for name, var in model.get_parameters().items():
        if not (name.startswith(("input_", "output_")) or "/bn/" in name):
            var.d = rng.uniform(-0.5, 0.5, var.shape)
    model.save_parameters(str(path))
    return path


@pytest.fixture(scope="module")
def d3net_model(tmp_path_factory):
    from d3net_mss.model import D3NetMSS, load_config
    from d3net_mss.training import export_weights

    folder = tmp_path_factory.mktemp("d3net")
    rng = np.random.RandomState(0)
    for target in D3NET_OUTPUTS:
        config = dict(load_config("smoke_network"), target=target)
        model = D3NetMSS(config)
        for name, var in model.create_parameters().items():
            if not name.endswith(("/mean", "/var", "in_offset", "in_scale")):
                var.d = var.d + rng.uniform(-0.3, 0.3, var.shape)
        export_weights(model, config, folder)
    return folder


def ffprobe(path):
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                          "stream=codec_name,bit_rate,sample_rate,channels", "-of", "json",
                          str(path)], capture_output=True, text=True, check=True).stdout
    return json.loads(out)["streams"][0]


# (format flags, input rate, input channels, expected subtype)
FORMATS = [
    ((), 48000, 2, "FLOAT"),
    (("--sample-format", "pcm16"), 22050, 1, "PCM_16"),
    (("--wav-format", "pcm24"), 44100, 2, "PCM_24"),  # the older flag spelling
    (("--format", "flac"), 48000, 1, "PCM_24"),
    (("--format", "flac", "--sample-format", "pcm16"), 22050, 2, "PCM_16"),
    (("--format", "mp3", "--bitrate", "192"), 44100, 2, "MPEG_LAYER_III"),
    (("--format", "mp3"), 22050, 1, "MPEG_LAYER_III"),
]


@pytest.mark.parametrize("flags,sr,channels,subtype", FORMATS,
                         ids=["wav", "wav16-mono-22k", "wav24", "flac-mono-48k", "flac16-22k",
                              "mp3-192k", "mp3-mono-22k"])
def test_every_format_keeps_rate_length_and_channels(xumx_model, tmp_path, flags, sr, channels,
                                                    subtype):
    n = int(1.2 * sr)
    song = write_audio(tmp_path / "song.wav", synthetic_music(n / sr, sr, channels), sr)
    separate(XUMX, song, "--model", xumx_model, "--out-dir", tmp_path / "out", *XUMX_FLAGS,
             *flags)
    ext = {"flac": ".flac", "mp3": ".mp3"}.get(dict(zip(flags, flags[1:])).get("--format"),
                                               ".wav")
    assert files_under(tmp_path / "out") == sorted(f"song/{t}{ext}" for t in XUMX_OUTPUTS)
    for target in XUMX_OUTPUTS:
        path = tmp_path / "out" / "song" / f"{target}{ext}"
        info = sf.info(str(path))
        audio, _ = sf.read(str(path), dtype="float32", always_2d=True)  # MP3: decoded length
        assert (info.subtype, info.samplerate, info.channels, audio.shape[0]) == (
            subtype, sr, channels, n)
        assert np.isfinite(audio).all() and np.abs(audio).max() > 1e-3
        if ext == ".mp3":  # the asked bitrate, else the most MP3 allows at that rate
            stream = ffprobe(path)
            expected = 192000 if "--bitrate" in flags else (320000 if sr >= 32000 else 160000)
            assert (stream["codec_name"], int(stream["bit_rate"])) == ("mp3", expected)


def test_d3net_writes_flac_and_takes_channels(d3net_model, tmp_path):
    """The D3Net script shares the flags: a stereo input written as mono 16-bit FLAC."""
    song = write_audio(tmp_path / "s.wav", synthetic_music(1.0, 48000, 2), 48000)
    separate(D3NET, song, "--model", d3net_model, "--out-dir", tmp_path / "out", *D3NET_FLAGS,
             "--format", "flac", "--sample-format", "pcm16", "--channels", "1")
    for target in D3NET_OUTPUTS:
        info = sf.info(str(tmp_path / "out" / "s" / f"{target}.flac"))
        assert (info.subtype, info.samplerate, info.channels, info.frames) == (
            "PCM_16", 48000, 1, 48000)


def test_channels_override(xumx_model, tmp_path):
    """--channels 1 gives the mean of the stereo estimate; --channels 2 gives a mono input the
    stereo estimate the model makes of it (whose mean is the default mono estimate)."""
    stereo_in = write_audio(tmp_path / "st.wav", synthetic_music(1.0, 44100, 2), 44100)
    mono_in = write_audio(tmp_path / "mono.wav", synthetic_music(1.0, 44100, 1), 44100)
    separate(XUMX, stereo_in, mono_in, "--model", xumx_model, "--out-dir", tmp_path / "default",
             *XUMX_FLAGS)
    separate(XUMX, stereo_in, "--model", xumx_model, "--out-dir", tmp_path / "one",
             *XUMX_FLAGS, "--channels", "1")
    separate(XUMX, mono_in, "--model", xumx_model, "--out-dir", tmp_path / "two",
             *XUMX_FLAGS, "--channels", "2")
    for target in XUMX_OUTPUTS:
        stereo, _ = sf.read(str(tmp_path / "default" / "st" / f"{target}.wav"), dtype="float32")
        mono, _ = sf.read(str(tmp_path / "one" / "st" / f"{target}.wav"), dtype="float32")
        assert stereo.shape == (44100, 2) and mono.shape == (44100,)
        np.testing.assert_allclose(mono, stereo.mean(axis=1), rtol=0, atol=1e-6)
        kept, _ = sf.read(str(tmp_path / "default" / "mono" / f"{target}.wav"),
                          dtype="float32")
        doubled, _ = sf.read(str(tmp_path / "two" / "mono" / f"{target}.wav"), dtype="float32")
        assert kept.shape == (44100,) and doubled.shape == (44100, 2)
        np.testing.assert_allclose(doubled.mean(axis=1), kept, rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def loud_runs(xumx_model, tmp_path_factory):
    """A float WAV mixture peaking at 4 (X-UMX's vocals + accompaniment add up to it, so one of
    them goes beyond 1), separated as float32, as clipped 16-bit and as normalized 16-bit
    WAV: ``(mixture, {name: (estimates, stderr)})``."""
    root = tmp_path_factory.mktemp("loud")
    mix = synthetic_music(1.0, 44100, 2)
    mix *= 4.0 / np.abs(mix).max()
    song = write_audio(root / "loud.wav", mix, 44100)
    runs = {}
    for name, flags in [("float", ()), ("clip", ("--sample-format", "pcm16")),
                        ("normalize", ("--sample-format", "pcm16", "--clipping", "normalize"))]:
        proc = separate(XUMX, song, "--model", xumx_model, "--out-dir", root / name,
                        *XUMX_FLAGS, *flags)
        runs[name] = ({t: sf.read(str(root / name / "loud" / f"{t}.wav"), dtype="float32")[0]
                       for t in XUMX_OUTPUTS}, proc.stderr)
    return mix, runs


def test_float32_stores_peaks_beyond_one_without_a_warning(loud_runs):
    mix, runs = loud_runs
    estimates, stderr = runs["float"]
    assert max(np.abs(e).max() for e in estimates.values()) > 1.0
    # the Wiener filter's estimates add up to the mixture (float64 inside, float32 written)
    np.testing.assert_allclose(sum(estimates.values()), mix, rtol=0, atol=1e-3)
    assert "warning" not in stderr


def test_clip_clips_and_counts(loud_runs):
    _, runs = loud_runs
    floats, _ = runs["float"]
    estimates, stderr = runs["clip"]
    beyond = sum(int(np.count_nonzero(np.abs(e) > 1.0)) for e in floats.values())
    warnings = [ln for ln in stderr.splitlines() if ln.startswith("warning: ")]
    assert len(warnings) == 1 and f"{beyond} samples beyond +-1" in warnings[0], stderr
    for target, est in estimates.items():
        np.testing.assert_allclose(est, np.clip(floats[target], -1, 32767 / 32768), rtol=0,
                                   atol=1 / 32768)


def test_normalize_scales_every_estimate_by_one_factor(loud_runs):
    mix, runs = loud_runs
    floats, _ = runs["float"]
    estimates, stderr = runs["normalize"]
    peak = max(np.abs(e).max() for e in floats.values())
    assert f"scaled by {20 * np.log10(1 / peak):.2f} dB" in stderr
    for target, est in estimates.items():  # no clipped sample: the scaled float estimate
        np.testing.assert_allclose(est, floats[target] / peak, rtol=0, atol=2 / 32768)
    np.testing.assert_allclose(sum(estimates.values()), mix / peak, rtol=0, atol=1e-3 / peak
                               + 2 / 32768)


@pytest.mark.parametrize("flags,inputs,fragments", [
    (("--format", "mp3", "--sample-format", "pcm16"), [(44100, "a")], ("MP3",)),
    (("--format", "flac", "--sample-format", "float32"), [(44100, "a")], ("FLAC stores",)),
    (("--bitrate", "192"), [(44100, "a")], ("--bitrate", "mp3")),
    (("--format", "mp3"), [(44100, "a"), (96000, "b")], ("b.wav", "96000 Hz", "flac")),
    (("--format", "mp3", "--bitrate", "320"), [(22050, "a")], ("160 kbit/s",)),
], ids=["mp3-sample-format", "flac-float", "bitrate-without-mp3", "mp3-rate", "mp3-bitrate"])
def test_impossible_outputs_are_one_line_before_the_model_loads(tmp_path, flags, inputs,
                                                                  fragments):
    songs = [write_audio(tmp_path / f"{name}.wav", synthetic_music(0.5, sr, 2), sr)
             for sr, name in inputs]
    junk = tmp_path / "junk.h5"  # never opened: the refusal comes first
    junk.write_bytes(b"not hdf5")
    proc = separate(XUMX, *songs, "--model", junk, "--out-dir", tmp_path / "out", *flags,
                    check=False)
    assert_one_line_error(proc, *fragments)
    assert not (tmp_path / "out").exists()


def test_full_disk_with_flac_and_report_is_one_line_and_no_partial_file(xumx_model, tmp_path):
    song = write_audio(tmp_path / "song.wav", synthetic_music(1.0, 44100, 2), 44100)
    with SmallDisk(tmp_path / "disk", 96 * 1024) as disk:
        proc = separate(XUMX, song, "--model", xumx_model, "--out-dir",
                        Path(disk.path) / "out", *XUMX_FLAGS, "--format", "flac", "--report",
                        check=False, preexec_fn=disk.preexec_fn())
        line = assert_one_line_error(proc, "cannot write")
        assert str(Path(disk.path) / "out" / "song") in line
        assert files_under(disk.path) == []


@pytest.mark.parametrize("name", ["vocals.mp3", "report.html"])
def test_new_output_names_never_replace_an_input(xumx_model, tmp_path, name):
    """``<out-dir>/<stem>/<name>`` would be the input itself: refused, nothing written."""
    folder = tmp_path / Path(name).stem
    folder.mkdir()
    song = folder / name
    if name.endswith(".mp3"):
        write_audio(song, synthetic_music(1.0, 44100, 2), 44100)
        flags = ("--format", "mp3")
    else:  # any file ffmpeg decodes is an input, whatever its name
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=d=0.5", "-f", "wav",
                        str(song)], check=True)
        flags = ("--report",)
    before = song.read_bytes()
    proc = separate(XUMX, song, "--model", xumx_model, "--out-dir", tmp_path, *XUMX_FLAGS,
                    *flags, check=False)
    assert_one_line_error(proc, "would overwrite the input")
    assert song.read_bytes() == before and files_under(tmp_path) == [f"{folder.name}/{name}"]


# --------------------------------------------------------------------------- Python API

@pytest.fixture(scope="module")
def separators(xumx_model, d3net_model):
    from d3net_mss.cli import make_separator as make_d3net
    from xumx.separator import Separator as XumxSeparator

    return {"x-umx": XumxSeparator(str(xumx_model), targets=["vocals"]),
            "d3net": make_d3net(str(d3net_model), flip_average=False)}


@pytest.mark.parametrize("paper", ["x-umx", "d3net"])
@pytest.mark.parametrize("sr", [22050, 48000])
def test_separator_takes_an_explicit_sample_rate(separators, paper, sr):
    """Audio at ``sr`` is resampled to the model's rate, separated, and the estimates come back
    at ``sr`` with the input's length: the same as doing the resampling by hand."""
    sep = separators[paper]
    audio = synthetic_music(1.1, sr, 2)
    estimates = sep.separate(audio, sample_rate=sr)
    by_hand = sep.separate(resample(audio, sr, sep.sample_rate))
    for name, est in estimates.items():
        assert est.shape == audio.shape
        expected = resample(by_hand[name], sep.sample_rate, sr)[:audio.shape[0]]
        np.testing.assert_allclose(est[:len(expected)], expected, rtol=0, atol=1e-5)
    called = sep(audio, sample_rate=sr)
    assert {k: v.shape for k, v in called.items()} == {k: audio.shape for k in estimates}
    # the model's own rate is the same as no rate at all
    native = synthetic_music(0.5, sep.sample_rate, 2)
    for name, est in sep.separate(native, sample_rate=sep.sample_rate).items():
        np.testing.assert_allclose(est, sep.separate(native)[name], rtol=0, atol=1e-12)


@pytest.mark.parametrize("paper", ["x-umx", "d3net"])
def test_separator_refuses_channels_first_audio(separators, paper):
    with pytest.raises(UserError, match=r"\(2, 44100\).*pass audio\.T") as info:
        separators[paper].separate(np.zeros((2, 44100), np.float32), sample_rate=44100)
    assert "\n" not in str(info.value)


def test_driver_refuses_channels_first_audio_in_one_line():
    from common.mss.separation import separate_audio

    class Identity:
        sample_rate, targets = 44100, ["x"]

        def __call__(self, audio):
            return {"x": audio}
    with pytest.raises(UserError, match="more channels than samples") as info:
        separate_audio(Identity(), np.zeros((2, 44100), np.float32), 44100)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- eval hint

@pytest.mark.parametrize("script_dir", [D3NET, XUMX], ids=["d3net", "x-umx"])
def test_eval_with_one_target_suggests_residual(script_dir, tmp_path):
    junk = tmp_path / "vocals.h5"  # the hint comes before any model or data is read
    junk.write_bytes(b"not hdf5")
    proc = run_script(script_dir / "eval.py", "--model", junk, "--root", tmp_path / "none",
                      "--out-dir", tmp_path / "scores", "--targets", "vocals", check=False,
                      env=QUIET_ENV)
    assert_one_line_error(proc, "--targets gives one (vocals)", "add --residual")
    assert not (tmp_path / "scores").exists()
