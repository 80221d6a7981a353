"""Tests for common.mss.separation: the shared separate.py driver."""
import argparse
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf

from common.errors import UserError
from common.mss.audio import AudioFormat
from common.mss.separation import (AudioInput, add_separation_args, check_chunk_args,
                                   run_separation, separate_audio, separate_files, validate_inputs)

GAINS = {"vocals": 0.5, "drums": -0.25, "bass": 2.0}


class ScaleSeparator:
    """Dummy model at 44.1 kHz: each target is a scaled copy of the mixture."""

    def __init__(self, sample_rate=44100, gains=GAINS):
        self.sample_rate = sample_rate
        self.gains = dict(gains)
        self.targets = list(gains)
        self.shapes = []

    def __call__(self, audio):
        assert audio.dtype == np.float32 and audio.ndim == 2 and audio.shape[1] == 2
        self.shapes.append(audio.shape)
        return {t: g * audio for t, g in self.gains.items()}


def signal(n, channels, sr, seed=0, noise=0.01):
    t = np.arange(n) / sr
    rng = np.random.default_rng(seed)
    cols = [0.3 * np.sin(2 * np.pi * (300 + 100 * c) * t) + noise * rng.standard_normal(n)
            for c in range(channels)]
    return np.stack(cols, axis=1).astype(np.float32)


def write_input(path, n, channels, sr, seed=0, subtype="FLOAT", noise=0.01):
    x = signal(n, channels, sr, seed, noise)
    sf.write(path, x, sr, subtype=subtype)
    return x


def listing(root):
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, files in os.walk(root) for f in files)


@pytest.mark.parametrize("sr,n,channels", [
    (44100, 44100 + 17, 2),   # model rate, odd length
    (22050, 12345, 1),        # mono, resampled up and back
    (48000, 30000, 4),        # 4 channels -> first two; round trip gives 29999 samples
    (88200, 1001, 2),         # round trip gives one sample too many
    (8000, 999, 2),           # very short, low rate
])
def test_outputs_have_input_rate_and_length(tmp_path, sr, n, channels):
    # Pure tones (no noise above the model's Nyquist), so resampling is near-lossless.
    x = write_input(tmp_path / "song.wav", n, channels, sr, noise=0.0)
    sep = ScaleSeparator()
    messages = []
    dirs = separate_files([tmp_path / "song.wav"], sep, out_dir=tmp_path / "out",
                          progress=False, log=messages.append)
    assert dirs == [tmp_path / "out" / "song"]
    assert listing(tmp_path / "out") == [f"song/{t}.wav" for t in sorted(GAINS)]
    expected = x[:, :2]  # a mono input gives mono estimates, more than two channels stereo
    for t, g in GAINS.items():
        info = sf.info(str(tmp_path / "out" / "song" / f"{t}.wav"))
        assert info.samplerate == sr and info.frames == n and info.channels == min(channels, 2)
        y, _ = sf.read(tmp_path / "out" / "song" / f"{t}.wav", dtype="float32", always_2d=True)
        if sr == sep.sample_rate:
            np.testing.assert_allclose(y, g * expected, rtol=0, atol=1e-6)
        else:  # resampling round trip: accurate away from the edges
            mid = slice(n // 10, n - n // 10)
            assert np.max(np.abs(y[mid] - g * expected[mid])) < 2e-3 * abs(g)
    assert any("warning" in m and "4 channels" in m for m in messages) == (channels == 4)


def test_chunked_equals_unchunked_for_local_model(tmp_path):
    write_input(tmp_path / "a.wav", 5 * 44100 + 3, 2, 44100)
    sep = ScaleSeparator()
    separate_files([tmp_path / "a.wav"], sep, out_dir=tmp_path / "whole", progress=False,
                   log=None)
    assert sep.shapes == [(5 * 44100 + 3, 2)]
    sep.shapes.clear()
    separate_files([tmp_path / "a.wav"], sep, out_dir=tmp_path / "chunked", chunk_dur=1.0,
                   chunk_overlap=0.25, progress=False, log=None)
    assert len(sep.shapes) > 5 and set(sep.shapes) == {(44100, 2)}  # one graph shape
    for t in GAINS:
        a, _ = sf.read(tmp_path / "whole" / "a" / f"{t}.wav", dtype="float32")
        b, _ = sf.read(tmp_path / "chunked" / "a" / f"{t}.wav", dtype="float32")
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)


def test_separate_audio_in_memory():
    x = signal(10_000, 2, 44100)
    est, warn = separate_audio(ScaleSeparator(), x, 44100)
    assert warn is None and list(est) == list(GAINS)
    np.testing.assert_array_equal(est["bass"], 2.0 * x)


def test_bad_input_writes_nothing(tmp_path):
    write_input(tmp_path / "good.wav", 4410, 2, 44100)
    (tmp_path / "bad.wav").write_text("not audio at all " * 50)
    sep = ScaleSeparator()
    with pytest.raises(UserError) as info:
        separate_files([tmp_path / "good.wav", tmp_path / "bad.wav"], sep,
                       out_dir=tmp_path / "out", progress=False, log=None)
    msg = str(info.value)
    assert "bad.wav" in msg and "good.wav" not in msg and "\n" not in msg
    assert not (tmp_path / "out").exists() and sep.shapes == []  # validated before any work


