"""Audio I/O and long-signal processing shared by the separation papers.

* :func:`load_audio` reads anything ffmpeg can decode into a float32
  ``(samples, channels)`` array, optionally resampled with soxr;
  :func:`declared_frames` / :func:`truncation_note` tell a file cut short (its header
  promises more samples than it holds) from a complete one.
* :func:`check_layout` refuses an array that is not clearly ``(samples, channels)``;
  :func:`to_stereo` adapts channel counts for stereo models and :func:`match_channels` gives
  estimates the channel count asked for; :func:`at_model_rate` lets a separator take audio at
  any sample rate.
* :func:`write_wav` writes a WAV file atomically (a full disk is one line, no partial file);
  :class:`AudioFormat` writes WAV (float32, 16 or 24 bit), FLAC (16 or 24 bit) or MP3 (ffmpeg,
  at a bitrate) the same way, and :func:`limit_peaks` applies its clipping choice.
* :func:`chunked_apply` runs a model over a long signal in fixed-size,
  cross-faded chunks, with a progress bar that :func:`common.terminal.ticking` keeps
  updating during a long chunk (a short clip on the slow nnabla CPU path is one call of minutes).

Every problem a user can cause (missing file, not audio, NaN samples...) raises
:class:`common.errors.UserError` with a one-line message.
"""
import io
import json
import math
import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from common.errors import UserError
from common.fileio import atomic_write
from common import terminal
from common.terminal import progress as terminal_progress

__all__ = [
    "load_audio",
    "declared_frames",
    "truncation_note",
    "resample",
    "check_layout",
    "to_stereo",
    "match_channels",
    "at_model_rate",
    "fix_length",
    "write_wav",
    "AudioFormat",
    "limit_peaks",
    "chunk_starts",
    "crossfade_window",
    "chunked_apply",
    "SpilledArray",
]

# WAV subtypes accepted by write_wav (aliases -> libsndfile subtype).
WAV_SUBTYPES = {
    "float32": "FLOAT",
    "float": "FLOAT",
    "FLOAT": "FLOAT",
    "pcm16": "PCM_16",
    "int16": "PCM_16",
    "PCM_16": "PCM_16",
    "pcm24": "PCM_24",
    "PCM_24": "PCM_24",
}


# --------------------------------------------------------------------------- loading

def _one_line(text, limit=200):
    """Last non-empty line of a tool's stderr, trimmed, for an error message."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    line = lines[-1] if lines else "unknown error"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _read_soundfile(path):
    """Decode with libsndfile; ``None`` when libsndfile cannot read the file."""
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        return None
    return audio, int(sr)


def _probe_ffmpeg(path):
    """``(sample_rate, channels)`` of the first audio stream, via ffprobe."""
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        raise UserError(f"cannot decode '{path}': ffprobe (part of ffmpeg) is not installed")
    cmd = [ffprobe, "-v", "error", "-select_streams", "a:0",
           "-show_entries", "stream=sample_rate,channels", "-of", "json", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise UserError(f"'{path}' is not a readable audio file "
                        f"(ffprobe: {_one_line(proc.stderr)})")
    try:
        streams = json.loads(proc.stdout or "{}").get("streams", [])
    except json.JSONDecodeError:
        streams = []
    if not streams:
        raise UserError(f"'{path}' contains no audio stream")
    try:
        sr = int(streams[0]["sample_rate"])
        channels = int(streams[0]["channels"])
    except (KeyError, TypeError, ValueError):
        raise UserError(f"'{path}': ffprobe reports no sample rate / channel count") from None
    if sr <= 0 or channels <= 0:
        raise UserError(f"'{path}': invalid audio stream ({channels} channels at {sr} Hz)")
    return sr, channels


def _read_ffmpeg(path):
    """Decode the first audio stream with the ffmpeg binary to float32 PCM."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise UserError(f"cannot decode '{path}': ffmpeg is not installed")
    sr, channels = _probe_ffmpeg(path)
    # Ask for the probed rate and channel count explicitly so the raw stream's
    # layout is known even if a decoder would otherwise change it mid-stream.
    cmd = [ffmpeg, "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0",
           "-f", "f32le", "-acodec", "pcm_f32le", "-ac", str(channels), "-ar", str(sr),
           "pipe:1"]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        msg = _one_line(proc.stderr.decode("utf-8", "replace"))
        raise UserError(f"'{path}' is not a readable audio file (ffmpeg: {msg})")
    raw = proc.stdout
    usable = len(raw) - len(raw) % (4 * channels)
    audio = np.frombuffer(raw[:usable], dtype="<f4").reshape(-1, channels)
    return audio.astype(np.float32), sr


