"""The entry scripts as a user runs them: train.py (smoke config, resume), separate.py (formats,
rates, channels, chunking, bad input) and eval.py (museval on the bundled MUSDB18 sample)."""
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from common.data.bundled import bundled_musdb_root
from common.dev.testing import run_script, synthetic_music, write_audio
from common.mss.separation import separate_files, validate_inputs
from common.runtime.params_io import read_param_file
from common.train.monitor import read_series
from xumx.model import CrossNet, bandwidth_to_max_bin
from xumx.separator import Separator

X_UMX = Path(__file__).resolve().parents[1]
SR = 44100
# A tiny but complete X-UMX run: every stage of the recipe, seconds instead of hours.
TINY_TRAIN = ["--hidden-size", "8", "--nb-layers", "1", "--nfft", "512", "--nhop", "128",
              "--seq-dur", "0.5", "--samples-per-track", "4", "--batch-size", "2",
              "--valid-dur", "3", "--checkpoint-interval", "1", "--loader-threads", "0",
              "--lr", "0.01"]


def run(script, *args, check=True):
    return run_script(X_UMX / script, *args, check=check)


def series(run_dir, name):
    steps, values = read_series(run_dir, name)
    return steps.tolist(), values.tolist()


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """A small X-UMX with random weights in the official file format."""
    path = tmp_path_factory.mktemp("weights") / "xumx.h5"
    model = CrossNet(hidden_size=8, nb_layers=1, max_bin=600)
    model.create_parameters()
    rng = np.random.RandomState(0)
    for name, var in model.get_parameters().items():
        if name.startswith(("input_", "output_")) or "/bn/" in name:
            continue
        var.d = rng.uniform(-0.5, 0.5, var.shape)
    model.save_parameters(str(path))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train 3 epochs uninterrupted, and 1 epoch + --resume to 3 epochs."""
    root = tmp_path_factory.mktemp("train")
    full, split = root / "full", root / "split"
    run("train.py", "--output", full, "--epochs", 3, *TINY_TRAIN)
    run("train.py", "--output", split, "--epochs", 1, *TINY_TRAIN)
    resumed = run("train.py", "--output", split, "--epochs", 3, "--resume", *TINY_TRAIN)
    return full, split, resumed


def test_train_writes_run_directory(trained):
    full, _, _ = trained
    for name in ("config.yaml", "input_stats.npz", "xumx.h5", "checkpoints/best.npz"):
        assert (full / name).exists(), name
    params, _ = read_param_file(full / "xumx.h5")
    # every size flag is honoured: hidden 8, one LSTM layer, n_fft 512 cut at 16 kHz
    max_bin = bandwidth_to_max_bin(SR, 512, 16000)
    assert params["fc1_bass/affine/W"].shape == (2 * max_bin, 8)
    assert params["output_scale_vocals"].shape == (257,)
    assert params["lstm_bass/lstm/weight_l0"].shape[0] == 2  # bidirectional
    assert "lstm_bass/lstm/weight" not in params  # one layer has no deeper weights


def test_validation_loss_falls(trained):
    full, _, _ = trained
    epochs, valid = series(full, "validation loss")
    assert epochs == [0, 1, 2]
    assert all(np.isfinite(valid)) and valid[-1] < valid[0]


def test_resume_continues_bit_exactly(trained):
    full, split, resumed = trained
    assert "resumed at epoch 1" in resumed.stdout
    a, _ = read_param_file(full / "xumx.h5")
    b, _ = read_param_file(split / "xumx.h5")
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert series(full, "validation loss") == series(split, "validation loss")


def test_umx_trains_one_target_and_its_file_separates(tmp_path):
    run_dir = tmp_path / "umx"
    run("train.py", "--output", run_dir, "--model-type", "umx", "--target", "bass",
        "--epochs", 1, *TINY_TRAIN)
    params, _ = read_param_file(run_dir / "bass.h5")
    assert "fc1/affine/W" in params and "input_mean" in params  # official unscoped UMX names
    song = write_audio(tmp_path / "s.wav", synthetic_music(1.0, SR, 2), SR)
    run("separate.py", song, "--model", run_dir / "bass.h5", "--out-dir", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out" / "s").iterdir()) == [
        "accompaniment.wav", "bass.wav"]


def test_train_rejects_unknown_config_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("hiden_size: 8\n")
    proc = run("train.py", "--output", tmp_path / "run", "--config", bad, check=False)
    assert proc.returncode == 2
    assert "unknown key 'hiden_size'" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("sr,channels", [(22050, 1), (44100, 2), (48000, 3)])
def test_separate_keeps_length_rate_and_targets(tiny_weights, tmp_path, sr, channels):
    song = write_audio(tmp_path / "song.flac", synthetic_music(1.3, sr, channels), sr)
    proc = run("separate.py", song, "--model", tiny_weights, "--out-dir", tmp_path / "out")
    if channels > 2:
        assert "first two" in proc.stderr
    written = sorted(p.name for p in (tmp_path / "out" / "song").iterdir())
    assert written == ["bass.wav", "drums.wav", "other.wav", "vocals.wav"]
    for name in written:
        audio, rate = sf.read(str(tmp_path / "out" / "song" / name))
        assert rate == sr and audio.shape == (int(1.3 * sr), 2)
        assert np.all(np.isfinite(audio)) and np.abs(audio).max() > 0


def test_separate_mp3_input(tiny_weights, tmp_path):
    mp3 = write_audio(tmp_path / "clip.mp3", synthetic_music(1.0, SR, 2), SR)
    run("separate.py", mp3, "--model", tiny_weights, "--out-dir", tmp_path / "out",
        "--targets", "vocals", "--residual")
    names = sorted(p.name for p in (tmp_path / "out" / "clip").iterdir())
    assert names == ["accompaniment.wav", "vocals.wav"]
    expected = sf.info(str(mp3)).frames
    assert sf.info(str(tmp_path / "out" / "clip" / "vocals.wav")).frames == expected


@pytest.mark.parametrize("content", ["missing", "empty", "text", "nan"])
def test_separate_bad_input_one_line_error_nothing_written(tiny_weights, tmp_path, content):
    path = tmp_path / "bad.wav"
    if content == "empty":
        path.write_bytes(b"")
    elif content == "text":
        path.write_text("this is not audio\n")
    elif content == "nan":
        write_audio(path, np.full((SR, 2), np.nan, dtype=np.float32), SR)
    good = write_audio(tmp_path / "good.wav", synthetic_music(1.0, SR, 2), SR)
    out = tmp_path / "out"
    proc = run("separate.py", good, path, "--model", tiny_weights, "--out-dir", out, check=False)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "[nnabla]" not in ln]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert not out.exists()


def test_separate_bad_model_is_one_line(tmp_path):
    song = write_audio(tmp_path / "s.wav", synthetic_music(1.0, SR, 2), SR)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    proc = run("separate.py", song, "--model", junk, "--out-dir", tmp_path / "o", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error:")
    assert "Traceback" not in proc.stderr and not (tmp_path / "o").exists()


def test_chunked_separation_builds_one_graph_and_matches_length(tiny_weights, tmp_path):
    """Many chunks and several files go through one network graph."""
    files = [write_audio(tmp_path / f"f{i}.wav", synthetic_music(d, SR, 2, seed=i), SR)
             for i, d in enumerate((3.3, 2.1))]
    sep = Separator(str(tiny_weights))
    separate_files(validate_inputs([str(f) for f in files]), sep, out_dir=tmp_path / "out",
                   chunk_dur=1.0, chunk_overlap=0.25, progress=False)
    assert sep.graph_builds == 1
    for f in files:
        n = sf.info(str(f)).frames
        assert sf.info(str(tmp_path / "out" / f.stem / "vocals.wav")).frames == n


def test_chunking_off_equals_direct_call(tiny_weights, tmp_path):
    audio = synthetic_music(2.0, SR, 2)
    song = write_audio(tmp_path / "s.wav", audio, SR)
    sep = Separator(str(tiny_weights))
    direct = sep(audio)
    separate_files(validate_inputs([str(song)]), sep, out_dir=tmp_path / "out", chunk_dur=0,
                   progress=False)
    for name, est in direct.items():
        written, _ = sf.read(str(tmp_path / "out" / "s" / f"{name}.wav"), dtype="float32")
        # The same computation on another copy of the input: numpy's vectorised loops may
        # group a sum differently for another memory alignment, so a sample can differ in
        # its last bit (one sample in 176,400 by 1 ulp was seen, in one of several runs):
        # at most 2 float32 ulps (relative 2.4e-7), or 1e-12 absolute next to zero.
        np.testing.assert_allclose(written, est, rtol=2.4e-7, atol=1e-12)


def test_eval_scores_bundled_track_and_skips_on_rerun(tiny_weights, tmp_path):
    root = bundled_musdb_root()
    out = tmp_path / "eval"
    first = run("eval.py", "--model", tiny_weights, "--root", root, "--out-dir", out,
                "--targets", "vocals", "bass")
    scores = list((out / "test").glob("*.json"))
    assert len(scores) == 1
    data = json.loads(scores[0].read_text())
    assert {t["name"] for t in data["targets"]} == {"vocals", "bass"}
    assert "SDR" in first.stdout and (out / "sdr_test.png").exists()
    again = run("eval.py", "--model", tiny_weights, "--root", root, "--out-dir", out,
                "--targets", "vocals", "bass")
    assert "skip" in (again.stdout + again.stderr).lower()
    assert scores[0].read_text() == json.dumps(data) or json.loads(scores[0].read_text()) == data
