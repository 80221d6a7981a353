"""Shared driver for the music-source-separation ``separate.py`` scripts.

A paper's script parses its model flags plus the generic ones from
:func:`add_separation_args`, then hands a *separator* to this module. A separator
is any object with

* ``sample_rate`` -- the rate the model works at (int, Hz),
* ``targets`` -- the list of source names it estimates (used as file names),
* ``__call__(audio)`` -- ``audio`` is float32 ``(samples, 2)`` at ``sample_rate``;
  returns ``{target: array (samples, 2)}`` with **exactly** ``samples`` rows.
  The driver checks this and raises ``ValueError`` otherwise: a model whose
  STFT framing loses samples must pad/crop inside its own ``__call__``, where
  the framing is known.

The separator is built once by the caller, so its network graph is built once
and reused for every chunk of every file.

Per input the driver: loads it (any format ffmpeg reads), makes it stereo,
resamples to the model rate, separates (whole or in cross-faded chunks, see
:func:`common.mss.audio.chunked_apply`), resamples each estimate back to the
input's own rate, crops/pads to the input's exact length, gives it the input's channel
count (mono stays mono; more than two channels give stereo) unless ``--channels`` says
otherwise, and writes ``<out-dir>/<input stem>/<target>.<wav|flac|mp3>`` at the input's rate
(:class:`common.mss.audio.AudioFormat`; peaks beyond +-1 in formats that cannot store them:
:func:`common.mss.audio.limit_peaks`). ``--report`` adds ``report.html`` beside them
(:mod:`common.mss.report`).

Failure rules:

* **The output folder is checked first** (a path under a file, a read-only or
  unwritable location: one line), before any input is decoded or the model loads.
* **All inputs are decoded and checked before anything is written.** If any is
  unusable (missing, empty, not audio, NaN samples...) or two inputs would
  write to the same folder, the run stops with one ``UserError`` line listing
  the problems and writes nothing. An input holding fewer samples than its header
  declares (a file cut short) is separated as far as it goes, with one warning line
  giving both lengths.
* No output may replace an input of the same call (``--out-dir`` pointing into the
  inputs' folders with a target name as file name): refused in one line before
  anything is written.
* Each input's targets are written into a hidden temporary folder inside
  ``--out-dir`` and moved into place only when every target succeeded, so an
  input never ends up with a partial set of files; every file is written
  atomically, so a full disk is one line naming the file and leaves no partial
  file. Inputs finished earlier in the same run keep their (complete) results if a
  later one fails or Ctrl-C stops the run (it stops between chunks or inputs).
* Existing ``<target>.<ext>`` files in an input's folder are replaced.
"""
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.cli import NonNegativeFloat, Parser
from common.errors import UserError
from common.fileio import (OutputError, check_output_location, default_mode,
                           refuse_overwriting_inputs)
from common.mss.audio import (CLIPPING, CONTAINERS, MP3_BITRATES, AudioFormat, chunked_apply,
                              fix_length, limit_peaks, load_audio, match_channels, resample,
                              to_stereo, truncation_note)
from common.terminal import check_interrupt, interrupt_message

__all__ = [
    "AudioInput",
    "add_chunk_args",
    "add_separation_args",
    "check_chunk_args",
    "check_separator",
    "output_stem",
    "validate_inputs",
    "separate_audio",
    "separate_files",
    "run_separation",
]

DEFAULT_OUT_DIR = "separated"
REPORT_NAME = "report.html"


@dataclass(frozen=True)
class AudioInput:
    """An input file that :func:`validate_inputs` decoded successfully; ``warning`` says
    what is odd about it (e.g. cut short), or is None."""
    path: Path
    stem: str
    sample_rate: int
    num_samples: int
    channels: int
    warning: str = None


# --------------------------------------------------------------------------- CLI flags

