"""Tests for common.mss.audio: decoding, channel handling, atomic writes, chunking."""
import errno
import os
import subprocess
import tempfile

import numpy as np
import pytest
import soundfile as sf

from common.dev.testing import SmallDisk
from common.errors import UserError
from common.fileio import OutputError
from common.mss import audio as A
from common.mss.audio import (SpilledArray, chunk_starts, chunked_apply, crossfade_window,
                              declared_frames, load_audio, to_stereo, truncation_note,
                              write_wav)

SR = 44100
needs_ffmpeg = pytest.mark.usefixtures("ffmpeg")


def tone(n, sr, channels, seed=0):
    """Distinct sines per channel plus a little noise, peak < 0.6."""
    t = np.arange(n) / sr
    rng = np.random.default_rng(seed)
    cols = [0.4 * np.sin(2 * np.pi * (220 + 110 * c) * t) + 0.05 * rng.standard_normal(n)
            for c in range(channels)]
    return np.stack(cols, axis=1).astype(np.float32)


def ffmpeg_encode(src, dst, *codec):
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(src), *codec, str(dst)],
                   check=True)


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    d = tmp_path_factory.mktemp("audio")
    x = tone(SR, SR, 2)
    sf.write(d / "pcm16.wav", x, SR, subtype="PCM_16")
    sf.write(d / "float.wav", x, SR, subtype="FLOAT")
    sf.write(d / "lossless.flac", x, SR)
    return d, x


# --------------------------------------------------------------------------- load_audio

def test_pcm16_wav(ref):
    d, x = ref
    a, sr = load_audio(d / "pcm16.wav")
    assert sr == SR and a.dtype == np.float32 and a.shape == x.shape
    assert a.flags["C_CONTIGUOUS"]
    assert np.max(np.abs(a - x)) <= 1.0 / 32768 + 1e-7


def test_float_wav_is_bit_exact(ref):
    d, x = ref
    a, sr = load_audio(d / "float.wav")
    assert sr == SR and np.array_equal(a, x)


def test_flac(ref):
    d, x = ref
    a, sr = load_audio(d / "lossless.flac")
    assert sr == SR and a.shape == x.shape
    assert np.max(np.abs(a - x)) <= 1.0 / 32768 + 1e-7


@needs_ffmpeg
@pytest.mark.parametrize("name,codec", [
    ("lossy.mp3", ["-c:a", "libmp3lame", "-b:a", "192k"]),
    ("lossy.ogg", ["-c:a", "libvorbis"]),
    ("lossy.m4a", ["-c:a", "aac", "-b:a", "192k"]),  # libsndfile can't: ffmpeg path
])
def test_lossy_formats(ref, name, codec):
    d, x = ref
    ffmpeg_encode(d / "pcm16.wav", d / name, *codec)
    a, sr = load_audio(d / name)
    assert sr == SR and a.shape[1] == 2 and a.dtype == np.float32
    assert abs(a.shape[0] - x.shape[0]) < 4096  # codec priming/padding only
    def rms(v):
        return float(np.sqrt(np.mean(v.astype(np.float64) ** 2)))
    assert rms(a) == pytest.approx(rms(x), rel=0.15)
    # The two channels keep their identity (different tones, different order).
    spec = np.abs(np.fft.rfft(a[2048:2048 + 32768], axis=0))
    freqs = np.fft.rfftfreq(32768, 1 / SR)
    assert freqs[np.argmax(spec[:, 0])] == pytest.approx(220, abs=3)
    assert freqs[np.argmax(spec[:, 1])] == pytest.approx(330, abs=3)


@needs_ffmpeg
def test_ffmpeg_path_matches_soundfile_on_multichannel_pcm(tmp_path):
    """The raw-PCM ffmpeg decoder agrees sample-for-sample with libsndfile (layout, scale)."""
    x = tone(5000, 32000, 3)
    sf.write(tmp_path / "three.wav", x, 32000, subtype="PCM_16")
    via_sf, sr1 = load_audio(tmp_path / "three.wav")
    via_ff, sr2 = A._read_ffmpeg(tmp_path / "three.wav")
    assert sr1 == sr2 == 32000 and via_ff.shape == (5000, 3)
    np.testing.assert_array_equal(via_ff, via_sf)


def test_mono_and_to_stereo(tmp_path):
    x = tone(1000, SR, 1)
    sf.write(tmp_path / "mono.wav", x, SR, subtype="FLOAT")
    a, _ = load_audio(tmp_path / "mono.wav")
    assert a.shape == (1000, 1)
    s, warn = to_stereo(a)
    assert warn is None and s.shape == (1000, 2)
    np.testing.assert_array_equal(s[:, 0], x[:, 0])
    np.testing.assert_array_equal(s[:, 1], x[:, 0])
    s1, _ = to_stereo(x[:, 0])  # 1-D counts as mono
    np.testing.assert_array_equal(s1, s)


