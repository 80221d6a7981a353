import logging
import re
import shutil

import numpy as np
import pytest
import soundfile as sf

from common.data import musdb as md
from common.data.loader import BatchLoader
from common.dev.mss_testing import broken_stem_root
from common.errors import UserError

pytestmark = pytest.mark.usefixtures("ffmpeg")  # musdb decodes with ffmpeg/ffprobe

RATE = 16000
N = RATE  # 1 s tracks
SOURCES = ("drums", "bass", "other", "vocals")
RAMP = 0.05
TOL = 16  # start-sample tolerance: 16-bit quantisation of the ramp
# official validation track name -> lands in split='valid'
TRAIN_TRACKS = ("Actions - One Minute Smile", "Alpha - First", "Beta - Second")
TEST_TRACKS = ("Gamma - Third",)


def _level(t, k, c):
    """Constant offset identifying (track t, source k, channel c); channel 1 is negative."""
    return (0.02 * (t + 1) + 0.005 * k) * (1 if c == 0 else -1)


def _signal(t, k):
    """(samples, 2): level + a ramp that encodes the sample position."""
    ramp = RAMP * np.arange(N) / N
    return np.stack([_level(t, k, c) + ramp for c in (0, 1)], axis=1)


def _make_wav_root(root):
    for subset, names, offset in (("train", TRAIN_TRACKS, 0),
                                  ("test", TEST_TRACKS, len(TRAIN_TRACKS))):
        for j, name in enumerate(names):
            d = root / subset / name
            d.mkdir(parents=True)
            t = offset + j
            stems = {s: _signal(t, k) for k, s in enumerate(SOURCES)}
            for s, x in stems.items():
                sf.write(d / f"{s}.wav", x, RATE, subtype="PCM_16")
            sf.write(d / "mixture.wav", sum(stems.values()), RATE, subtype="PCM_16")
    return root


@pytest.fixture(scope="module")
def wav_root(tmp_path_factory):
    return _make_wav_root(tmp_path_factory.mktemp("musdb_wav"))


def _identify(x):
    """(channels, samples) excerpt of one source -> (track, source, start sample)."""
    level = x[0, 0] - (x[0, 0] + x[1, 0]) / 2  # (l0 + r) - ((l0 + r) + (-l0 + r)) / 2 = l0
    best = min(((t, k) for t in range(4) for k in range(4)),
               key=lambda tk: abs(_level(tk[0], tk[1], 0) - level))
    start = int(round(((x[0, 0] + x[1, 0]) / 2) / RAMP * N))
    return best[0], best[1], start


def test_validation_list_has_14_tracks():
    names = md.validation_track_names()
    assert len(names) == len(set(names)) == 14
    assert "Actions - One Minute Smile" in names


def test_open_splits(wav_root):
    all_train = md.open_musdb(wav_root, "train", split=None, is_wav=True)
    assert [t.name for t in all_train] == sorted(TRAIN_TRACKS)
    train = md.open_musdb(wav_root, "train", split="train", is_wav=True)
    assert [t.name for t in train] == ["Alpha - First", "Beta - Second"]
    valid = md.open_musdb(wav_root, split="valid", is_wav=True)
    assert [t.name for t in valid] == [TRAIN_TRACKS[0]]
    test = md.open_musdb(wav_root, "test", is_wav=True)  # split defaults to None for test
    assert [t.name for t in test] == list(TEST_TRACKS)
    with pytest.raises(UserError, match="split"):
        md.open_musdb(wav_root, "test", split="train", is_wav=True)
    with pytest.raises(UserError, match="is_wav=True"):
        md.open_musdb(wav_root, "train", is_wav=False)
    with pytest.raises(UserError, match="does not exist"):
        md.open_musdb(wav_root / "nope", "train", is_wav=True)


