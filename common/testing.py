"""Helpers for the papers' entry-script tests: run a script as a user would, and make
synthetic audio files (any format soundfile writes; compressed ones through ffmpeg)."""
import os
import subprocess
import sys

import numpy as np

__all__ = ["fixtures_root", "run_script", "synthetic_music", "write_audio"]


def run_script(script, *args, check=True, timeout=600):
    """Run ``python script args...`` with this interpreter; return the CompletedProcess (text
    stdout / stderr). With ``check`` a non-zero exit fails with the end of stderr."""
    proc = subprocess.run([sys.executable, str(script), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def synthetic_music(seconds, sr, channels, seed=0):
    """float32 ``(samples, channels)``: two of four tones per channel plus a little noise."""
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.RandomState(seed)
    tones = [0.3 * np.sin(2 * np.pi * f * t) for f in (110.0, 440.0, 1330.0, 3000.0)]
    cols = [tones[c % 4] + tones[(c + 1) % 4] + 0.01 * rng.randn(len(t)) for c in range(channels)]
    return np.stack(cols, axis=1).astype(np.float32)


def write_audio(path, audio, sr):
    """Write ``audio`` to ``path`` (FLAC as 16-bit PCM, anything else as float) or, for
    ``.mp3``, through a temporary WAV and ffmpeg; return ``path``."""
    import soundfile as sf

    path_str = str(path)
    if path_str.endswith(".mp3"):
        wav = path_str[:-4] + ".tmp.wav"
        sf.write(wav, audio, sr, subtype="FLOAT")
        try:
            subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", wav, path_str],
                           check=True)
        finally:
            os.remove(wav)
        return path
    sf.write(path_str, audio, sr, subtype="PCM_16" if path_str.endswith(".flac") else "FLOAT")
    return path


def fixtures_root():
    """Root of the parity fixtures: ``$FIXTURES_DIR``, default ``../shared/fixtures``; a
    relative path is taken from the repository root (where ``make test`` runs)."""
    from pathlib import Path

    from common.paths import REPO_ROOT

    env = os.environ.get("FIXTURES_DIR")
    root = Path(env) if env else Path("..") / "shared" / "fixtures"
    if not root.is_absolute():
        root = REPO_ROOT / root
    return root.resolve()