def test_four_channels_keep_first_two_with_warning(tmp_path):
    x = tone(800, SR, 4)
    sf.write(tmp_path / "quad.wav", x, SR, subtype="FLOAT")
    a, _ = load_audio(tmp_path / "quad.wav")
    assert a.shape == (800, 4)
    s, warn = to_stereo(a)
    np.testing.assert_array_equal(s, x[:, :2])
    assert warn and "4 channels" in warn and "\n" not in warn
    same, none = to_stereo(x[:, :2])
    assert none is None and np.array_equal(same, x[:, :2])


def test_resample_22050_to_44100(tmp_path):
    sr_in = 22050
    t = np.arange(sr_in) / sr_in
    x = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    sf.write(tmp_path / "low.wav", x, sr_in, subtype="FLOAT")
    a, sr = load_audio(tmp_path / "low.wav", sample_rate=44100)
    assert sr == 44100 and a.shape == (44100, 1) and a.dtype == np.float32
    t2 = np.arange(44100) / 44100
    want = 0.5 * np.sin(2 * np.pi * 1000 * t2)
    mid = slice(2000, 42000)  # away from the filter's edge transients
    assert np.max(np.abs(a[mid, 0] - want[mid])) < 1e-3
    same, sr_same = load_audio(tmp_path / "low.wav", sample_rate=sr_in)
    assert sr_same == sr_in and np.array_equal(same[:, 0], x)


def _one_line_error(path, match):
    with pytest.raises(UserError, match=match) as info:
        load_audio(path)
    msg = str(info.value)
    assert msg and "\n" not in msg
    return msg


def test_missing_file(tmp_path):
    msg = _one_line_error(tmp_path / "nope.wav", "not found")
    assert "nope.wav" in msg