def test_several_bad_inputs_reported_in_one_line(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(UserError) as info:
        validate_inputs([tmp_path / "missing.flac", tmp_path / "empty.wav"])
    msg = str(info.value)
    assert "2 problems" in msg and "missing.flac" in msg and "empty.wav" in msg
    assert "\n" not in msg


def test_stem_collision_is_rejected(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_input(tmp_path / "a" / "song.wav", 1000, 2, 44100)
    write_input(tmp_path / "b" / "song.flac", 1000, 2, 44100, subtype="PCM_16")
    with pytest.raises(UserError, match="both write to 'song/'"):
        separate_files([tmp_path / "a" / "song.wav", tmp_path / "b" / "song.flac"],
                       ScaleSeparator(), out_dir=tmp_path / "out", log=None)
    assert not (tmp_path / "out").exists()


class FailingSeparator(ScaleSeparator):
    """Fails on its n-th call, like a model running out of memory mid-run."""

    def __init__(self, fail_on):
        super().__init__()
        self.fail_on = fail_on

    def __call__(self, audio):
        if len(self.shapes) + 1 == self.fail_on:
            raise RuntimeError("model exploded")
        return super().__call__(audio)


def test_failure_leaves_no_partial_output(tmp_path):
    for name in ("one", "two"):
        write_input(tmp_path / f"{name}.wav", 3 * 44100, 2, 44100)
    inputs = [tmp_path / "one.wav", tmp_path / "two.wav"]
    # The first file needs 3 chunk calls; fail in the middle of the second file.
    sep = FailingSeparator(fail_on=5)
    with pytest.raises(RuntimeError, match="exploded"):
        separate_files(inputs, sep, out_dir=tmp_path / "out", chunk_dur=1.0,
                       chunk_overlap=0.0, progress=False, log=None)
    # First input is complete, the second left nothing (no folder, no temp files).
    assert listing(tmp_path / "out") == [f"one/{t}.wav" for t in sorted(GAINS)]
    assert os.listdir(tmp_path / "out") == ["one"]
    # Failing on the very first call: no output folder at all.
    with pytest.raises(RuntimeError):
        separate_files(inputs, FailingSeparator(fail_on=1), out_dir=tmp_path / "out2",
                       log=None, progress=False)
    assert not (tmp_path / "out2").exists()


class ShortSeparator(ScaleSeparator):
    def __call__(self, audio):
        return {t: v[:-1024] for t, v in super().__call__(audio).items()}


def test_separator_must_return_input_length(tmp_path):
    write_input(tmp_path / "x.wav", 20_000, 2, 44100)
    with pytest.raises(ValueError, match="exactly"):
        separate_files([tmp_path / "x.wav"], ShortSeparator(), out_dir=tmp_path / "out",
                       log=None, progress=False)
    assert not (tmp_path / "out").exists()


def test_rerun_replaces_existing_files(tmp_path):
    write_input(tmp_path / "x.wav", 2000, 2, 44100)
    separate_files([tmp_path / "x.wav"], ScaleSeparator(), out_dir=tmp_path / "out", log=None)
    separate_files([tmp_path / "x.wav"], ScaleSeparator(gains={"vocals": 1.0, "bass": 0.0}),
                   out_dir=tmp_path / "out", log=None, audio_format=AudioFormat("wav", "pcm16"))
    assert listing(tmp_path / "out") == ["x/bass.wav", "x/drums.wav", "x/vocals.wav"]
    assert sf.info(str(tmp_path / "out" / "x" / "vocals.wav")).subtype == "PCM_16"
    assert sf.info(str(tmp_path / "out" / "x" / "drums.wav")).subtype == "FLOAT"  # untouched


def test_check_chunk_args():
    assert check_chunk_args(0, None) == (0.0, 0.0)
    assert check_chunk_args(10, None) == (10.0, 1.0)
    assert check_chunk_args(2, None) == (2.0, 0.5)
    assert check_chunk_args(4, 2) == (4.0, 2.0)
    for dur, ov in [(-1, None), (4, 2.5), (4, -0.1), (float("nan"), None)]:
        with pytest.raises(UserError):
            check_chunk_args(dur, ov)


def test_run_separation_builds_separator_once(tmp_path):
    for i in range(3):
        write_input(tmp_path / f"in{i}.wav", 3000 + i, 2, 44100, seed=i)
    parser = add_separation_args(argparse.ArgumentParser())
    args = parser.parse_args([str(tmp_path / f"in{i}.wav") for i in range(3)]
                             + ["--out-dir", str(tmp_path / "out"), "--no-progress"])
    assert args.chunk_dur == 0.0 and args.format == "wav" and args.sample_format is None
    built = []

    def make():
        built.append(ScaleSeparator())
        return built[-1]
    dirs = run_separation(args, make, log=None)
    assert len(built) == 1 and len(built[0].shapes) == 3
    assert [d.name for d in dirs] == ["in0", "in1", "in2"]
    # A bad input fails before the model is built.
    args = parser.parse_args([str(tmp_path / "in0.wav"), str(tmp_path / "nope.wav")])
    with pytest.raises(UserError):
        run_separation(args, make, log=None)
    assert len(built) == 1


def test_audio_input_items_are_not_revalidated(tmp_path, monkeypatch):
    write_input(tmp_path / "x.wav", 2000, 2, 44100)
    items = validate_inputs([tmp_path / "x.wav"])
    assert items == [AudioInput(tmp_path / "x.wav", "x", 44100, 2000, 2)]
    import common.mss.separation as S
    monkeypatch.setattr(S, "validate_inputs", lambda *_: pytest.fail("validated twice"))
    separate_files(items, ScaleSeparator(), out_dir=tmp_path / "out", log=None)
    assert sf.info(str(tmp_path / "out" / "x" / "vocals.wav")).frames == 2000


SCRIPT = textwrap.dedent("""
    import argparse
    import numpy as np
    from common.cli import run_cli
    from common.mss.separation import add_separation_args, run_separation

    class Half:
        sample_rate = 44100
        targets = ["vocals", "accompaniment"]
        def __call__(self, audio):
            return {"vocals": 0.5 * audio, "accompaniment": 0.5 * audio}

    def main(argv=None):
        parser = argparse.ArgumentParser(description="tiny separate.py")
        add_separation_args(parser)
        args = parser.parse_args(argv)
        run_separation(args, Half)
        return 0

    if __name__ == "__main__":
        run_cli(main)
""")


def test_cli_bad_input_exit_2_one_line(tmp_path):
    script = tmp_path / "separate.py"
    script.write_text(SCRIPT)
    write_input(tmp_path / "good.wav", 3000, 2, 44100)
    (tmp_path / "bad.wav").write_text("definitely not a RIFF header\n" * 10)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "good.wav"),
                           str(tmp_path / "bad.wav"), "--out-dir", str(out)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "bad.wav" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not out.exists()
    # The same script succeeds on the good file alone.
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "good.wav"),
                           "--out-dir", str(out), "--no-progress"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert listing(out) == ["good/accompaniment.wav", "good/vocals.wav"]


