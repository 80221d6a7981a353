"""The entry scripts as a user runs them: train.py (smoke config, resume, run folder as
--model), separate.py (formats, rates, channels, chunking, bad input) and eval.py (museval on
the bundled MUSDB18 sample). Models are tiny (configs/smoke_network.yaml) so everything runs on
CPU in seconds."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from common.data.bundled import bundled_musdb_root
from common.dev.testing import run_script, synthetic_music, write_audio
from common.mss.separation import separate_files, validate_inputs
from common.runtime.params_io import read_param_file
from common.train.monitor import read_series
from d3net_mss import cli
from d3net_mss.model import D3NetMSS, load_config
from d3net_mss.training import export_weights

MSS = Path(__file__).resolve().parents[1]
SR = 44100
# The default (smoke) config with 2 iterations per epoch and a checkpoint after every one.
TINY_TRAIN = ["--samples-per-track", "4", "--batch-size", "2", "--checkpoint-interval", "1",
              "--loader-threads", "0"]


def run(script, *args, check=True):
    return run_script(MSS / script, *args, check=check)


def series(run_dir, name):
    steps, values = read_series(run_dir, name)
    return steps.tolist(), values.tolist()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A folder with random tiny vocals + drums networks as train.py writes them
    (<target>.h5 in the official format, <target>.yaml beside it)."""
    folder = tmp_path_factory.mktemp("model")
    rng = np.random.RandomState(0)
    for target in ("vocals", "drums"):
        config = dict(load_config("smoke_network"), target=target)
        model = D3NetMSS(config)
        for name, var in model.create_parameters().items():
            if not name.endswith(("/mean", "/var", "in_offset", "in_scale")):
                var.d = var.d + rng.uniform(-0.3, 0.3, var.shape)
        export_weights(model, config, folder)
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train 3 epochs uninterrupted, and 1 epoch + --resume to 3 epochs (a copy of the
    1-epoch run is left in ``mid`` for the mid-epoch resume test)."""
    root = tmp_path_factory.mktemp("train")
    full, split = root / "full", root / "split"
    run("train.py", "--output", full, "--epochs", 3, *TINY_TRAIN)
    run("train.py", "--output", split, "--epochs", 1, *TINY_TRAIN)
    shutil.copytree(split, root / "mid")
    resumed = run("train.py", "--output", split, "--epochs", 3, "--resume", *TINY_TRAIN)
    return full, split, resumed


def test_train_writes_run_folder(trained):
    full, _, _ = trained
    for name in ("vocals.h5", "vocals.yaml", "vocals/config.yaml", "vocals/input_stats.npz",
                 "vocals/checkpoints/best.npz"):
        assert (full / name).exists(), name
    params, _ = read_param_file(full / "vocals.h5")
    assert all(k.startswith("vocals/") for k in params)  # official names, target scope
    config = load_config(full / "vocals.yaml")
    assert config == dict(load_config("smoke_network"), target="vocals")
    bins = config["fft_size"] // 2 + 1
    assert params["vocals/in_offset"].shape == (1, 1, 1, bins)
    assert params["vocals/decode_bias"].shape == (1, 1, 1, config["valid_signal_idx"])
    # the input offset starts from the training mixtures' statistics, not zeros
    assert np.abs(params["vocals/in_offset"]).max() > 0
    assert len(params) == len(D3NetMSS(config).parameter_shapes())


def test_validation_loss_falls(trained):
    full, _, _ = trained
    epochs, valid = series(full / "vocals", "validation loss")
    assert epochs == [0, 1, 2]
    assert all(np.isfinite(valid)) and valid[-1] < valid[0]
    _, lr = series(full / "vocals", "learning rate")
    assert lr == pytest.approx([0.003 * 2 / 6] * 3)  # official scaling by batch / 6


def test_resume_continues_bit_exactly(trained):
    full, split, resumed = trained
    assert "resumed at epoch 1" in resumed.stdout
    a, _ = read_param_file(full / "vocals.h5")
    b, _ = read_param_file(split / "vocals.h5")
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    for name in ("validation loss", "training loss per iteration"):
        assert series(full / "vocals", name) == series(split / "vocals", name)


def test_resume_mid_epoch_continues_bit_exactly(trained):
    """A run killed after the first iteration of epoch 0 (its newest checkpoint is the
    mid-epoch one) continues with the same data order and ends with the same weights."""
    full, split, _ = trained
    mid = split.parent / "mid"
    ckpts = mid / "vocals" / "checkpoints"
    for name in ("ckpt_00000002.npz", "best.npz"):  # the epoch-end checkpoint
        (ckpts / name).unlink()
    assert [p.name for p in ckpts.glob("ckpt_*.npz")] == ["ckpt_00000001.npz"]
    proc = run("train.py", "--output", mid, "--epochs", 3, "--resume", *TINY_TRAIN)
    assert "resumed at epoch 0, iteration 1" in proc.stdout
    a, _ = read_param_file(full / "vocals.h5")
    b, _ = read_param_file(mid / "vocals.h5")
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    name = "training loss per iteration"
    assert series(full / "vocals", name) == series(mid / "vocals", name)


def test_trained_run_separates(trained, tmp_path):
    """The run folder and its <target>.h5 are accepted by separate.py (tiny network config
    read from vocals.yaml beside the weights)."""
    full, _, _ = trained
    song = write_audio(tmp_path / "s.wav", synthetic_music(1.0, SR, 2), SR)
    run("separate.py", song, "--model", full, "--residual", "--out-dir", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out" / "s").iterdir()) == [
        "accompaniment.wav", "vocals.wav"]
    sep = cli.make_separator(str(full / "vocals.h5"), flip_average=False)
    assert sep.targets == ["vocals"] and sep.n_fft == 1024


def test_train_rejects_unknown_config_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("patch_lenght: 32\n")
    proc = run("train.py", "--output", tmp_path / "run", "--config", bad, check=False)
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1 and "unknown key 'patch_lenght'" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_train_rejects_bad_patch_length(tmp_path):
    proc = run("train.py", "--output", tmp_path / "run", "--patch-length", 63, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: patch length 63")


@pytest.mark.parametrize("ext,sr,channels", [("wav", 22050, 1), ("flac", 44100, 2),
                                             ("flac", 48000, 3)])
def test_separate_keeps_length_rate_and_targets(tiny_model, tmp_path, ext, sr, channels):
    song = write_audio(tmp_path / f"song.{ext}", synthetic_music(1.3, sr, channels), sr)
    proc = run("separate.py", song, "--model", tiny_model, "--out-dir", tmp_path / "out")
    if channels > 2:
        assert "first two" in proc.stderr
    written = sorted(p.name for p in (tmp_path / "out" / "song").iterdir())
    assert written == ["drums.wav", "vocals.wav"]
    for name in written:
        audio, rate = sf.read(str(tmp_path / "out" / "song" / name))
        assert rate == sr and audio.shape == (int(1.3 * sr), 2)
        assert np.all(np.isfinite(audio)) and np.abs(audio).max() > 0


def test_separate_mp3_input_one_target_and_residual(tiny_model, tmp_path):
    mp3 = write_audio(tmp_path / "clip.mp3", synthetic_music(1.0, SR, 2), SR)
    run("separate.py", mp3, "--model", tiny_model, "--out-dir", tmp_path / "out",
        "--targets", "drums", "--residual", "--no-flip-average", "--no-mwf")
    folder = tmp_path / "out" / "clip"
    assert sorted(p.name for p in folder.iterdir()) == ["accompaniment.wav", "drums.wav"]
    expected, _ = sf.read(str(mp3), dtype="float32")
    drums, rate = sf.read(str(folder / "drums.wav"), dtype="float32")
    rest, _ = sf.read(str(folder / "accompaniment.wav"), dtype="float32")
    assert rate == SR and drums.shape == expected.shape
    np.testing.assert_allclose(drums + rest, expected, atol=1e-5)  # residual completes the mix


@pytest.mark.parametrize("content", ["missing", "empty", "text", "nan"])
def test_separate_bad_input_one_line_error_nothing_written(tiny_model, tmp_path, content):
    path = tmp_path / "bad.wav"
    if content == "empty":
        path.write_bytes(b"")
    elif content == "text":
        path.write_text("this is not audio\n")
    elif content == "nan":
        write_audio(path, np.full((SR, 2), np.nan, dtype=np.float32), SR)
    good = write_audio(tmp_path / "good.wav", synthetic_music(1.0, SR, 2), SR)
    out = tmp_path / "out"
    proc = run("separate.py", good, path, "--model", tiny_model, "--out-dir", out, check=False)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "[nnabla]" not in ln]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("model", ["junk", "wrong-network"])
def test_separate_bad_model_is_one_line(tiny_model, tmp_path, model):
    song = write_audio(tmp_path / "s.wav", synthetic_music(1.0, SR, 2), SR)
    if model == "junk":
        weights = tmp_path / "vocals.h5"
        weights.write_bytes(b"not hdf5")
    else:  # tiny weights without their vocals.yaml: the official vocals network does not fit
        weights = tmp_path / "vocals.h5"
        weights.write_bytes((tiny_model / "vocals.h5").read_bytes())
    proc = run("separate.py", song, "--model", weights, "--out-dir", tmp_path / "o", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error:")
    assert "Traceback" not in proc.stderr and not (tmp_path / "o").exists()


def test_chunked_separation_builds_one_graph_per_target(tiny_model, tmp_path):
    """Many chunks and several files go through one network graph per target."""
    files = [write_audio(tmp_path / f"f{i}.wav", synthetic_music(d, SR, 2, seed=i), SR)
             for i, d in enumerate((2.3, 1.2))]
    sep = cli.make_separator(str(tiny_model), flip_average=False)
    separate_files(validate_inputs([str(f) for f in files]), sep, out_dir=tmp_path / "out",
                   chunk_dur=1.0, chunk_overlap=0.25, progress=False)
    assert sep.graph_builds == len(sep.targets) == 2
    for f in files:
        n = sf.info(str(f)).frames
        assert sf.info(str(tmp_path / "out" / f.stem / "vocals.wav")).frames == n


def test_chunking_off_equals_direct_call(tiny_model, tmp_path):
    audio = synthetic_music(2.0, SR, 2)
    song = write_audio(tmp_path / "s.wav", audio, SR)
    sep = cli.make_separator(str(tiny_model), flip_average=False)
    direct = sep(audio)
    separate_files(validate_inputs([str(song)]), sep, out_dir=tmp_path / "out", chunk_dur=0,
                   progress=False)
    for name, est in direct.items():
        written, _ = sf.read(str(tmp_path / "out" / "s" / f"{name}.wav"), dtype="float32")
        np.testing.assert_array_equal(written, est)


def test_eval_scores_bundled_track_and_skips_on_rerun(tiny_model, tmp_path):
    root = bundled_musdb_root()
    out = tmp_path / "eval"
    first = run("eval.py", "--model", tiny_model, "--root", root, "--out-dir", out,
                "--no-flip-average")
    scores = list((out / "test").glob("*.json"))
    assert len(scores) == 1
    data = json.loads(scores[0].read_text())
    assert {t["name"] for t in data["targets"]} == {"vocals", "drums"}
    assert "SDR" in first.stdout and (out / "sdr_test.png").exists()
    assert (out / "scores_test.md").exists()
    again = run("eval.py", "--model", tiny_model, "--root", root, "--out-dir", out,
                "--no-flip-average")
    assert "skip" in (again.stdout + again.stderr).lower()
    assert json.loads(scores[0].read_text()) == data
