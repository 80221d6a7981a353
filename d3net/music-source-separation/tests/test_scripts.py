"""The entry scripts as a user runs them. The contracts both separation papers share (training
lifecycle, separate.py and eval.py behaviour) are the tests of
:class:`common.dev.mss_testing.ScriptContracts`, run here for D3Net with tiny networks
(configs/smoke_network.yaml), so everything runs on CPU in seconds; below them the D3Net
specifics: the run folder in the official format, the learning-rate scaling, a resume from a
mid-epoch checkpoint, the run folder as --model, network configs (also official flat ones)."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from common.dev.mss_testing import PaperScripts, ScriptContracts, run, series
from common.dev.testing import assert_one_line_error, synthetic_music, write_audio
from common.runtime.params_io import read_param_file
from d3net_mss import cli, training
from d3net_mss.model import D3NetMSS, load_config
from d3net_mss.training import export_weights

MSS = Path(__file__).resolve().parents[1]
SR = 44100
# The default (smoke) config with 2 iterations per epoch and a checkpoint after every one.
TINY_TRAIN = ("--samples-per-track", 4, "--batch-size", 2, "--checkpoint-interval", 1,
              "--loader-threads", 0)

PAPER = PaperScripts(
    folder=MSS, tiny_train=TINY_TRAIN, run_folder="vocals", weights_name="vocals.h5",
    changed_option=("--lr-gamma", 0.5, "--lr-gamma (0.1 -> 0.5)"),
    smoke_config=training.SMOKE_CONFIG, recipe_config=training.RECIPE_CONFIG,
    train_main=training.main, train_parser=training.build_parser,
    model_targets=("vocals", "drums"), separate_flags=("--no-flip-average",),
    graphs_per_model=2)  # one network per target


class TestScripts(ScriptContracts):
    paper = PAPER

    def make_tiny_model(self, folder, seed):
        """A folder with random tiny vocals + drums networks as train.py writes them
        (<target>.h5 in the official format, <target>.yaml beside it)."""
        rng = np.random.RandomState(seed)
        for target in ("vocals", "drums"):
            config = dict(load_config("smoke_network"), target=target)
            model = D3NetMSS(config)
            for name, var in model.create_parameters().items():
                if not name.endswith(("/mean", "/var", "in_offset", "in_scale")):
                    var.d = var.d + rng.uniform(-0.3, 0.3, var.shape)
            export_weights(model, config, folder)
        return Path(folder)

    def make_separator(self, model):
        return cli.make_separator(str(model), flip_average=False)

    def prepare_fake_world(self, monkeypatch, calls):
        """nnabla's synchronised batch norm needs a real communicator: record that it is
        asked for (with the world group) and compute a plain batch norm instead."""
        import nnabla.parametric_functions as PF

        plain = PF.batch_normalization

        def sync_batch_normalization(x, comm, group, batch_stat, name):
            calls.append((comm, group))
            return plain(x, batch_stat=batch_stat, name=name)
        monkeypatch.setattr(PF, "sync_batch_normalization", sync_batch_normalization)

    def check_fake_world(self, calls, comms):
        assert calls and {group for _, group in calls} == {"world"}
        assert {id(comm) for comm, _ in calls} == {id(c) for c in comms}

    # ------------------------------------------------------------------ D3Net specifics
    def test_train_writes_run_folder(self, trained):
        full = trained.full
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

    def test_learning_rate_is_scaled_by_the_batch(self, trained):
        _, lr = series(trained.full / "vocals", "learning rate")
        assert lr == pytest.approx([0.003 * 2 / 6] * 3)  # official scaling by batch / 6

    def test_resume_from_a_mid_epoch_checkpoint_is_bit_exact(self, trained, tmp_path):
        """A run killed after the first iteration of epoch 0 (its newest checkpoint is the
        mid-epoch one) continues with the same data order and ends with the same weights."""
        mid = tmp_path / "mid"
        run(PAPER, "train.py", "--output", mid, "--epochs", 1, *TINY_TRAIN)
        ckpts = mid / "vocals" / "checkpoints"
        for name in ("ckpt_00000002.npz", "best.npz"):  # the epoch-end checkpoint
            (ckpts / name).unlink()
        assert [p.name for p in ckpts.glob("ckpt_*.npz")] == ["ckpt_00000001.npz"]
        proc = run(PAPER, "train.py", "--output", mid, "--epochs", 3, "--resume", *TINY_TRAIN)
        assert "resumed at iteration 1" in proc.stdout
        a, _ = read_param_file(trained.full / "vocals.h5")
        b, _ = read_param_file(mid / "vocals.h5")
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        name = "training loss per iteration"
        assert series(trained.full / "vocals", name) == series(mid / "vocals", name)

    def test_trained_run_separates(self, trained, tmp_path):
        """The run folder and its <target>.h5 are accepted by separate.py (tiny network config
        read from vocals.yaml beside the weights); the official -m/--model-dir spelling."""
        song = write_audio(tmp_path / "s.wav", synthetic_music(1.0, SR, 2), SR)
        run(PAPER, "separate.py", song, "--model-dir", trained.full, "--residual", "--out-dir",
            tmp_path / "out")
        assert sorted(p.name for p in (tmp_path / "out" / "s").iterdir()) == [
            "accompaniment.wav", "vocals.wav"]
        sep = cli.make_separator(str(trained.full / "vocals.h5"), flip_average=False)
        assert sep.targets == ["vocals"] and sep.n_fft == 1024

    def test_residual_completes_the_mixture(self, tiny_model):
        audio = synthetic_music(1.0, SR, 2)
        sep = cli.make_separator(str(tiny_model), targets=["drums"], flip_average=False,
                                 mwf=False, residual=True)
        out = sep(audio)
        assert sorted(out) == ["accompaniment", "drums"]
        np.testing.assert_allclose(out["drums"] + out["accompaniment"], audio, atol=1e-5)

    def test_train_rejects_bad_patch_length(self, tmp_path):
        proc = run(PAPER, "train.py", "--output", tmp_path / "run", "--patch-length", 63,
                   check=False)
        assert_one_line_error(proc, "patch length 63")
        assert not (tmp_path / "run").exists()

    def test_weights_without_their_network_config_are_one_line(self, tiny_model, tmp_path):
        """Tiny weights without their vocals.yaml: the official vocals network does not fit."""
        song = write_audio(tmp_path / "s.wav", synthetic_music(1.0, SR, 2), SR)
        weights = tmp_path / "vocals.h5"
        shutil.copy(tiny_model / "vocals.h5", weights)
        proc = run(PAPER, "separate.py", song, "--model", weights, "--out-dir", tmp_path / "o",
                   check=False)
        assert_one_line_error(proc)
        assert not (tmp_path / "o").exists()

    def test_official_flat_network_config_is_accepted(self, tmp_path):
        """The official configs are flat files of official keys (valid_signal_idx: ...):
        --network-config takes them as well as this repository's layout."""
        flat = tmp_path / "flat.yaml"
        flat.write_text(yaml.safe_dump({k: v for k, v in load_config("smoke_network").items()
                                        if k != "target"}))
        parser = training.build_parser()
        ours = parser.parse_args(["--output", str(tmp_path / "a")])
        theirs = parser.parse_args(["--output", str(tmp_path / "b"), "--network-config",
                                    str(flat)])
        assert training.network_config(theirs) == training.network_config(ours)