# --------------------------------------------------------------------------- output safety

def test_output_location_is_checked_before_the_separator_is_built(tmp_path):
    write_input(tmp_path / "x.wav", 2000, 2, 44100)
    (tmp_path / "file").write_text("x")
    parser = add_separation_args(argparse.ArgumentParser())
    args = parser.parse_args([str(tmp_path / "x.wav"), "-o", str(tmp_path / "file" / "out")])

    def never():
        pytest.fail("the separator was built before the output location was checked")
    with pytest.raises(UserError, match="lies under the file"):
        run_separation(args, never, log=None)


def test_an_output_never_replaces_an_input(tmp_path):
    (tmp_path / "vocals").mkdir()
    song = tmp_path / "vocals" / "vocals.wav"
    write_input(song, 2000, 2, 44100)
    before = song.read_bytes()
    with pytest.raises(UserError, match="would overwrite the input"):
        separate_files([song], ScaleSeparator(), out_dir=tmp_path, log=None)
    assert song.read_bytes() == before and listing(tmp_path) == ["vocals/vocals.wav"]


def test_truncated_input_is_separated_with_one_warning(tmp_path):
    write_input(tmp_path / "cut.wav", 4000, 2, 44100)
    data = (tmp_path / "cut.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[:len(data) // 2])
    decoded = sf.info(str(tmp_path / "cut.wav")).frames
    lines = []
    separate_files([tmp_path / "cut.wav"], ScaleSeparator(), out_dir=tmp_path / "out",
                   log=lines.append, progress=False)
    warnings = [ln for ln in lines if ln.startswith("warning:")]
    assert len(warnings) == 1
    assert "declares 4000 samples" in warnings[0] and f"only {decoded} " in warnings[0]
    assert sf.info(str(tmp_path / "out" / "cut" / "vocals.wav")).frames == decoded


def test_full_disk_names_the_estimate_and_leaves_nothing(tmp_path):
    from common.dev.testing import SmallDisk
    from common.fileio import OutputError

    write_input(tmp_path / "song.wav", 44100, 2, 44100)
    with SmallDisk(tmp_path / "disk", 256 * 1024) as disk:
        if not disk.mounted:
            pytest.fail("needs root to mount a small tmpfs (make test runs as root)")
        out = tmp_path / "disk" / "out"
        with pytest.raises(OutputError, match="No space left") as info:
            separate_files([tmp_path / "song.wav"], ScaleSeparator(), out_dir=out, log=None)
        assert str(out / "song") in str(info.value) and ".partial" not in str(info.value)
        assert listing(tmp_path / "disk") == []
