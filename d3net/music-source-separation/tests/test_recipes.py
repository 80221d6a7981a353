"""Every shipped configuration (configs/*.yaml) against the recipe it stands for, key by key,
and the option layering of train.py.

The official values are LISTED HERE, transcribed from sony/ai-research-code
``d3net/music-source-separation/`` (commit 029db9c, the folder's last change): the defaults of
``args.py`` ``get_train_args`` and of the flags ``data.py`` ``load_datasources`` adds, the
values ``train.py`` fixes in code (256-frame training patches for every target, Xavier
initialisation, ``AnnealingScheduler(anneal_steps=[40], anneal_factor=0.1)``), ``data.py``'s
gain 0.75-1.25 and random track mixing, and the four per-target network files
``configs/<target>.yaml``. The official command (README) is ``train.py --root R --target T
--output O [--is-wav]``, i.e. these defaults.

Differences kept on purpose (d3net/README.md, d3net_mss/training.py), listed in
``DIFFERENCES``: a fixed seed (officially none, a new one every run); the MUSDB18 layout is the
user's choice (officially always the decoded WAV one: its ``--is-wav`` defaults to true); and
validation on musdb's 14 validation tracks (the official trains on all 100 tracks without
validating; not an option). ``--nfft`` / ``--nhop`` are officially parsed but unused (the STFT
is the network config's), so they are not options here. Options this repository adds change
how a run executes, not what it computes; they are listed in ``EXECUTION``.

Checked three ways: each file holds exactly the listed values; train.py resolves the file
(and the official command line) to the official recipe, every option accounted for, and the
CPU smoke settings never leak into it; a real tiny run of train.py saves a ``config.yaml``
that says what the file says (the only differences: the tiny overrides given as flags).
"""
from pathlib import Path

import pytest
import yaml

from common.dev.testing import as_flags, QUIET_ENV, run_script
from d3net_mss.model import SOURCES, load_config
from d3net_mss.training import build_parser, excerpt_samples, network_config

FOLDER = Path(__file__).resolve().parents[1]
TRAIN = FOLDER / "train.py"
CONFIGS = FOLDER / "configs"
ROOT = "/data/musdb18"

# args.py get_train_args and data.py load_datasources: official flag -> default.
OFFICIAL_FLAGS = {
    "target": "vocals", "epochs": 50, "batch_size": 6, "lr": 0.001, "seed": None,
    "weight_decay": 0.0001, "seq_dur": 6.0, "nfft": 4096, "nhop": 1024, "context": "cudnn",
    "is_wav": True, "samples_per_track": 64, "source_augmentations": ["gain", "channelswap"]}
# Fixed in the official code: train.py stft(..., patch_length=256), D3NetMSS(init_method=
# 'xavier'), AnnealingScheduler(anneal_steps=[40], anneal_factor=0.1), the network read from
# ./configs/<target>.yaml (network_config None here); data.py _augment_gain(low=0.75,
# high=1.25) and MUSDBDataSource(random_track_mix=True) for the training set.
OFFICIAL_FIXED = {"patch_length": 256, "init_method": "xavier", "lr_milestones": [40],
                  "lr_gamma": 0.1, "network_config": None, "gain_range": [0.75, 1.25],
                  "random_track_mix": True}
NOT_OPTIONS = ("nfft", "nhop")  # officially parsed, never used
# option -> (official value, value here), on purpose
DIFFERENCES = {"seed": (None, 42), "is_wav": (True, False)}
OFFICIAL = {**{k: v for k, v in OFFICIAL_FLAGS.items() if k not in NOT_OPTIONS},
            **OFFICIAL_FIXED}
RECIPE = {**OFFICIAL, **{k: here for k, (_, here) in DIFFERENCES.items()}}

# The official configs/<target>.yaml, every key.
_SHARED_NETWORK = {
    "valid_signal_idx": 1600, "num_init_features": [32, 8], "f_num_init_features": 32,
    "f_n_blocks": [2, 2, 2, 2, 2, 2, 2, 2, 2], "f_comp_rates": [1.0] * 10,
    "ttl_num_layer_block": 3, "ttl_dens_k": 12, "n_channels": 2, "fft_size": 4096,
    "hop_size": 1024, "fs": 44100}
