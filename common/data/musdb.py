"""MUSDB18 through the ``musdb`` package, plus training-excerpt sampling.

Opening the dataset
-------------------
``open_musdb(root, subset, split, is_wav)`` wraps ``musdb.DB``:

* ``root`` is a MUSDB18 root (``train/`` and ``test/`` folders holding
  ``<name>.stem.mp4`` files, or with ``is_wav=True`` one folder per track with
  ``mixture.wav drums.wav bass.wav other.wav vocals.wav``). ``None`` uses the
  bundled one-track root prepared by ``make setup`` (see
  :mod:`common.data.bundled`).
* ``subset='train'`` with ``split='train'`` / ``'valid'`` gives musdb's official
  split of the 100 training tracks into 86 / 14 (the 14 validation tracks are
  listed by name in musdb's ``mus.yaml``, :func:`validation_track_names`);
  ``split=None`` gives all training tracks (what D3Net trains on);
  ``subset='test'`` gives the 50 test tracks (``split`` must be ``None``).
* On the bundled root no track is an official validation track, so
  ``split='valid'`` falls back to the training track and logs a warning
  (``valid_fallback``); on any other root an empty validation split is an error.
* Every opened track is checked (:func:`check_tracks`): a ``.stem.mp4`` that is not
  a readable stem file (not audio, fewer than five streams), a track folder missing a
  stem, or a WAV file holding fewer samples than its header declares is one
  :class:`common.errors.UserError` line naming the file, before any work starts.

Training excerpts
-----------------
:class:`MUSDBExcerpts` is a dataset for :class:`common.data.loader.BatchLoader`:
sample ``i`` belongs to track ``i // samples_per_track``; each source excerpt
of ``seq_dur`` seconds starts at a uniformly drawn offset, is decoded alone
(partial decoding: musdb's ``chunk_start``/``chunk_duration`` mechanism, i.e.
``Track.load_audio(path, stem_id, start, duration)``; WAV files are read with
``soundfile`` frame-exactly), then passes through ``source_augment``; the
mixture is the sum of the (augmented) sources. With ``random_track_mix=True``
each source comes from an independently drawn track and offset (the training
recipe of the official X-UMX and D3Net code). It returns
``(mixture (channels, samples), targets (n_targets, channels, samples))`` as
float32. With ``seq_dur=None`` it yields whole tracks: musdb's real mixture and
the target stems, unaugmented (validation / test).

The augmentation hooks are pure numpy functions ``(audio, rng) -> audio`` on
one source of shape ``(channels, samples)``: :func:`random_gain`,
:func:`channel_swap`, composed with :func:`source_augmentations`. The official
code draws gains from [0.25, 1.25] for X-UMX and [0.75, 1.25] for D3Net, and
swaps stereo channels with probability 0.5 in both. :func:`plan_excerpts` is
the pure sampling rule (which track and offset each source comes from).
"""
import logging
import os
from pathlib import Path

import numpy as np

from common.data.loader import compose
from common.errors import UserError

__all__ = ["open_musdb", "check_tracks", "validation_track_names", "MUSDB_SOURCES",
           "XUMX_SOURCES", "DECODE_ERRORS", "decode_error_text",
           "random_gain", "channel_swap", "source_augmentations", "plan_excerpts",
           "read_excerpt", "MUSDBExcerpts"]

log = logging.getLogger(__name__)

MUSDB_SOURCES = ("vocals", "drums", "bass", "other")  # musdb's own source order
XUMX_SOURCES = ("bass", "drums", "vocals", "other")   # target order of the X-UMX code
STEM_STREAMS = ("mixture", "drums", "bass", "other", "vocals")  # streams of a .stem.mp4


def _decode_errors():
    """What musdb / stempeg raise for files they cannot probe or decode."""
    from ffmpeg import Error as FFmpegError
    from soundfile import LibsndfileError
    return (FFmpegError, LibsndfileError, IndexError, KeyError, ValueError, OSError)


DECODE_ERRORS = _decode_errors()


def decode_error_text(exc):
    """The useful line of a decoding error (ffprobe's own stderr when there is one)."""
    stderr = getattr(exc, "stderr", None)
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else str(exc)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:200] if lines else type(exc).__name__


def _musdb():
    try:
        import musdb
    except ImportError as exc:  # pragma: no cover - installed by make setup
        raise UserError("the `musdb` package is missing; run `make setup`") from exc
    return musdb


def _setup():
    import yaml
    musdb = _musdb()
    with open(os.path.join(musdb.__path__[0], "configs", "mus.yaml")) as f:
        return yaml.safe_load(f)


def validation_track_names():
    """musdb's built-in validation track names (the official 14-track split)."""
    return list(_setup()["validation_tracks"])


_DEFAULT = object()