def add_chunk_args(parser, chunk_dur=0.0):
    """``--chunk-dur`` / ``--chunk-overlap`` (shared by separation and evaluation);
    ``chunk_dur`` is the script's default (0 = off)."""
    parser.add_argument(
        "--chunk-dur", type=NonNegativeFloat, default=chunk_dur, metavar="SEC",
        help="separate in chunks of this many seconds to bound memory "
             f"(0 = whole file at once, the exact unchunked result; default: {chunk_dur:g})")
    parser.add_argument(
        "--chunk-overlap", type=NonNegativeFloat, default=None, metavar="SEC",
        help="seconds consecutive chunks overlap and cross-fade over; at most half of "
             "--chunk-dur (default: min(1, chunk-dur / 4))")
    return parser


def add_separation_args(parser, chunk_dur=0.0):
    """Add the model-independent flags of a ``separate.py`` script to ``parser``;
    ``chunk_dur`` is the default of ``--chunk-dur``."""
    # Both spellings extend one list: `separate.py a.wav -i b.wav` separates both.
    parser.add_argument("inputs", nargs="*", action="extend", default=[], metavar="INPUT",
                        help="audio file(s) to separate; any format ffmpeg can decode")
    parser.add_argument("--inputs", "-i", dest="inputs", nargs="+", action="extend",
                        metavar="INPUT", help="more input files (the official scripts' flag)")
    parser.add_argument("--out-dir", "-o", default=DEFAULT_OUT_DIR, metavar="DIR",
                        help="estimates go to DIR/<input name>/<target>.<format> "
                             f"(default: {DEFAULT_OUT_DIR})")
    add_chunk_args(parser, chunk_dur)
    output = parser.add_argument_group("output files")
    output.add_argument("--format", choices=list(CONTAINERS), default="wav",
                        help="file format of the estimates (default: wav; mp3 is encoded by "
                             "ffmpeg)")
    output.add_argument("--sample-format", choices=["float32", "pcm16", "pcm24"], default=None,
                        help="WAV: float32 (default), pcm16 or pcm24; FLAC: pcm24 (default) or "
                             "pcm16")
    output.add_argument("--bitrate", choices=[str(b) for b in MP3_BITRATES], default=None,
                        metavar="KBPS", help="MP3 bitrate in kbit/s (default: 320, or 160 "
                                             "below 32 kHz, the most MP3 allows there)")
    output.add_argument("--channels", choices=["1", "2"], default=None,
                        help="channels of the estimates (default: the input's; more than two "
                             "give 2, as only the first two are separated)")
    output.add_argument("--clipping", choices=list(CLIPPING), default="clip",
                        help="estimates beyond +-1 in a format that cannot store them (all but "
                             "float32 WAV): clip them (default; a warning counts the samples) "
                             "or normalize: scale all estimates of that input by one factor so "
                             "the peak fits (they still add up to the scaled mixture)")
    output.add_argument("--report", action="store_true",
                        help="also write report.html per input: a spectrogram and an audio "
                             "player for the mixture and every estimate, in one self-contained "
                             "page")
    if isinstance(parser, Parser):
        parser.add_alias("--wav-format", "sample_format")
    parser.add_argument("--no-progress", action="store_true",
                        help="do not show progress bars")
    return parser


def check_chunk_args(chunk_dur, chunk_overlap):
    """Validate chunk settings in seconds; return ``(chunk_dur, overlap)``, the default
    overlap filled in.

    ``chunk_dur`` 0/None means chunking off (overlap is then 0). A ``None``
    overlap becomes ``min(1, chunk_dur / 4)``.
    """
    chunk_dur = float(chunk_dur or 0.0)
    if not np.isfinite(chunk_dur) or chunk_dur < 0:
        raise UserError(f"--chunk-dur must be >= 0 seconds (0 = off), got {chunk_dur:g}")
    if chunk_dur == 0:
        return 0.0, 0.0
    if chunk_overlap is None:
        return chunk_dur, min(1.0, chunk_dur / 4)
    chunk_overlap = float(chunk_overlap)
    if not np.isfinite(chunk_overlap) or chunk_overlap < 0 or chunk_overlap > chunk_dur / 2:
        raise UserError(f"--chunk-overlap must be between 0 and half of --chunk-dur "
                        f"({chunk_dur / 2:g} s), got {chunk_overlap:g}")
    return chunk_dur, chunk_overlap