def test_empty_file(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    _one_line_error(tmp_path / "empty.wav", "empty")


def test_directory_is_not_a_file(tmp_path):
    _one_line_error(tmp_path, "not a file")


@needs_ffmpeg
def test_text_renamed_wav(tmp_path):
    (tmp_path / "notes.wav").write_text("these are not the samples you are looking for\n" * 20)
    msg = _one_line_error(tmp_path / "notes.wav", "not a readable audio file")
    assert "notes.wav" in msg


def test_all_nan_float_wav(tmp_path):
    sf.write(tmp_path / "nan.wav", np.full((500, 2), np.nan, np.float32), SR, subtype="FLOAT")
    _one_line_error(tmp_path / "nan.wav", "all samples are NaN")


def test_some_inf_samples(tmp_path):
    x = tone(500, SR, 2)
    x[10, 1] = np.inf
    sf.write(tmp_path / "inf.wav", x, SR, subtype="FLOAT")
    _one_line_error(tmp_path / "inf.wav", "1 of 1000 samples are NaN or infinite")


def test_zero_samples(tmp_path):
    sf.write(tmp_path / "zero.wav", np.zeros((0, 2), np.float32), SR, subtype="PCM_16")
    assert (tmp_path / "zero.wav").stat().st_size > 0
    _one_line_error(tmp_path / "zero.wav", "no audio samples")


# --------------------------------------------------------------------------- write_wav

def test_write_wav_float_roundtrip_and_no_temp_left(tmp_path):
    x = tone(1234, 48000, 2) * 3  # > 1 on purpose: float32 must not clip
    out = write_wav(tmp_path / "sub" / "x.wav", x, 48000)
    y, sr = sf.read(out, dtype="float32", always_2d=True)
    assert sr == 48000 and sf.info(str(out)).subtype == "FLOAT"
    np.testing.assert_array_equal(y, x)
    assert os.listdir(tmp_path / "sub") == ["x.wav"]
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not the temp file's 0600


def test_write_wav_pcm16_clips(tmp_path):
    x = np.array([[2.0, -2.0], [0.5, -0.5]], np.float32)
    write_wav(tmp_path / "p.wav", x, SR, subtype="pcm16")
    assert sf.info(str(tmp_path / "p.wav")).subtype == "PCM_16"
    y, _ = sf.read(tmp_path / "p.wav", dtype="float32")
    assert y[0, 0] == pytest.approx(1.0, abs=1e-4) and y[0, 1] == pytest.approx(-1.0, abs=1e-4)
    assert y[1, 0] == pytest.approx(0.5, abs=1e-4)


def test_write_wav_failure_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "keep.wav"
    write_wav(target, np.ones((10, 1), np.float32) * 0.25, SR)
    before = target.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(A.sf, "write", broken)
    with pytest.raises(OSError):
        write_wav(target, np.zeros((10, 1), np.float32), SR)
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["keep.wav"]


def test_write_wav_on_a_full_disk_is_one_output_error_and_no_file(tmp_path):
    with SmallDisk(tmp_path / "disk", 64 * 1024) as disk:
        if not disk.mounted:
            pytest.fail("needs root to mount a small tmpfs (make test runs as root)")
        target = tmp_path / "disk" / "big.wav"
        with pytest.raises(OutputError, match="No space left") as info:
            write_wav(target, np.zeros((44100, 2), np.float32), SR)
        assert str(target) in str(info.value) and "\n" not in str(info.value)
        assert os.listdir(tmp_path / "disk") == []


# --------------------------------------------------------------------------- truncation

def _cut(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[:keep])


@pytest.mark.parametrize("subtype", ["PCM_16", "FLOAT"])
def test_truncated_wav_declares_more_than_it_holds(tmp_path, subtype):
    path = tmp_path / "x.wav"
    sf.write(path, tone(SR, SR, 2), SR, subtype=subtype)
    assert declared_frames(path) == SR and truncation_note(path, SR) is None
    _cut(path, path.stat().st_size // 2)
    decoded = load_audio(path)[0].shape[0]
    assert declared_frames(path) == SR and 0 < decoded < SR  # libsndfile reads what is there
    note = truncation_note(path, decoded)
    assert f"declares {SR} samples" in note and f"only {decoded} could" in note


def test_truncated_flac_is_decoded_as_far_as_it_goes(tmp_path, ffmpeg):
    path = tmp_path / "x.flac"
    sf.write(path, tone(SR, SR, 2), SR)
    _cut(path, path.stat().st_size // 2)
    audio, _ = load_audio(path)  # libsndfile gives up mid-way; ffmpeg decodes what it can
    assert 0 < audio.shape[0] < SR
    assert f"declares {SR} samples" in truncation_note(path, audio.shape[0])


def test_declared_frames_unknown_for_streamed_or_headerless_files(tmp_path):
    path = tmp_path / "x.wav"
    sf.write(path, tone(100, SR, 1), SR, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    data[data.index(b"data") + 4:data.index(b"data") + 8] = b"\xff\xff\xff\xff"  # streamed
    path.write_bytes(bytes(data))
    assert declared_frames(path) is None
    (tmp_path / "t.txt").write_text("not audio")
    assert declared_frames(tmp_path / "t.txt") is None


# --------------------------------------------------------------------------- chunking

@pytest.mark.parametrize("shape", ["linear", "cosine"])
def test_crossfade_windows_sum_to_one(shape):
    n, ov = 1000, 300
    hop = n - ov
    a = crossfade_window(n, ov, fade_in=True, fade_out=True, shape=shape)
    b = crossfade_window(n, ov, fade_in=True, fade_out=True, shape=shape)
    np.testing.assert_allclose(a[hop:] + b[:ov], 1.0, atol=1e-12)
    assert np.all(a[ov:hop] == 1.0)
    assert a[0] < 0.01 and a[-1] < 0.01  # ramps reach (almost) zero at the edges
    first = crossfade_window(n, ov, fade_in=False, fade_out=True, shape=shape)
    assert first[0] == 1.0


def test_chunk_starts_cover_signal():
    for total in [1, 999, 1000, 1001, 5000, 12345]:
        starts = chunk_starts(total, 1000, 250)
        assert starts[0] == 0 and starts[-1] + 1000 >= total
        assert len(starts) == 1 or starts[-2] + 1000 < total  # no superfluous chunk
        assert all(b - a == 750 for a, b in zip(starts, starts[1:]))


def _identity(chunk):
    return {"same": chunk.copy(), "neg": -2.0 * chunk}


@pytest.mark.parametrize("total,chunk,overlap,fade,pad", [
    (10_000, 1024, 256, "linear", True),
    (10_000, 1024, 512, "cosine", True),
    (10_000, 1024, 0, "linear", True),
    (10_001, 999, 100, "cosine", False),
    (500, 1024, 256, "linear", True),      # shorter than one chunk
    (1024, 1024, 256, "linear", True),     # exactly one chunk
])
def test_chunked_identity_is_exact(total, chunk, overlap, fade, pad):
    x = np.random.default_rng(1).standard_normal((total, 2)).astype(np.float32)
    seen = []

    def fn(c):
        seen.append(c.shape)
        return _identity(c)
    out = chunked_apply(fn, x, chunk, overlap, pad_last=pad, fade=fade, progress=False)
    assert set(out) == {"same", "neg"}
    assert out["same"].shape == x.shape and out["same"].dtype == np.float32
    np.testing.assert_allclose(out["same"], x, rtol=0, atol=2e-6)
    np.testing.assert_allclose(out["neg"], -2 * x, rtol=0, atol=4e-6)
    assert len(seen) == len(chunk_starts(total, chunk, overlap))
    if total <= chunk:
        assert seen == [(total, 2)]  # one unpadded call, exactly as with chunking off
    elif pad:
        assert all(s == (chunk, 2) for s in seen)  # one fixed shape for every call
    else:
        assert all(s == (chunk, 2) for s in seen[:-1]) and seen[-1][0] <= chunk


def test_chunking_off_equals_direct_call():
    x = np.random.default_rng(2).standard_normal((3000, 2)).astype(np.float32)
    calls = []

    def fn(c):
        calls.append(c.shape)
        return {"y": np.cumsum(c, axis=0)}  # global context: chunking would change it
    for off in (None, 0):
        calls.clear()
        out = chunked_apply(fn, x, off, 500)
        assert calls == [x.shape]
        np.testing.assert_array_equal(out["y"], np.cumsum(x, axis=0))


def _local_nonlinear(c):
    """Smoothing with 301 taps (zero context past the edges), then tanh."""
    k = np.hanning(301)
    k /= k.sum()
    sm = np.stack([np.convolve(c[:, ch], k, mode="same") for ch in range(c.shape[1])], 1)
    return {"y": np.tanh(4 * sm)}


def test_local_nonlinear_fn_has_small_seams():
    rng = np.random.default_rng(3)
    x = np.cumsum(rng.standard_normal((40_000, 2)), axis=0).astype(np.float32)
    x /= np.abs(x).max()
    full = _local_nonlinear(x)["y"]
    hard = chunked_apply(_local_nonlinear, x, 8192, 0, progress=False)["y"]
    err_hard = np.max(np.abs(hard - full))
    assert err_hard > 0.05  # abutting chunks leave visible seams
    for fade, bound in [("cosine", 1e-3), ("linear", 6e-3)]:
        faded = chunked_apply(_local_nonlinear, x, 8192, 2048, fade=fade, progress=False)["y"]
        err_faded = np.max(np.abs(faded - full))
        assert err_faded < bound  # cross-fading removes most of the seam error


def test_chunked_rejects_bad_outputs_and_settings():
    x = np.zeros((5000, 2), np.float32)
    with pytest.raises(ValueError, match="expected"):
        chunked_apply(lambda c: {"y": c[:-1]}, x, 1000, 100)
    with pytest.raises(ValueError, match="overlap"):
        chunked_apply(_identity, x, 1000, 600)
    with pytest.raises(ValueError, match="expected"):
        chunked_apply(lambda c: {"y": c[:-1]}, x, 0, 0)


def _resident_mb():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024


def test_chunked_outputs_live_in_a_temporary_file_and_equal_in_memory_accumulation(
        monkeypatch):
    x = np.random.default_rng(4).standard_normal((30_000, 2)).astype(np.float32)
    spilled = chunked_apply(_local_nonlinear, x, 8192, 2048, progress=False)["y"]
    assert not spilled.flags.owndata  # a view of the file mapping, not a heap array
    monkeypatch.setattr(SpilledArray, "zeros",
                        classmethod(lambda cls, shape: cls(np.zeros(shape, np.float32))))
    in_memory = chunked_apply(_local_nonlinear, x, 8192, 2048, progress=False)["y"]
    assert in_memory.flags.owndata
    np.testing.assert_array_equal(spilled, in_memory)


def test_released_rows_leave_resident_memory_and_keep_their_values():
    rows = 16 * 2 ** 20  # 64 MB of float32
    spill = SpilledArray.zeros((rows, 1))
    spill.array[:, 0] = np.arange(rows, dtype=np.float32)
    before = _resident_mb()
    spill.release_rows(rows)
    assert before - _resident_mb() > 48
    assert spill.array[rows - 1, 0] == rows - 1 and spill.array[12345, 0] == 12345
    assert float(spill.array.sum(dtype=np.float64)) == float(rows) * (rows - 1) / 2


def test_outputs_stay_in_memory_when_no_temporary_space_can_be_reserved(monkeypatch,
                                                                        tmp_path):
    x = np.random.default_rng(5).standard_normal((20_000, 2)).astype(np.float32)
    # a full $TMPDIR: 64 kB for 160 kB outputs (a tmpfs as root)
    with SmallDisk(tmp_path / "small", 64 * 1024) as disk:
        monkeypatch.setattr(tempfile, "tempdir", disk.path)
        if not disk.mounted:  # unprivileged: the reservation fails as on a full disk
            def full_disk(fd, offset, length):
                raise OSError(errno.ENOSPC, "No space left on device")
            monkeypatch.setattr(os, "posix_fallocate", full_disk)
        out = chunked_apply(_identity, x, 4096, 1024, progress=False)
        assert os.listdir(disk.path) == []
    assert out["same"].flags.owndata
    np.testing.assert_allclose(out["same"], x, rtol=0, atol=2e-6)