def test_valid_fallback_only_when_asked(tmp_path, caplog):
    root = tmp_path / "r"
    (root / "train").mkdir(parents=True)
    shutil.copytree(_make_wav_root(tmp_path / "src") / "train" / "Alpha - First",
                    root / "train" / "Alpha - First")
    with pytest.raises(UserError, match="validation tracks"):
        md.open_musdb(root, split="valid", is_wav=True)
    with caplog.at_level(logging.WARNING, logger="common.data.musdb"):
        db = md.open_musdb(root, split="valid", is_wav=True, valid_fallback=True)
    assert [t.name for t in db] == ["Alpha - First"]
    assert "validating on its 1 training track" in caplog.text


def test_musdb_reads_wav_and_mixture_is_sum(wav_root):
    track = md.open_musdb(wav_root, split=None, is_wav=True)[1]
    mix = track.audio
    assert mix.shape == (N, 2) and track.rate == RATE
    total = sum(track.targets[s].audio for s in SOURCES)
    assert np.abs(mix - total).max() < 1e-3
    np.testing.assert_allclose(track.targets["drums"].audio, _signal(1, 0), atol=1e-4)
    acc = track.targets["accompaniment"].audio
    np.testing.assert_allclose(acc, _signal(1, 0) + _signal(1, 1) + _signal(1, 2), atol=1e-3)


