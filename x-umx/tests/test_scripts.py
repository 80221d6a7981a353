"""The entry scripts as a user runs them. The contracts both separation papers share (training
lifecycle, separate.py and eval.py behaviour) are the tests of
:class:`common.dev.mss_testing.ScriptContracts`, run here for X-UMX; below them the X-UMX
specifics: every model size flag honoured, UMX training, the official flag spellings."""
from pathlib import Path

import numpy as np
import pytest

from common.dev.mss_testing import PaperScripts, ScriptContracts, run
from common.dev.testing import assert_one_line_error, synthetic_music, write_audio
from common.runtime.params_io import read_param_file
from xumx import training
from xumx.model import CrossNet, bandwidth_to_max_bin
from xumx.separator import Separator

X_UMX = Path(__file__).resolve().parents[1]
SR = 44100
# A tiny but complete X-UMX run: every stage of the recipe, seconds instead of hours (the WAV
# copy of the bundled track decodes much faster than its .stem.mp4).
TINY_TRAIN = ("--hidden-size", 8, "--nb-layers", 1, "--nfft", 512, "--nhop", 128,
              "--seq-dur", 0.5, "--samples-per-track", 4, "--batch-size", 2, "--valid-dur", 3,
              "--checkpoint-interval", 1, "--loader-threads", 0, "--lr", 0.01, "--is-wav")

PAPER = PaperScripts(
    folder=X_UMX, tiny_train=TINY_TRAIN, run_folder="", weights_name="xumx.h5",
    changed_option=("--nhop", 512, "--nhop (128 -> 512)"),
    smoke_config=training.SMOKE_CONFIG, recipe_config=training.RECIPE_CONFIG,
    train_main=training.main, train_parser=training.build_parser,
    # Two of the four sources keep separation and scoring fast.
    model_targets=("vocals", "bass"), separate_flags=("--targets", "vocals", "bass"),
    # The same computation on another copy of the input: numpy's vectorised loops may group a
    # sum differently for another memory alignment, so a sample can differ in its last bit
    # (one sample in 176,400 by 1 ulp was seen, in one of several runs): at most 2 float32
    # ulps (relative 2.4e-7), or 1e-12 absolute next to zero.
    direct_call_rtol=2.4e-7)


class TestScripts(ScriptContracts):
    paper = PAPER

    def make_tiny_model(self, folder, seed):
        """A small X-UMX with random weights in the official file format."""
        path = Path(folder) / "xumx.h5"
        model = CrossNet(hidden_size=8, nb_layers=1, max_bin=600)
        model.create_parameters()
        rng = np.random.RandomState(seed)
        for name, var in model.get_parameters().items():
            if name.startswith(("input_", "output_")) or "/bn/" in name:
                continue
            var.d = rng.uniform(-0.5, 0.5, var.shape)
        model.save_parameters(str(path))
        return path

    def make_separator(self, model):
        return Separator(str(model))

    # ------------------------------------------------------------------ X-UMX specifics
    def test_train_writes_run_directory(self, trained):
        full = trained.full
        for name in ("config.yaml", "input_stats.npz", "xumx.h5", "checkpoints/best.npz"):
            assert (full / name).exists(), name
        params, _ = read_param_file(full / "xumx.h5")
        # every size flag is honoured: hidden 8, one LSTM layer, n_fft 512 cut at 16 kHz
        max_bin = bandwidth_to_max_bin(SR, 512, 16000)
        assert params["fc1_bass/affine/W"].shape == (2 * max_bin, 8)
        assert params["output_scale_vocals"].shape == (257,)
        assert params["lstm_bass/lstm/weight_l0"].shape[0] == 2  # bidirectional
        assert "lstm_bass/lstm/weight" not in params  # one layer has no deeper weights

    def test_umx_trains_one_target_and_its_file_separates(self, tmp_path):
        run_dir = tmp_path / "umx"
        # the official spellings: --umx-train, --source, --valid_dur
        run(PAPER, "train.py", "--output", run_dir, "--umx-train", "--source", "bass",
            "--epochs", 1, *TINY_TRAIN, "--valid_dur", 2)
        params, _ = read_param_file(run_dir / "bass.h5")
        assert "fc1/affine/W" in params and "input_mean" in params  # official unscoped UMX names
        song = write_audio(tmp_path / "s.wav", synthetic_music(1.0, SR, 2), SR)
        run(PAPER, "separate.py", song, "--model", run_dir / "bass.h5", "--out-dir",
            tmp_path / "out", "--umx-infer")
        assert sorted(p.name for p in (tmp_path / "out" / "s").iterdir()) == [
            "accompaniment.wav", "bass.wav"]

    def test_umx_infer_refuses_x_umx_weights(self, tiny_model, tmp_path):
        song = write_audio(tmp_path / "s.wav", synthetic_music(1.0, SR, 2), SR)
        proc = run(PAPER, "separate.py", song, "--model", tiny_model, "--umx-infer",
                   "--out-dir", tmp_path / "out", check=False)
        assert_one_line_error(proc, "--umx-infer", "X-UMX weights")
        assert not (tmp_path / "out").exists()

    @pytest.mark.parametrize("flag,value", [("--alpha", "nan"), ("--niter", "-1"),
                                            ("--chunk-dur", "-2"), ("--hidden-size", "0")])
    def test_out_of_range_numbers_are_one_line(self, tmp_path, flag, value):
        proc = run(PAPER, "separate.py", tmp_path / "s.wav", flag, value, check=False)
        assert_one_line_error(proc, f"argument {flag}")

    def test_official_training_flags_are_accepted(self, tmp_path):
        args = training.build_parser().parse_args([
            "--output", str(tmp_path), "--umx-train", "--source", "drums", "--valid_dur", "7",
            "-c", "cpu", "-d", "0"])
        assert (args.model_type, args.target, args.valid_dur) == ("umx", "drums", 7.0)