def load_audio(path, sample_rate=None):
    """Read an audio file as ``(audio, sr)``.

    ``audio`` is a C-contiguous float32 array of shape ``(samples, channels)``.
    WAV/FLAC/OGG/MP3 are read with libsndfile when it can; anything else (or
    anything libsndfile rejects) is decoded with the ``ffmpeg`` binary, so every
    format ffmpeg reads is accepted. With ``sample_rate`` given and different
    from the file's rate, the audio is resampled with soxr (quality ``HQ``) and
    ``sr == sample_rate``; the new length is ``round(n * sample_rate / file_rate)``.

    Raises :class:`UserError` (one line) for a missing or empty file, a file
    that is not audio, audio with no samples, or any non-finite sample.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"input file not found: '{path}'")
    if not path.is_file():
        raise UserError(f"input is not a file: '{path}'")
    if path.stat().st_size == 0:
        raise UserError(f"input file is empty (0 bytes): '{path}'")
    if not os.access(path, os.R_OK):
        raise UserError(f"input file is not readable (permission denied): '{path}'")

    loaded = _read_soundfile(path)
    if loaded is None:
        loaded = _read_ffmpeg(path)
    audio, sr = loaded
    if audio.ndim != 2 or audio.shape[1] == 0 or audio.shape[0] == 0:
        raise UserError(f"'{path}' contains no audio samples")
    finite = np.isfinite(audio)
    if not finite.all():
        bad = int(audio.size - np.count_nonzero(finite))
        what = "all samples are" if bad == audio.size else f"{bad} of {audio.size} samples are"
        raise UserError(f"'{path}': {what} NaN or infinite")
    if sample_rate is not None and int(sample_rate) != sr:
        audio = resample(audio, sr, int(sample_rate))
        if audio.shape[0] == 0:
            raise UserError(f"'{path}' is too short to resample from {sr} Hz to {sample_rate} Hz")
        sr = int(sample_rate)
    return np.ascontiguousarray(audio, dtype=np.float32), sr


_NOT_WAV = object()


def _wav_declared_frames(path):
    """Frames the ``data`` chunk of a RIFF/WAVE header declares; None when the header does
    not say (streamed files write 0 or 0xFFFFFFFF there); ``_NOT_WAV`` for other files."""
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return _NOT_WAV
        block_align = None
        while True:
            chunk = fh.read(8)
            if len(chunk) < 8:
                return None
            ident, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if ident == b"fmt ":
                fmt = fh.read(size + size % 2)
                if len(fmt) < 14:
                    return None
                block_align = struct.unpack("<H", fmt[12:14])[0]
            elif ident == b"data":
                if not block_align or size in (0, 0xFFFFFFFF):
                    return None
                return size // block_align
            else:
                fh.seek(size + size % 2, os.SEEK_CUR)


def declared_frames(path):
    """Samples per channel that the file's header declares: for WAV the ``data`` chunk size
    (not libsndfile's count, which it silently cuts to the data present), else what
    libsndfile reads from the header (FLAC, OGG, AIFF...). None when the header does not say
    (e.g. a streamed WAV, MP3, or formats only ffmpeg reads)."""
    try:
        frames = _wav_declared_frames(path)
        if frames is not _NOT_WAV:
            return frames
        return int(sf.info(str(path)).frames) or None
    except (OSError, RuntimeError, TypeError, ValueError, struct.error):
        return None


def truncation_note(path, decoded):
    """``None``, or one line saying that ``path`` holds fewer samples (``decoded``) than its
    header declares (a download or copy cut short)."""
    declared = declared_frames(path)
    if declared is None or decoded >= declared:
        return None
    return (f"truncated: its header declares {declared} samples per channel but only "
            f"{decoded} could be decoded")


def resample(audio, sr_in, sr_out, quality="HQ"):
    """Resample a ``(samples, channels)`` array with soxr; a no-op when the rates match."""
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    if int(sr_in) == int(sr_out):
        return audio
    out = soxr.resample(audio, int(sr_in), int(sr_out), quality=quality)
    return np.ascontiguousarray(out, dtype=np.float32)


def check_layout(audio):
    """``audio`` as a ``(samples, channels)`` array (1-D counts as mono).

    Raises :class:`UserError` (one line) instead of guessing when the layout is not clear:
    more channels than samples (e.g. ``(2, 44100)``, which is ``(channels, samples)``: pass
    its transpose), no samples or channels, or more than two dimensions."""
    audio = np.asarray(audio)
    if audio.ndim == 1:
        audio = audio[:, None]
    if audio.ndim != 2 or 0 in audio.shape:
        raise UserError(f"audio must be a (samples, channels) array, got shape {audio.shape}")
    if audio.shape[1] > audio.shape[0]:
        raise UserError(f"audio of shape {audio.shape} has more channels than samples; "
                        "separation takes (samples, channels): pass audio.T if it is "
                        "(channels, samples)")
    return audio


def to_stereo(audio):
    """Return ``(stereo_audio, warning)`` for a ``(samples, channels)`` (or 1-D mono) array.

    Mono is duplicated to two channels; stereo is returned unchanged; with more
    than two channels only the first two are kept and ``warning`` is a one-line
    message saying so (the caller decides how to show it). ``warning`` is
    ``None`` otherwise. An unclear layout is refused (:func:`check_layout`).
    """
    audio = check_layout(audio)
    channels = audio.shape[1]
    if channels == 1:
        return np.repeat(audio, 2, axis=1), None
    if channels == 2:
        return audio, None
    return (np.ascontiguousarray(audio[:, :2]),
            f"input has {channels} channels; only the first two are used")


def match_channels(audio, channels):
    """``(samples, c)`` estimates with ``channels`` (1 or 2) channels: a mono result is the mean
    of the channels (for a mono input, the mean of what a stereo model made of its two
    copies), a stereo one repeats a mono estimate."""
    if channels not in (1, 2):
        raise ValueError(f"channels must be 1 or 2, got {channels!r}")
    if audio.shape[1] == channels:
        return audio
    if channels == 1:
        return audio.mean(axis=1, keepdims=True, dtype=np.float32)
    return np.repeat(audio[:, :1], 2, axis=1)


def at_model_rate(audio, sample_rate, model_rate):
    """``(audio_at_model_rate, back)`` for a separator given ``audio`` at ``sample_rate``.

    The layout is checked (:func:`check_layout`); ``sample_rate`` ``None`` means the model's
    own rate. ``back(estimates)`` turns a dict of estimates at ``model_rate`` into estimates at
    ``sample_rate`` with the input's exact length (the round trip may shift it by a sample);
    at the model's rate it returns them unchanged."""
    audio = check_layout(audio)
    if sample_rate is None or int(sample_rate) == int(model_rate):
        return audio, lambda estimates: estimates
    if isinstance(sample_rate, bool) or int(sample_rate) != sample_rate or sample_rate <= 0:
        raise UserError(f"sample_rate must be a positive whole number of Hz, got {sample_rate!r}")
    length = audio.shape[0]
    x = resample(audio, sample_rate, model_rate)
    if x.shape[0] == 0:
        raise UserError(f"audio too short ({length} samples) to resample from {sample_rate} Hz "
                        f"to {model_rate} Hz")

    def back(estimates):
        return type(estimates)(
            (name, fix_length(resample(est, model_rate, sample_rate), length))
            for name, est in estimates.items())
    return x, back


def fix_length(audio, length):
    """Crop or zero-pad ``audio`` along axis 0 to exactly ``length`` samples."""
    n = audio.shape[0]
    if n == length:
        return audio
    if n > length:
        return audio[:length]
    pad = np.zeros((length - n,) + audio.shape[1:], dtype=audio.dtype)
    return np.concatenate([audio, pad], axis=0)


def write_wav(path, audio, sr, subtype="float32"):
    """Write ``audio`` (``(samples, channels)`` or 1-D) to a WAV file atomically.

    The file is encoded in memory and written through :func:`common.fileio.atomic_write`:
    ``path`` appears only complete, and a full disk or an unwritable folder is one
    :class:`common.fileio.OutputError` naming ``path`` and the cause (libsndfile writing to
    a file itself would report a full disk only as "System error", and a Python file object
    given to it turns the failure into a traceback printed from a C callback). ``subtype``
    is ``"float32"`` (default, no clipping) or ``"pcm16"`` / ``"pcm24"`` (values are clipped
    to [-1, 1] first). The parent directory is created if needed.
    """
    if subtype not in WAV_SUBTYPES:
        raise ValueError(f"unknown WAV subtype {subtype!r}; choose from {sorted(WAV_SUBTYPES)}")
    sf_subtype = WAV_SUBTYPES[subtype]
    data = np.asarray(audio, dtype=np.float32)
    if sf_subtype != "FLOAT":
        data = np.clip(data, -1.0, 1.0)
    encoded = io.BytesIO()
    sf.write(encoded, data, int(sr), subtype=sf_subtype, format="WAV")
    with atomic_write(path, "wb") as fh:
        fh.write(encoded.getbuffer())
    return Path(path)


# Sample formats each container stores (first: the default); MP3 is encoded by ffmpeg.
CONTAINERS = {"wav": ("float32", "pcm16", "pcm24"), "flac": ("pcm24", "pcm16"), "mp3": ()}
MP3_BITRATES = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)  # kbit/s
# MPEG-1 layer III (32-48 kHz) goes up to 320 kbit/s, MPEG-2 (16-24 kHz) and 2.5 (8-12 kHz) to
# 160: LAME silently lowers a higher bitrate, so it is refused instead.
MP3_RATES = {8000: 160, 11025: 160, 12000: 160, 16000: 160, 22050: 160, 24000: 160,
             32000: 320, 44100: 320, 48000: 320}