def open_musdb(root=None, subset="train", split=_DEFAULT, is_wav=False, sample_rate=None,
               valid_fallback=None):
    """Open MUSDB18 (see module docstring). Returns a ``musdb.DB``.

    ``split`` defaults to 'train' for ``subset='train'`` and ``None`` for 'test'.

    ``valid_fallback``: when ``split='valid'`` finds no official validation
    track, use all training tracks instead (with a logged warning). Default:
    only for the bundled sample root.
    """
    from common.data.bundled import bundled_musdb_root, is_bundled_musdb_root
    if split is _DEFAULT:
        split = "train" if subset == "train" else None
    if subset not in ("train", "test"):
        raise UserError(f"unknown MUSDB subset {subset!r}; use 'train' or 'test'")
    if split not in (None, "train", "valid"):
        raise UserError(f"unknown MUSDB split {split!r}; use 'train', 'valid' or None")
    if subset == "test" and split is not None:
        raise UserError("the train/valid split applies to subset='train'; "
                        "use split=None for 'test'")
    root = bundled_musdb_root(is_wav) if root is None else Path(root).expanduser()
    subset_dir = root / subset
    if not subset_dir.is_dir():
        raise UserError(f"{subset_dir} does not exist; a MUSDB18 root holds train/ and test/")
    _check_format(subset_dir, is_wav)
    musdb = _musdb()

    def db(split_):
        return musdb.DB(root=str(root), subsets=subset, split=split_, is_wav=is_wav,
                        sample_rate=sample_rate)

    mus = _checked(db, split, subset_dir, is_wav)
    if len(mus) == 0 and split == "valid":
        fallback = is_bundled_musdb_root(root) if valid_fallback is None else valid_fallback
        if not fallback:
            raise UserError(f"{subset_dir} holds none of musdb's 14 validation tracks "
                            "(e.g. 'Actions - One Minute Smile'); use the full MUSDB18 or "
                            "split=None")
        mus = _checked(db, None, subset_dir, is_wav)
        log.warning("MUSDB root %s has none of the official validation tracks; validating on its "
                    "%d training track(s) instead (smoke-test data, not a real validation split)",
                    root, len(mus))
    if len(mus) == 0:
        raise UserError(f"no MUSDB tracks found in {subset_dir} (subset={subset}, split={split}, "
                        f"is_wav={is_wav})")
    return mus


def _checked(db, split, subset_dir, is_wav):
    """``db(split)``, with an unreadable file named in one line, and its tracks checked."""
    try:
        mus = db(split)
    except DECODE_ERRORS as exc:
        raise UserError(_find_unreadable(subset_dir, is_wav, exc)) from None
    check_tracks(mus.tracks)
    return mus


def _find_unreadable(subset_dir, is_wav, exc):
    """Name the file musdb failed on (it does not say which): the first one of the subset
    that ffprobe cannot read or that is not a five-stream stem file."""
    import stempeg

    if is_wav:
        files = sorted(p for d in sorted(subset_dir.iterdir()) if d.is_dir()
                       for p in d.glob("*.wav"))
    else:
        files = sorted(subset_dir.glob("*.stem.mp4"))
    for path in files:
        try:
            info = stempeg.Info(str(path))
        except DECODE_ERRORS as err:
            return f"{path}: not a readable audio file ({decode_error_text(err)})"
        if not is_wav and info.nb_audio_streams < len(STEM_STREAMS):
            return _not_a_stem_file(path, info.nb_audio_streams)
    return f"cannot read the MUSDB18 tracks in {subset_dir}: {decode_error_text(exc)}"


def _not_a_stem_file(path, streams):
    return (f"{path} is not a MUSDB18 stem file: it holds {streams} audio stream(s), a stem "
            f"file holds {len(STEM_STREAMS)} ({', '.join(STEM_STREAMS)})")


def check_tracks(tracks):
    """One-line :class:`UserError` for the first track that cannot be used: a stem file
    with fewer than five audio streams, a WAV track folder without ``mixture.wav`` or one of
    the four source files, a WAV file shorter than its header declares (cut short), or
    stems of different lengths. Reads headers only."""
    import soundfile as sf

    from common.mss.audio import declared_frames

    for track in tracks:
        if not track.is_wav:
            streams = track.info.nb_audio_streams if track.info is not None else 0
            if streams < len(STEM_STREAMS):
                raise UserError(_not_a_stem_file(track.path, streams))
            continue
        folder = Path(track.path).parent
        missing = [f"{name}.wav" for name in ("mixture",) + MUSDB_SOURCES
                   if not (folder / f"{name}.wav").is_file()]
        if missing:
            raise UserError(f"MUSDB18 track folder {folder} lacks {', '.join(missing)}")
        lengths = {}
        for name in ("mixture",) + MUSDB_SOURCES:
            path = folder / f"{name}.wav"
            try:
                frames = sf.info(str(path)).frames
            except DECODE_ERRORS as exc:
                raise UserError(f"{path}: not a readable WAV file "
                                f"({decode_error_text(exc)})") from None
            declared = declared_frames(path)
            if declared is not None and frames < declared:
                raise UserError(f"{path} is truncated: its header declares {declared} samples "
                                f"but it holds {frames}")
            lengths[name] = frames
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{k} {v}" for k, v in lengths.items())
            raise UserError(f"the stems of {folder} differ in length (samples: {shown})")