def check_separator(separator):
    """Check the separator's ``sample_rate``/``targets``; return ``(rate, targets)``."""
    rate = getattr(separator, "sample_rate", None)
    targets = getattr(separator, "targets", None)
    if not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise ValueError(f"separator.sample_rate must be a positive int, got {rate!r}")
    if not callable(separator):
        raise ValueError("separator must be callable: separator(audio) -> {target: audio}")
    if not targets or isinstance(targets, str):
        raise ValueError(f"separator.targets must be a non-empty list of names, got {targets!r}")
    targets = list(targets)
    for t in targets:
        if not isinstance(t, str) or not t or "/" in t or "\\" in t or t.startswith("."):
            raise ValueError(f"invalid target name {t!r}: must be usable as a file name")
    if len(set(targets)) != len(targets):
        raise ValueError(f"separator.targets has duplicates: {targets}")
    return int(rate), targets


# --------------------------------------------------------------------------- core

def output_stem(path):
    """Folder name for an input's estimates: the file name without extension
    (``.stem.mp4`` counts as one extension, so MUSDB stems keep their track name)."""
    name = Path(path).name
    if name.endswith(".stem.mp4"):
        return name[: -len(".stem.mp4")]
    return Path(path).stem


def validate_inputs(inputs):
    """Decode every input once; return a list of :class:`AudioInput`.

    Raises one ``UserError`` naming every unusable input (and inputs whose
    output folders would collide) before anything has been written.
    """
    if not inputs:
        raise UserError("no input files given")
    problems, checked, by_stem = [], [], {}
    for raw in inputs:
        path = Path(raw)
        try:
            audio, sr = load_audio(path)
        except UserError as exc:
            problems.append(str(exc))
            continue
        item = AudioInput(path=path, stem=output_stem(path), sample_rate=sr,
                          num_samples=audio.shape[0], channels=audio.shape[1],
                          warning=truncation_note(path, audio.shape[0]))
        del audio
        if item.stem in by_stem:
            problems.append(f"'{by_stem[item.stem]}' and '{path}' would both write to "
                            f"'{item.stem}/'; rename one")
        else:
            by_stem[item.stem] = path
        checked.append(item)
    if problems:
        head = "" if len(problems) == 1 else f"{len(problems)} problems with the inputs: "
        raise UserError(head + "; ".join(problems) + " (nothing was written)")
    return checked


def _checked_call(separator, targets):
    """Wrap ``separator`` so every call's output is checked and restricted to ``targets``."""
    def run(chunk):
        chunk = np.ascontiguousarray(chunk, dtype=np.float32)
        out = separator(chunk)
        if not isinstance(out, dict):
            raise ValueError(f"separator returned {type(out).__name__}; expected a dict")
        missing = [t for t in targets if t not in out]
        if missing:
            raise ValueError(f"separator output lacks targets {missing} (got {sorted(out)})")
        result = {}
        for t in targets:
            est = np.asarray(out[t])
            if est.shape != (chunk.shape[0], 2):
                raise ValueError(
                    f"separator returned shape {est.shape} for {t!r} from an input of shape "
                    f"{chunk.shape}; a separator must return (input samples, 2) exactly")
            result[t] = est
        return result
    return run