CLIPPING = ("clip", "normalize")


@dataclass(frozen=True)
class AudioFormat:
    """How estimates are written: ``container`` (``wav``, ``flac``, ``mp3``),
    ``sample_format`` (``float32``, ``pcm16``, ``pcm24``; default: float32 for WAV, 24 bit for
    FLAC; none for MP3), ``bitrate`` (MP3 kbit/s; default the highest the rate allows) and
    ``clipping`` (what :func:`limit_peaks` does with peaks beyond +-1 where the format cannot
    store them). Invalid combinations are one :class:`UserError` line."""
    container: str = "wav"
    sample_format: str = None
    bitrate: int = None
    clipping: str = "clip"

    def __post_init__(self):
        if self.container not in CONTAINERS:
            raise UserError(f"unknown audio format {self.container!r}; choose from "
                            f"{', '.join(CONTAINERS)}")
        allowed = CONTAINERS[self.container]
        if self.sample_format is None and allowed:
            object.__setattr__(self, "sample_format", allowed[0])
        elif self.sample_format is not None and self.sample_format not in allowed:
            stores = f"stores {', '.join(allowed)}" if allowed else "has no sample format"
            raise UserError(f"--sample-format {self.sample_format}: {self.container.upper()} "
                            f"{stores}")
        if self.bitrate is not None and self.container != "mp3":
            raise UserError("--bitrate applies to --format mp3 only")
        if self.bitrate is not None and int(self.bitrate) not in MP3_BITRATES:
            raise UserError(f"--bitrate {self.bitrate}: MP3 bitrates are "
                            f"{', '.join(map(str, MP3_BITRATES))} kbit/s")
        if self.clipping not in CLIPPING:
            raise UserError(f"unknown clipping {self.clipping!r}; choose from "
                            f"{', '.join(CLIPPING)}")

    @property
    def extension(self):
        return "." + self.container

    @property
    def clips(self):
        """Whether the format cannot store samples beyond +-1 (all but float32 WAV)."""
        return self.sample_format != "float32"

    def check_rate(self, sample_rate, what):
        """One :class:`UserError` line when ``what`` (an input) at ``sample_rate`` cannot be
        written in this format (MP3 has fixed rates and bitrates per rate)."""
        if self.container != "mp3":
            return
        top = MP3_RATES.get(int(sample_rate))
        if top is None:
            raise UserError(f"{what} is at {sample_rate} Hz, which MP3 cannot store (it takes "
                            f"{', '.join(map(str, MP3_RATES))} Hz): use --format flac or wav")
        if self.bitrate is not None and self.bitrate > top:
            raise UserError(f"{what} is at {sample_rate} Hz, where MP3 goes up to {top} kbit/s; "
                            f"--bitrate {self.bitrate} is too high")

    def encode(self, audio, sample_rate):
        """The file's bytes for ``(samples, channels)`` float ``audio``."""
        data = check_layout(np.asarray(audio, dtype=np.float32))
        if self.clips:
            data = np.clip(data, -1.0, 1.0)
        if self.container == "mp3":
            self.check_rate(sample_rate, "the audio")
            return _encode_mp3(data, sample_rate, self.bitrate or MP3_RATES[int(sample_rate)])
        encoded = io.BytesIO()
        sf.write(encoded, data, int(sample_rate), subtype=WAV_SUBTYPES[self.sample_format],
                 format=self.container.upper())
        return encoded.getvalue()

    def write(self, path, audio, sample_rate):
        """Write ``audio`` to ``path`` atomically (a full disk or an unwritable folder is one
        :class:`common.fileio.OutputError` naming ``path``; no partial file)."""
        data = self.encode(audio, sample_rate)
        with atomic_write(path, "wb") as fh:
            fh.write(data)
        return Path(path)