def _check_format(subset_dir, is_wav):
    entries = list(os.scandir(subset_dir))
    stems = [e for e in entries if e.is_file() and e.name.endswith(".stem.mp4")]
    dirs = [e for e in entries if e.is_dir()]
    if is_wav and not dirs and stems:
        raise UserError(f"{subset_dir} holds .stem.mp4 files, not WAV track folders; "
                        "use is_wav=False, i.e. drop --is-wav (or convert with `musdbconvert`)")
    if not is_wav and not stems and dirs:
        raise UserError(f"{subset_dir} holds track folders but no .stem.mp4 files; "
                        "use is_wav=True (--is-wav) for the WAV layout")


# ---- augmentation hooks: (audio (channels, samples), rng) -> audio ----------------------

def random_gain(low=0.25, high=1.25):
    """Scale a source by a gain drawn uniformly from ``[low, high)``."""
    if not low <= high:
        raise ValueError(f"gain range [{low}, {high}] is empty")

    def hook(audio, rng):
        return audio * np.asarray(rng.uniform(low, high), dtype=audio.dtype)
    return hook


def channel_swap(p=0.5):
    """Swap the two channels of a stereo source with probability ``p`` (mono unchanged)."""
    def hook(audio, rng):
        if audio.shape[0] == 2 and rng.random() < p:
            return audio[::-1].copy()
        return audio
    return hook


def source_augmentations(names=("gain", "channelswap"), gain_range=(0.25, 1.25), swap_p=0.5):
    """Compose hooks by name ('gain', 'channelswap'), as the papers' ``--source-augmentations``."""
    table = {"gain": lambda: random_gain(*gain_range), "channelswap": lambda: channel_swap(swap_p)}
    unknown = [n for n in names if n not in table]
    if unknown:
        raise UserError(f"unknown source augmentation(s) {unknown}; choose from {sorted(table)}")
    return compose(*[table[n]() for n in names])


def plan_excerpts(rng, durations, n_sources, seq_dur, track_index=None):
    """Where each source's excerpt comes from.

    Returns ``(tracks int (n_sources,), starts float seconds (n_sources,))``.
    ``track_index=None`` mixes across tracks: every source gets an independently
    drawn track and offset. Otherwise all sources come from ``track_index`` and
    share one offset (a coherent excerpt). Offsets are uniform in
    ``[0, duration - seq_dur]`` (0 for tracks shorter than ``seq_dur``).
    """
    durations = np.asarray(durations, dtype=np.float64)
    if track_index is None:
        tracks = rng.integers(0, len(durations), size=n_sources)
        room = np.maximum(durations[tracks] - seq_dur, 0.0)
        starts = rng.uniform(0.0, 1.0, size=n_sources) * room
    else:
        tracks = np.full(n_sources, int(track_index))
        room = max(durations[track_index] - seq_dur, 0.0)
        starts = np.full(n_sources, rng.uniform(0.0, 1.0) * room)
    return tracks, starts


def _fix_length(audio, n):
    """``(channels, m)`` -> ``(channels, n)`` by trimming or zero-padding at the end."""
    if audio.shape[1] >= n:
        return audio[:, :n]
    return np.pad(audio, ((0, 0), (0, n - audio.shape[1])))


def _read_stream(track, path, stem_id, start, duration, n):
    if track.is_wav and (track.sample_rate is None or track.sample_rate == track.rate):
        import soundfile as sf
        frame0 = int(round(start * track.rate))
        audio, _ = sf.read(path, start=frame0, frames=n if duration is not None else -1,
                           dtype="float32", always_2d=True)
    else:
        audio = track.load_audio(path, stem_id, start, duration, track.sample_rate)
    audio = np.asarray(audio, dtype=np.float32).T
    if duration is not None:
        audio = _fix_length(audio, n)
    return audio