OFFICIAL_NETWORKS = {
    "vocals": {**_SHARED_NETWORK, "band_split_idxs": [256],
               "num_layer_blocks": [[5, 5, 5, 5, 4, 4, 4], [1, 1, 1, 1, 1]],
               "dens_k": [[16, 18, 20, 22, 20, 18, 16], [2, 2, 2, 2, 2]],
               "b_n_blocks": [[2, 2, 2, 2, 2, 2, 2], [1, 1, 1, 1, 1]],
               "comp_rates": [[1.0] * 6, [1.0] * 6],
               "f_num_layer_block": [4, 5, 6, 7, 8, 6, 5, 4, 4],
               "f_dens_k": [13, 14, 15, 16, 17, 16, 14, 12, 11],
               "patch_length": 256, "test_patch_len": 256, "out_shift": 128},
    "drums": {**_SHARED_NETWORK, "band_split_idxs": [128],
              "num_layer_blocks": [[5, 5, 5, 4, 4, 4, 4], [1, 1, 1, 1, 1]],
              "dens_k": [[16, 18, 20, 22, 20, 18, 16], [2, 2, 2, 2, 2]],
              "b_n_blocks": [[2, 2, 2, 2, 2, 2, 2], [1, 1, 1, 1, 1]],
              "comp_rates": [[1.0] * 6, [1.0] * 5],
              "f_num_layer_block": [4, 5, 6, 7, 8, 6, 6, 4, 4],
              "f_dens_k": [13, 14, 15, 16, 16, 16, 14, 12, 11],
              "patch_length": 256, "test_patch_len": 256, "out_shift": 128},
    "bass": {**_SHARED_NETWORK, "band_split_idxs": [192],
             "num_layer_blocks": [[5, 5, 5, 5, 4, 4, 4], [1, 1, 1, 1, 1, 1, 1]],
             "dens_k": [[16, 18, 18, 20, 18, 16, 16], [2, 2, 2, 2, 2, 2, 2]],
             "b_n_blocks": [[2, 2, 2, 2, 2, 2, 2], [1, 1, 1, 1, 1, 1, 1]],
             "comp_rates": [[1.0] * 6, [1.0] * 6],
             "f_num_layer_block": [4, 5, 6, 7, 8, 6, 6, 4, 4],
             "f_dens_k": [10, 10, 12, 14, 16, 14, 12, 8, 8],
             "patch_length": 352, "test_patch_len": 384, "out_shift": 192},
    "other": {**_SHARED_NETWORK, "band_split_idxs": [256],
              "num_layer_blocks": [[5, 5, 5, 5, 4, 4, 4], [1, 1, 1, 1, 1]],
              "dens_k": [[16, 18, 20, 22, 20, 18, 16], [2, 2, 2, 2, 2]],
              "b_n_blocks": [[2, 2, 2, 2, 2, 2, 2], [1, 1, 1, 1, 1]],
              "comp_rates": [[1.0] * 6, [1.0] * 6],
              "f_num_layer_block": [4, 5, 6, 7, 8, 6, 5, 4, 4],
              "f_dens_k": [13, 14, 15, 16, 17, 16, 14, 12, 11],
              "patch_length": 256, "test_patch_len": 256, "out_shift": 128},
}
# This repository's CPU smoke run (a tiny network on the bundled sample): no published recipe;
# listed so that it cannot drift unnoticed (it is layered on train.yaml).
SMOKE = {"target": "vocals", "network_config": "smoke_network", "patch_length": None,
         "seq_dur": None, "root": None, "is_wav": True, "samples_per_track": 8, "batch_size": 2,
         "epochs": 4, "lr": 0.003, "checkpoint_interval": 2, "loader_threads": 2,
         "context": "cpu"}
# How a run executes (no effect on what it computes): this repository's choices. A whole epoch
# per epoch (max_iter_per_epoch 0) and float32 are what the official script does.
EXECUTION = {"max_iter_per_epoch": 0, "checkpoint_interval": 200, "keep_last": 3,
             "loader_threads": 4, "ooc_budget": None, "ooc_window": None,
             "type_config": "float", "device_id": 0}
# Options about the command itself (``config`` and ``verbose`` are not saved with a run).
COMMAND = {"output", "resume", "root"}
UNSAVED = {"config", "verbose"}
# The real run of train.yaml: the tiny network for one iteration on the CPU, on the bundled
# sample's WAV copy.
CHEAP = {"network_config": "smoke_network", "patch_length": 64, "seq_dur": 0.5,
         "batch_size": 2, "samples_per_track": 2, "epochs": 1, "max_iter_per_epoch": 1,
         "context": "cpu", "is_wav": True, "loader_threads": 0}


def parse(*argv):
    return build_parser().parse_args(["--output", "run", *map(str, argv)])


def resolve(*argv):
    """The options train.py would run with (as saved in config.yaml)."""
    return {k: v for k, v in vars(parse(*argv)).items() if k not in UNSAVED}


def test_every_shipped_config_is_listed():
    networks = sorted(f"{t}.yaml" for t in OFFICIAL_NETWORKS)
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(
        [*networks, "smoke_network.yaml", "train.yaml", "train_smoke.yaml"])
    assert sorted(SOURCES) == sorted(OFFICIAL_NETWORKS)