def separate_audio(separator, audio, sample_rate, chunk_dur=0.0, chunk_overlap=None,
                   pad_last=True, fade="cosine", progress=None):
    """Separate one in-memory signal; return ``(estimates, warning)``.

    ``audio`` is ``(samples, channels)`` at ``sample_rate``. Estimates are float32
    ``(samples, 2)`` arrays at ``sample_rate`` with exactly the input's length
    (the round trip through the model rate may shift the length by a sample;
    the tail is cropped or zero-padded). ``warning`` is ``to_stereo``'s
    channel message or ``None``. ``chunk_dur``/``chunk_overlap`` are seconds
    at the model rate; ``pad_last``/``fade``/``progress`` go to
    :func:`common.mss.audio.chunked_apply`.
    """
    model_rate, targets = check_separator(separator)
    chunk_dur, chunk_overlap = check_chunk_args(chunk_dur, chunk_overlap)
    audio = np.asarray(audio, dtype=np.float32)
    length = audio.shape[0]
    stereo, warning = to_stereo(audio)
    x = resample(stereo, sample_rate, model_rate)
    if x.shape[0] == 0:
        raise UserError(f"input too short ({length} samples) to resample to {model_rate} Hz")
    chunk_len = int(round(chunk_dur * model_rate))
    overlap = min(int(round(chunk_overlap * model_rate)), chunk_len // 2)
    estimates = chunked_apply(_checked_call(separator, targets), x, chunk_len, overlap,
                              pad_last=pad_last, fade=fade, progress=progress,
                              desc="separating")
    out = {}
    for t in targets:
        est = resample(estimates[t], model_rate, sample_rate)
        est = fix_length(est, length)
        if not np.isfinite(est).all():
            raise RuntimeError(f"separator produced NaN/inf samples for target {t!r}")
        out[t] = np.ascontiguousarray(est, dtype=np.float32)
    return out, warning


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def _commit(tmp_dir, final_dir, names):
    """Move the finished files of one input from ``tmp_dir`` to ``final_dir``."""
    if not final_dir.exists():
        os.rename(tmp_dir, final_dir)  # atomic: the folder appears complete
        return
    if not final_dir.is_dir():
        raise UserError(f"cannot write estimates: '{final_dir}' exists and is not a folder")
    for name in names:
        os.replace(tmp_dir / name, final_dir / name)
    shutil.rmtree(tmp_dir, ignore_errors=True)


def separate_files(inputs, separator, out_dir=DEFAULT_OUT_DIR, chunk_dur=0.0,
                   chunk_overlap=None, audio_format=None, channels=None, report=False,
                   pad_last=True, fade="cosine", progress=True, log=_log):
    """Separate audio files and write ``<out_dir>/<stem>/<target><ext>``; return the folders.

    ``inputs`` are paths (all validated by :func:`validate_inputs` before any
    work) or :class:`AudioInput` items from an earlier ``validate_inputs`` call
    (not decoded twice for validation). Outputs have each input's own sample
    rate and exact length, and ``channels`` (1 or 2; ``None``: the input's, at most 2).
    ``audio_format`` (:class:`common.mss.audio.AudioFormat`; default: float32 WAV) says how
    they are written; ``report`` adds ``report.html``. ``log`` receives one-line status
    messages (default: stderr). See the module docstring for the failure rules.
    """
    _, targets = check_separator(separator)
    chunk_dur, chunk_overlap = check_chunk_args(chunk_dur, chunk_overlap)
    audio_format = audio_format or AudioFormat()
    raw = [i for i in inputs if not isinstance(i, AudioInput)]
    validated = iter(validate_inputs(raw) if raw else ())
    items = [i if isinstance(i, AudioInput) else next(validated) for i in inputs]
    stems = [i.stem for i in items]
    if len(set(stems)) != len(stems):
        dup = sorted({s for s in stems if stems.count(s) > 1})
        raise UserError(f"several inputs would write to the same folder(s) {dup}; rename them")

    out_dir = Path(out_dir)
    check_output_location(out_dir, "--out-dir")
    for item in items:
        if (out_dir / item.stem).exists() and not (out_dir / item.stem).is_dir():
            raise UserError(f"cannot write estimates: '{out_dir / item.stem}' exists and is "
                            "not a folder (nothing was written)")
    for item in items:  # e.g. a rate MP3 cannot store: refused before anything is written
        audio_format.check_rate(item.sample_rate, f"'{item.path}'")
    names = [f"{t}{audio_format.extension}" for t in targets] + (
        [REPORT_NAME] if report else [])
    refuse_overwriting_inputs([out_dir / i.stem / name for i in items for name in names],
                              [i.path for i in items], "--out-dir")
    created_out_dir = not out_dir.exists()
    written = []

    def interrupted():
        return (f"interrupted; {len(written)} of {len(items)} input(s) separated into "
                f"{out_dir} (each of them complete)")

    try:
        with interrupt_message(interrupted):
            out_dir.mkdir(parents=True, exist_ok=True)
            for n, item in enumerate(items, 1):
                check_interrupt()
                t0 = time.time()
                if log:
                    log(f"[{n}/{len(items)}] {item.path} "
                        f"({item.num_samples / item.sample_rate:.1f} s, "
                        f"{item.sample_rate} Hz, {item.channels} ch)")
                    if item.warning:
                        log(f"warning: {item.path}: {item.warning}")
                audio, sr = load_audio(item.path)
                estimates, warning = separate_audio(
                    separator, audio, sr, chunk_dur=chunk_dur, chunk_overlap=chunk_overlap,
                    pad_last=pad_last, fade=fade, progress=None if progress else False)
                out_channels = channels or min(item.channels, 2)
                estimates = {t: match_channels(est, out_channels) for t, est in estimates.items()}
                estimates, clipped = limit_peaks(estimates, audio_format)
                for note in (warning, clipped):
                    if note and log:
                        log(f"warning: {item.path}: {note}")
                final_dir = out_dir / item.stem
                page = None
                if report:
                    from common.mss.report import separation_report

                    # the channels that were separated (MP3 players take two at most)
                    page = separation_report(item.path.name, audio[:, :2], estimates, sr)
                del audio
                _write_estimates(estimates, sr, out_dir, final_dir, audio_format, page)
                written.append(final_dir)
                if log:
                    log(f"      -> {final_dir}/ ({', '.join(estimates)}) "
                        f"in {time.time() - t0:.1f} s")
    finally:
        # Leave no empty --out-dir behind if this call created it and wrote nothing.
        if created_out_dir and not written and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
    return written


def _write_estimates(estimates, sr, out_dir, final_dir, audio_format, page=None):
    """Write one input's estimates (and its report ``page``, an
    :class:`common.report.HtmlReport`) into a hidden folder, then move them to
    ``final_dir``."""
    try:
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.partial-", dir=out_dir))
        os.chmod(tmp_dir, default_mode(directory=True))
    except OSError as exc:
        raise OutputError(f"cannot write in {out_dir}: {exc.strerror or exc}") from None
    try:
        names = []
        for target, est in estimates.items():
            names.append(f"{target}{audio_format.extension}")
            try:
                audio_format.write(tmp_dir / names[-1], est, sr)
            except OutputError as exc:  # name the file the user asked for, not the temp one
                raise OutputError(str(exc).replace(str(tmp_dir), str(final_dir))) from None
        if page is not None:
            names.append(REPORT_NAME)
            try:
                page.write(tmp_dir / REPORT_NAME)
            except OutputError as exc:
                raise OutputError(str(exc).replace(str(tmp_dir), str(final_dir))) from None
        _commit(tmp_dir, final_dir, names)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)


def run_separation(args, make_separator, log=_log):
    """Run a ``separate.py`` from arguments parsed with :func:`add_separation_args`.

    Checks the chunk flags and the output folder, then decodes every input, then calls
    ``make_separator()`` (so a bad input or output location fails before the model
    loads) and separates. Returns the list of output folders.
    """
    check_chunk_args(args.chunk_dur, args.chunk_overlap)
    audio_format = AudioFormat(args.format, args.sample_format,
                               args.bitrate and int(args.bitrate), args.clipping)
    check_output_location(args.out_dir, "--out-dir")
    items = validate_inputs(args.inputs)
    for item in items:
        audio_format.check_rate(item.sample_rate, f"'{item.path}'")
    separator = make_separator()
    return separate_files(items, separator, out_dir=args.out_dir, chunk_dur=args.chunk_dur,
                          chunk_overlap=args.chunk_overlap, audio_format=audio_format,
                          channels=args.channels and int(args.channels), report=args.report,
                          progress=not getattr(args, "no_progress", False), log=log)