def test_read_excerpt_exact_and_padded(wav_root):
    track = md.open_musdb(wav_root, split=None, is_wav=True)[2]
    x = md.read_excerpt(track, "bass", start=0.25, duration=0.5)
    assert x.shape == (2, RATE // 2) and x.dtype == np.float32
    np.testing.assert_allclose(x, _signal(2, 1)[RATE // 4: RATE // 4 + RATE // 2].T, atol=1e-4)
    tail = md.read_excerpt(track, "vocals", start=0.75, duration=0.5)
    assert tail.shape == (2, RATE // 2)
    assert np.abs(tail[:, RATE // 4:]).max() == 0  # past the end: zeros
    acc = md.read_excerpt(track, "accompaniment", 0.1, 0.2)
    parts = sum(md.read_excerpt(track, s, 0.1, 0.2) for s in ("drums", "bass", "other"))
    np.testing.assert_allclose(acc, parts, atol=1e-6)
    with pytest.raises(UserError, match="no stream"):
        md.read_excerpt(track, "piano")


def test_coherent_excerpts_follow_the_plan(wav_root):
    db = md.open_musdb(wav_root, split=None, is_wav=True)
    ds = md.MUSDBExcerpts(db, targets=SOURCES, seq_dur=0.25, samples_per_track=3)
    assert len(ds) == 9
    for i in (0, 4, 8):
        mix, tgt = ds.__getitem__(i, np.random.default_rng(i + 100))
        assert mix.shape == (2, RATE // 4) and tgt.shape == (4, 2, RATE // 4)
        assert tgt.dtype == np.float32
        np.testing.assert_allclose(mix, tgt.sum(0), atol=1e-6)
        tracks, starts = md.plan_excerpts(np.random.default_rng(i + 100), ds.durations, 4, 0.25,
                                          track_index=i // 3)
        for k, s in enumerate(SOURCES):
            # dataset sources are in MUSDB_SOURCES order; targets in SOURCES order
            t, kk, start = _identify(tgt[k])
            assert (t, SOURCES[kk]) == (i // 3, s)
            assert abs(start - starts[0] * RATE) <= TOL
        assert len(set(starts)) == 1 and set(tracks) == {i // 3}


def test_random_track_mix_draws_sources_from_several_tracks(wav_root):
    db = md.open_musdb(wav_root, split=None, is_wav=True)
    ds = md.MUSDBExcerpts(db, targets=md.MUSDB_SOURCES, seq_dur=0.1, samples_per_track=4,
                          random_track_mix=True)
    mixed = 0
    for i in range(6):
        rng_seed = 7 + i
        _, tgt = ds.__getitem__(i, np.random.default_rng(rng_seed))
        tracks, starts = md.plan_excerpts(np.random.default_rng(rng_seed), ds.durations, 4, 0.1)
        got = [_identify(tgt[k]) for k in range(4)]
        assert [g[0] for g in got] == tracks.tolist()
        assert [SOURCES[g[1]] for g in got] == list(md.MUSDB_SOURCES)
        assert all(abs(g[2] - s * RATE) <= TOL for g, s in zip(got, starts))
        mixed += len(set(tracks.tolist())) > 1
    assert mixed >= 3


def test_gain_and_channel_swap_hooks():
    x = np.stack([np.ones(100), -np.ones(100)]).astype(np.float32)
    g = md.random_gain(0.25, 1.25)
    gains = [g(x, np.random.default_rng(s))[0, 0] for s in range(200)]
    assert 0.25 <= min(gains) and max(gains) < 1.25 and max(gains) - min(gains) > 0.8
    assert g(x, np.random.default_rng(1)).dtype == np.float32
    assert np.array_equal(g(x, np.random.default_rng(3)), g(x, np.random.default_rng(3)))
    assert np.array_equal(md.channel_swap(1.0)(x, np.random.default_rng(0)), x[::-1])
    assert np.array_equal(md.channel_swap(0.0)(x, np.random.default_rng(0)), x)
    mono = x[:1]
    assert md.channel_swap(1.0)(mono, np.random.default_rng(0)) is mono
    swaps = [md.channel_swap()(x, np.random.default_rng(s))[0, 0] < 0 for s in range(200)]
    assert 60 < sum(swaps) < 140
    with pytest.raises(UserError):
        md.source_augmentations(["gain", "reverb"])


def test_augmented_excerpts_scale_and_swap_per_source(wav_root):
    db = md.open_musdb(wav_root, split=None, is_wav=True)
    plain = md.MUSDBExcerpts(db, targets=md.MUSDB_SOURCES, seq_dur=0.1, samples_per_track=2)
    aug = md.MUSDBExcerpts(db, targets=md.MUSDB_SOURCES, seq_dur=0.1, samples_per_track=2,
                           source_augment=md.source_augmentations(gain_range=(0.75, 1.25)))
    ratios, swapped = [], 0
    for i in range(6):
        _, p = plain.__getitem__(i, np.random.default_rng(i))
        m, a = aug.__getitem__(i, np.random.default_rng(i))  # same plan: drawn before the hooks
        np.testing.assert_allclose(m, a.sum(0), atol=1e-6)
        for k in range(4):
            # channel 0 minus channel 1 is 2 * level > 0 in the files; a swap flips its sign
            r = (a[k, 0] - a[k, 1]) / (p[k, 0] - p[k, 1])
            swapped += r[0] < 0
            r = np.abs(r)
            assert np.allclose(r, r.mean(), rtol=5e-3)  # one gain for the whole source
            ratios.append(r.mean())
    assert 0.749 <= min(ratios) and max(ratios) <= 1.251 and max(ratios) - min(ratios) > 0.2
    assert 0 < swapped < 24


def test_eval_mode_whole_tracks_and_loader(wav_root):
    test = md.open_musdb(wav_root, "test", is_wav=True)
    ev = md.MUSDBExcerpts(test, seq_dur=None)
    assert len(ev) == 1
    mix, tgt = ev[0]
    assert mix.shape == (2, N) and tgt.shape == (4, 2, N)
    assert np.abs(mix - tgt.sum(0)).max() < 1e-3
    np.testing.assert_allclose(tgt[0], _signal(3, 1).T, atol=1e-4)  # X-UMX order: bass first

    db = md.open_musdb(wav_root, split="train", is_wav=True)
    ds = md.MUSDBExcerpts(db, seq_dur=0.05, samples_per_track=4, random_track_mix=True,
                          source_augment=md.source_augmentations())
    a = BatchLoader(ds, batch_size=3, seed=1)
    b = BatchLoader(ds, batch_size=3, seed=1, num_threads=2)
    assert len(a) == 2
    (xa, ya), (xb, yb) = a.next(), b.next()
    assert xa.shape == (3, 2, 800) and ya.shape == (3, 4, 2, 800)
    assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
    b.close()


def test_unknown_target(wav_root):
    db = md.open_musdb(wav_root, split=None, is_wav=True)
    with pytest.raises(UserError, match="unknown target"):
        md.MUSDBExcerpts(db, targets=("vocals", "piano"))
    acc = md.MUSDBExcerpts(db, targets=("vocals", "accompaniment"), seq_dur=0.1,
                           samples_per_track=1)
    mix, tgt = acc.__getitem__(0, np.random.default_rng(0))
    np.testing.assert_allclose(tgt.sum(0), mix, atol=1e-6)


def _bundled_stems_root():
    from common.data.bundled import _musdb_ready, _musdb_target
    root = _musdb_target(False)
    if not _musdb_ready(root, False):
        pytest.fail("bundled MUSDB sample not prepared (run `make setup`)")
    return root


def test_bundled_stems_root(caplog):
    _bundled_stems_root()
    db = md.open_musdb()  # root=None -> bundled
    assert [t.name for t in db] == ["The Easton Ellises - Falcon 69"]
    track = db[0]
    assert track.rate == 44100 and 6.0 < track.duration < 6.2
    with caplog.at_level(logging.WARNING, logger="common.data.musdb"):
        valid = md.open_musdb(split="valid")
    assert len(valid) == 1 and "none of the official validation tracks" in caplog.text
    assert len(md.open_musdb(subset="test")) == 1
    ex = md.read_excerpt(track, "vocals", start=1.0, duration=0.5)
    assert ex.shape == (2, 22050)
    full = np.asarray(track.targets["vocals"].audio, dtype=np.float32).T
    np.testing.assert_allclose(ex, full[:, 44100:44100 + 22050], atol=1e-4)  # partial decode
    assert np.abs(ex).max() > 0.01  # real audio, not silence


# ---- broken datasets: one line naming the file ----------------------------------------

def _one_track_root(tmp_path, wav_root, subset="test"):
    root = tmp_path / "r"
    shutil.copytree(wav_root / "test" / TEST_TRACKS[0], root / subset / TEST_TRACKS[0])
    (root / ("train" if subset == "test" else "test")).mkdir()
    return root, root / subset / TEST_TRACKS[0]


@pytest.mark.parametrize("damage,fragment", [
    ("missing", "lacks bass.wav"),
    ("truncated", "vocals.wav is truncated: its header declares 16000 samples"),
    ("shorter", "differ in length"),
    ("text", "drums.wav: not a readable"),
])
def test_broken_wav_tracks_are_one_line_naming_the_file(tmp_path, wav_root, damage, fragment):
    root, folder = _one_track_root(tmp_path, wav_root)
    if damage == "missing":
        (folder / "bass.wav").unlink()
    elif damage == "truncated":
        data = (folder / "vocals.wav").read_bytes()
        (folder / "vocals.wav").write_bytes(data[:len(data) // 2])
    elif damage == "shorter":
        sf.write(folder / "other.wav", _signal(3, 2)[:N // 2], RATE, subtype="PCM_16")
    else:
        (folder / "drums.wav").write_text("not audio")
    with pytest.raises(UserError, match=fragment) as info:
        md.open_musdb(root, "test", is_wav=True)
    assert "\n" not in str(info.value) and str(folder) in str(info.value)


@pytest.mark.parametrize("content,fragment", [
    ("text", "not a readable audio file"),
    ("one stream", "not a MUSDB18 stem file: it holds 1 audio stream(s)"),
])
def test_broken_stem_files_are_one_line_naming_the_file(tmp_path, content, fragment):
    root = tmp_path / "r"
    stem = broken_stem_root(root, content)
    with pytest.raises(UserError, match=re.escape(fragment)) as info:
        md.open_musdb(root, "test")
    assert str(stem) in str(info.value) and "\n" not in str(info.value)