def test_recipe_file_holds_exactly_the_official_values():
    listed = {**RECIPE, **EXECUTION, "root": None}
    in_file = yaml.safe_load((CONFIGS / "train.yaml").read_text())
    assert set(in_file) - set(listed) == set(), "a key this test does not list"
    for key, value in in_file.items():
        assert value == listed[key], (key, value, listed[key])
    # the differences are the listed ones and nothing else
    assert {k for k in OFFICIAL if OFFICIAL[k] != RECIPE[k]} == set(DIFFERENCES)


@pytest.mark.parametrize("target", sorted(OFFICIAL_NETWORKS))
def test_network_file_is_the_official_one(target):
    assert dict(load_config(target)) == {**OFFICIAL_NETWORKS[target], "target": target}


@pytest.mark.parametrize("target", sorted(OFFICIAL_NETWORKS))
def test_the_recipe_resolves_to_the_official_one_for_every_target(target):
    """``--config train.yaml --root R --target T``: every option is an official value, a listed
    difference, an execution choice or about the command; the network is the official one,
    trained on 6 s excerpts through 256-frame patches (bass too: the official train.py fixes
    256 and ignores the network file's 352)."""
    args = parse("--config", CONFIGS / "train.yaml", "--root", ROOT, "--target", target)
    resolved = {k: v for k, v in vars(args).items() if k not in UNSAVED}
    expected = {**RECIPE, **EXECUTION, "root": ROOT, "target": target}
    assert set(resolved) == set(expected) | COMMAND, "an option this test does not list"
    for key, value in expected.items():
        assert resolved[key] == value, (target, key, resolved[key], value)
    network = network_config(args)
    assert dict(network) == {**OFFICIAL_NETWORKS[target], "target": target,
                             "patch_length": 256}
    assert excerpt_samples(args, network) == 6 * 44100


@pytest.mark.parametrize("target", ["vocals", "bass"])
@pytest.mark.parametrize("wav", [False, True])
def test_the_official_command_line_trains_the_same_recipe(target, wav):
    layout = ["--is-wav"] if wav else []
    args = resolve("--root", ROOT, "--target", target, *layout)
    assert args == resolve("--config", CONFIGS / "train.yaml", "--root", ROOT, "--target",
                           target, *layout)
    assert args["is_wav"] is wav


def test_smoke_settings_apply_only_without_root_and_config(tmp_path):
    """Built-in defaults < --config < flags; the smoke file sits between the defaults and the
    flags only when neither a dataset root nor --config is given."""
    smoke = resolve()
    assert {k: smoke[k] for k in SMOKE} == SMOKE
    assert {k: smoke[k] for k in RECIPE if k not in SMOKE} == {
        k: v for k, v in RECIPE.items() if k not in SMOKE}
    # explicit flags stay on top of the smoke run ...
    assert resolve("--epochs", 2) == {**smoke, "epochs": 2}
    # ... and of the recipe: a root or a config file, and no smoke value leaks in
    for argv in (["--root", ROOT], ["--config", CONFIGS / "train.yaml"]):
        args = resolve(*argv)
        want = {**RECIPE, **EXECUTION, "root": ROOT if "--root" in argv else None}
        assert {k: args[k] for k in SMOKE} == {k: want[k] for k in SMOKE}, argv
    assert resolve("--root", ROOT, "--lr", 0.01) == {**resolve("--root", ROOT), "lr": 0.01}
    partial = tmp_path / "partial.yaml"
    partial.write_text("epochs: 3\n")
    assert resolve("--config", partial) == {**resolve("--root", ROOT), "epochs": 3,
                                            "root": None}


@pytest.mark.parametrize("name", ["train.yaml", "train_smoke.yaml"])
def test_a_real_run_saves_what_the_config_says(name, tmp_path):
    out = tmp_path / "run"
    if name == "train_smoke.yaml":  # what `train.py --output DIR` runs, one iteration of it
        overrides = {"epochs": 1, "max_iter_per_epoch": 1}
        argv = ["--output", out, *as_flags(overrides)]
        expected = {**RECIPE, **EXECUTION, **SMOKE}
    else:
        overrides = CHEAP
        argv = ["--config", CONFIGS / name, "--output", out, *as_flags(CHEAP)]
        expected = {**RECIPE, **EXECUTION, "root": None}
    run_script(TRAIN, *argv, env=QUIET_ENV)
    saved = yaml.safe_load((out / "vocals" / "config.yaml").read_text())
    in_file = yaml.safe_load((CONFIGS / name).read_text())
    assert set(saved) == set(expected) | COMMAND
    for key, value in in_file.items():
        assert saved[key] == overrides.get(key, value), (name, key, saved[key])
    for key, value in expected.items():
        assert saved[key] == overrides.get(key, value), (name, key, saved[key])
    # the exported network config is the one trained: the smoke network's own 64-frame patch
    # (smoke run) or the --patch-length 64 given
    exported = yaml.safe_load((out / "vocals.yaml").read_text())
    assert exported["patch_length"] == 64 and exported["fft_size"] == 1024
    assert (out / "vocals.h5").is_file()