def read_excerpt(track, name="mixture", start=0.0, duration=None):
    """Decode ``duration`` seconds (``None``: to the end) from ``start`` of one stream
    of a musdb track, as float32 ``(channels, samples)``.

    ``name`` is 'mixture', a source ('vocals', 'drums', 'bass', 'other') or a
    musdb target made of sources (e.g. 'accompaniment'). With a duration the
    result has exactly ``round(duration * rate)`` samples (zero-padded past the
    end of the track).
    """
    rate = track.sample_rate or track.rate
    n = int(round(duration * rate)) if duration is not None else None
    if name == "mixture":
        return _read_stream(track, track.path, track.stem_id, start, duration, n)
    if name in track.sources:
        src = track.sources[name]
        return _read_stream(track, src.path, src.stem_id, start, duration, n)
    if name in track.targets:
        parts = [s.gain * _read_stream(track, s.path, s.stem_id, start, duration, n)
                 for s in track.targets[name].sources]
        if duration is None:
            m = min(p.shape[1] for p in parts)
            parts = [p[:, :m] for p in parts]
        return np.sum(parts, axis=0).astype(np.float32)
    raise UserError(f"track {track.name!r} has no stream {name!r}; "
                    f"sources {sorted(track.sources)}, targets {sorted(track.targets)}")


class MUSDBExcerpts:
    """Random-excerpt training dataset over musdb tracks (see module docstring).

    Parameters
    ----------
    tracks : ``musdb.DB`` or list of musdb tracks
    targets : names stacked into the target array (sources or musdb targets
        such as 'accompaniment'); default the X-UMX order bass, drums, vocals, other
    seq_dur : excerpt length in seconds, or ``None`` for whole tracks (eval)
    samples_per_track : samples per track per epoch (``seq_dur=None``: 1)
    source_augment : hook ``(audio, rng) -> audio`` applied to every source
    random_track_mix : draw every source from an independent random track
    sources : the sources summed into the mixture (default all four)
    """

    def __init__(self, tracks, targets=XUMX_SOURCES, seq_dur=6.0, samples_per_track=64,
                 source_augment=None, random_track_mix=False, sources=MUSDB_SOURCES):
        self.tracks = list(tracks.tracks if hasattr(tracks, "tracks") else tracks)
        if not self.tracks:
            raise UserError("MUSDBExcerpts needs at least one track")
        self.targets = tuple(targets)
        self.sources = tuple(sources)
        self.seq_dur = seq_dur
        self.samples_per_track = 1 if seq_dur is None else int(samples_per_track)
        self.source_augment = source_augment
        self.random_track_mix = bool(random_track_mix)
        t0 = self.tracks[0]
        missing = [s for s in self.sources if s not in t0.sources]
        if missing:
            raise UserError(f"track {t0.name!r} lacks source(s) {missing}")
        # each target as weights over self.sources (a source, or a musdb target of sources)
        self._weights = np.zeros((len(self.targets), len(self.sources)), dtype=np.float32)
        for k, name in enumerate(self.targets):
            if name in self.sources:
                self._weights[k, self.sources.index(name)] = 1.0
            elif name in t0.targets:
                for s in t0.targets[name].sources:
                    if s.name not in self.sources:
                        raise UserError(f"target {name!r} uses source {s.name!r}, "
                                        f"not among {self.sources}")
                    self._weights[k, self.sources.index(s.name)] = s.gain
            else:
                raise UserError(f"unknown target {name!r}; sources {sorted(t0.sources)}, "
                                f"targets {sorted(t0.targets)}")
        self.durations = np.array([t.duration for t in self.tracks], dtype=np.float64)
        rates = {t.sample_rate or t.rate for t in self.tracks}
        if len(rates) != 1:
            raise UserError(f"tracks have different sample rates {sorted(rates)}")
        self.rate = rates.pop()

    def __len__(self):
        return len(self.tracks) * self.samples_per_track

    def __getitem__(self, i, rng=None):
        if not 0 <= i < len(self):
            raise IndexError(i)
        track_index = i // self.samples_per_track
        if rng is None:
            rng = np.random.default_rng(i)
        if self.seq_dur is None:
            track = self.tracks[track_index]
            mixture = read_excerpt(track, "mixture")
            targets = [read_excerpt(track, name) for name in self.targets]
            m = min([mixture.shape[1]] + [t.shape[1] for t in targets])
            return mixture[:, :m], np.stack([t[:, :m] for t in targets])
        track_ids, starts = plan_excerpts(
            rng, self.durations, len(self.sources), self.seq_dur,
            track_index=None if self.random_track_mix else track_index)
        stems = []
        for name, t, start in zip(self.sources, track_ids, starts):
            audio = read_excerpt(self.tracks[t], name, float(start), self.seq_dur)
            if self.source_augment is not None:
                audio = self.source_augment(audio, rng)
            stems.append(audio)
        stems = np.stack(stems).astype(np.float32, copy=False)   # (n_sources, C, S)
        mixture = stems.sum(axis=0)
        targets = np.einsum("ts,scn->tcn", self._weights, stems)
        return mixture, targets.astype(np.float32, copy=False)