def _encode_mp3(audio, sample_rate, bitrate):
    """MP3 bytes of float32 ``(samples, channels)`` ``audio`` at ``bitrate`` kbit/s. ffmpeg
    writes a file, not a pipe: only then can it go back and fill in the LAME header whose
    encoder delay and padding let decoders return exactly the samples encoded."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise UserError("writing MP3 needs ffmpeg; install it (tools/setup.sh does)")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "audio.mp3")
        cmd = [ffmpeg, "-nostdin", "-v", "error", "-f", "f32le", "-ar", str(int(sample_rate)),
               "-ac", str(audio.shape[1]), "-i", "pipe:0", "-b:a", f"{int(bitrate)}k", out]
        proc = subprocess.run(cmd, input=np.ascontiguousarray(audio, "<f4").tobytes(),
                              capture_output=True)
        if proc.returncode != 0:
            raise UserError(f"ffmpeg could not encode MP3: "
                            f"{_one_line(proc.stderr.decode('utf-8', 'replace'))}")
        with open(out, "rb") as fh:
            return fh.read()


def limit_peaks(estimates, audio_format):
    """``(estimates, note)``: the estimates of one input made storable in ``audio_format``.

    float32 WAV stores any value: nothing changes. Other formats hold +-1 at most; when a
    peak goes beyond, ``clipping="clip"`` leaves the samples to be clipped where written
    (``note`` counts them) and ``"normalize"`` scales every estimate by one common factor, so
    that the peak is exactly 1 and the estimates still add up to the (scaled) mixture
    (``note`` gives the gain). ``note`` is ``None`` when nothing was beyond +-1."""
    if not audio_format.clips:
        return estimates, None
    peak = max(float(np.max(np.abs(est))) for est in estimates.values())
    if peak <= 1.0:
        return estimates, None
    if audio_format.clipping == "normalize":
        gain = np.float32(1.0 / peak)
        scaled = {name: est * gain for name, est in estimates.items()}
        return scaled, (f"estimates peaked at {peak:.3f}; all were scaled by "
                        f"{20 * math.log10(1.0 / peak):.2f} dB to fit (--clipping normalize)")
    beyond = sum(int(np.count_nonzero(np.abs(est) > 1.0)) for est in estimates.values())
    return estimates, (f"{beyond} samples beyond +-1 (peak {peak:.3f}) were clipped; "
                       "--clipping normalize scales the estimates instead")


# --------------------------------------------------------------------------- chunking

def chunk_starts(num_samples, chunk_len, overlap):
    """Start offsets of the chunks :func:`chunked_apply` uses.

    Chunk ``k`` starts at ``k * (chunk_len - overlap)``; there are just enough
    chunks for the last one to reach the end of the signal (at least one).
    """
    hop = chunk_len - overlap
    if num_samples <= chunk_len:
        return [0]
    n = int(math.ceil((num_samples - chunk_len) / hop)) + 1
    return [k * hop for k in range(n)]


def crossfade_window(length, overlap, fade_in, fade_out, shape="cosine"):
    """Weights for one chunk: ramps over the first/last ``overlap`` samples, 1 elsewhere.

    The fade-out of one chunk and the fade-in of the next cover the same
    ``overlap`` samples and sum to one there (``linear``: t and 1 - t;
    ``cosine``: sin^2 and cos^2 of a raised-cosine ramp).
    """
    w = np.ones(length, dtype=np.float64)
    if overlap > 0:
        t = (np.arange(overlap, dtype=np.float64) + 0.5) / overlap
        if shape == "linear":
            ramp = t
        elif shape == "cosine":
            ramp = np.sin(0.5 * np.pi * t) ** 2
        else:
            raise ValueError(f"unknown cross-fade shape {shape!r}; use 'linear' or 'cosine'")
        if fade_in:
            w[:overlap] = ramp
        if fade_out:
            # 1 - ramp mirrored in time, so fade_in + fade_out == 1 sample by sample.
            w[length - overlap:] = 1.0 - ramp
    return w


def _check_outputs(outputs, length, where):
    if not isinstance(outputs, dict) or not outputs:
        raise ValueError(f"{where}: fn must return a non-empty dict of arrays")
    checked = {}
    for name, value in outputs.items():
        arr = np.asarray(value)
        if arr.ndim != 2 or arr.shape[0] != length:
            raise ValueError(
                f"{where}: output {name!r} has shape {arr.shape}; expected ({length}, channels)")
        checked[name] = arr
    return checked


def chunked_apply(fn, audio, chunk_len, overlap=0, pad_last=True, fade="cosine",
                  progress=None, desc="chunks"):
    """Apply ``fn`` to a long ``(samples, channels)`` signal chunk by chunk.

    ``fn(chunk)`` takes a ``(n, channels)`` array and returns a dict
    ``name -> (n, out_channels)`` array (same ``n`` as its input). Returns a dict
    of float32 arrays of length ``audio.shape[0]``.

    * ``chunk_len`` ``None`` or ``0`` turns chunking off: ``fn`` is called once on
      the whole signal and its result returned as is (cast to float32), i.e.
      exactly the unchunked path.
    * Chunks are ``chunk_len`` samples long and consecutive chunks overlap by
      ``overlap`` samples (``0 <= overlap <= chunk_len // 2``, so a sample is in
      at most two chunks). Over each overlap the earlier chunk's output fades
      out and the later one's fades in (``fade``: ``"cosine"``, the default, or
      ``"linear"``); the two weights sum to one, so a chunk-independent ``fn``
      is reproduced exactly and there is no seam. Outside overlaps the weight
      is 1, and the signal's first and last samples are never faded. The
      raised cosine is flat near the chunk edges, so it suppresses a model's
      edge artefacts (missing context) better than a linear ramp.
    * ``pad_last=True`` (default) zero-pads the final chunk to ``chunk_len`` and
      crops its output, so ``fn`` always sees the same shape and one fixed-size
      network graph serves every call. ``pad_last=False`` passes the shorter
      final chunk as is. A signal no longer than one chunk is processed in one
      unpadded call, exactly as with chunking off.
    * Model memory is bounded by the chunk size. The outputs (one array per name, full
      length) are accumulated in place in arrays backed by a temporary file
      (:class:`SpilledArray`): after each chunk the samples no later chunk touches leave the
      process's memory, so a long signal's outputs do not stay resident while the model
      works on the next chunks (they are read back from the page cache when used). Where no
      such file can be made (e.g. a full disk) they are accumulated in memory instead.
    * ``progress``: ``True``/``False`` force the tqdm bar on/off; ``None`` shows
      it once the job has taken :data:`common.terminal.TICK_DELAY` seconds. A shown bar
      keeps ticking during a long chunk (:func:`common.terminal.ticking`), a single one
      included. Shown or not, Ctrl-C stops between chunks (:func:`common.terminal.progress`).
    """
    audio = np.asarray(audio)
    if audio.ndim != 2:
        raise ValueError(f"expected a (samples, channels) array, got shape {audio.shape}")
    total = audio.shape[0]
    # Shown bars still obey the no-progress environment variable.
    shown = {"disable": True} if progress is False else {
        "delay": terminal.TICK_DELAY if progress is None else 0}
    if not chunk_len or total <= chunk_len:
        # One chunk or none: the unchunked path (padding a short signal to a long chunk
        # would only cost time and change the result).
        bar = terminal_progress(total=1, desc=desc, unit="chunk", leave=False, **shown)
        try:
            with terminal.ticking(bar, shown.get("delay")):
                out = _check_outputs(fn(audio), total, "chunked_apply")
                bar.update(1)
        finally:
            bar.close()
        return {k: v.astype(np.float32, copy=False) for k, v in out.items()}

    chunk_len, overlap = int(chunk_len), int(overlap or 0)
    if chunk_len < 1:
        raise ValueError(f"chunk_len must be positive, got {chunk_len}")
    if overlap < 0 or 2 * overlap > chunk_len:
        raise ValueError(f"overlap must be in [0, chunk_len // 2], got {overlap} for "
                         f"chunk_len {chunk_len}")

    starts = chunk_starts(total, chunk_len, overlap)
    spilled = {}  # output name -> its SpilledArray accumulator
    bar = terminal_progress(starts, desc=desc, unit="chunk", leave=False, **shown)
    try:
        with terminal.ticking(bar, shown.get("delay")):
            for k, start in enumerate(bar):
                stop = min(start + chunk_len, total)
                n = stop - start
                chunk = audio[start:stop]
                if pad_last and n < chunk_len:
                    chunk = fix_length(chunk, chunk_len)
                out = _check_outputs(fn(chunk), chunk.shape[0], f"chunk {k} of {len(starts)}")
                if spilled and set(out) != set(spilled):
                    raise ValueError(f"chunk {k}: fn returned names {sorted(out)}, "
                                     f"earlier chunks returned {sorted(spilled)}")
                w = crossfade_window(n, overlap, fade_in=k > 0, fade_out=k < len(starts) - 1,
                                     shape=fade)[:, None]
                for name, value in out.items():
                    if name not in spilled:
                        spilled[name] = SpilledArray.zeros((total, value.shape[1]))
                    acc = spilled[name].array
                    if acc.shape[1] != value.shape[1]:
                        raise ValueError(f"chunk {k}: output {name!r} changed channel count")
                    acc[start:stop] += (value[:n] * w).astype(np.float32)
                # Samples before the next chunk's start are final.
                final = starts[k + 1] if k + 1 < len(starts) else total
                for spill in spilled.values():
                    spill.release_rows(final)
    finally:
        bar.close()
    return {name: spill.array for name, spill in spilled.items()}


class SpilledArray:
    """A zero-initialised float32 array in a shared mapping of an unlinked temporary file
    (in :func:`tempfile.gettempdir`, i.e. ``$TMPDIR``), whose finished leading rows can be
    dropped from the process's resident memory (:meth:`release_rows`) without losing them:
    the kernel keeps them in the file's page cache and writes them out under memory pressure,
    and reading them maps them back in.

    :meth:`zeros` returns an instance whose :attr:`array` is a plain in-memory ``np.zeros``
    (and :meth:`release_rows` does nothing) when the file cannot be made or its space cannot
    be reserved up front: a mapping of an unreserved file would kill the process with SIGBUS
    on a full disk instead of failing cleanly."""

    def __init__(self, array, mapping=None):
        self.array = array
        self._mapping = mapping
        self._row_bytes = array.strides[0] if array.ndim else 0
        self._released = 0  # bytes from the start already dropped

    @classmethod
    def zeros(cls, shape, dtype=np.float32):
        import mmap

        shape = tuple(int(d) for d in shape)
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if nbytes < mmap.PAGESIZE:  # nothing to gain
            return cls(np.zeros(shape, dtype))
        try:
            with tempfile.TemporaryFile(prefix="nnabla-research-") as fh:
                os.posix_fallocate(fh.fileno(), 0, nbytes)
                mapping = mmap.mmap(fh.fileno(), nbytes)  # stays valid after the file closes
        except (OSError, ValueError, AttributeError):  # full/read-only disk, no fallocate
            return cls(np.zeros(shape, dtype))
        return cls(np.ndarray(shape, dtype, buffer=mapping), mapping)

    def release_rows(self, rows):
        """Drop rows ``[0, rows)`` (whole pages only) from resident memory; their values
        stay readable."""
        if self._mapping is None:
            return
        import mmap

        end = rows * self._row_bytes // mmap.PAGESIZE * mmap.PAGESIZE
        if end > self._released:
            self._mapping.madvise(mmap.MADV_DONTNEED, self._released, end - self._released)
            self._released = end
