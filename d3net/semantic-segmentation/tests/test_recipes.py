"""Every shipped configuration (configs/*.yaml) against the recipe it stands for, key by key,
and the option layering of train.py.

The official values are LISTED HERE, transcribed from sony/ai-research-code
``d3net/semantic-segmentation/`` (commit 029db9c, the folder's last change): the two network
files ``configs/D3Net_S.yaml`` / ``configs/D3Net_L.yaml`` (every key: the network, the
training values, the normalisation, the palette), the defaults of ``train.py`` ``get_args``
(``--config-file ./configs/D3Net_L.yaml``, ``--log-interval 50``, ``--context cudnn``, no
``--recompute``) and what ``image_preprocess.py`` fixes in code (random scale 0.5-2.0, a
512x1024 crop, flip with probability 0.5, photometric distortion; the ``train.txt`` split).
The official commands (README) are ``train.py -d ROOT -cfg ./configs/D3Net_{S,L}.yaml -p
BACKBONE -o OUT -c cudnn``.

Differences kept on purpose (d3net/README.md, d3net_seg/training.py), listed in
``DIFFERENCES``: a fixed seed (officially none, a new one every run) and the ImageNet backbone
named ``auto`` (the published one of the network, downloaded once; officially a required
path to the same file). Options this repository adds change how a run executes, not what it
computes; they are listed in ``EXECUTION``.

Checked three ways: each file holds exactly the listed values; train.py resolves the file
(and the official command line, with the official flat network file) to the official recipe,
every option accounted for, and the CPU smoke settings never leak into it; a real tiny run
of train.py saves a ``config.yaml`` that says what the file says (the only differences: the
tiny overrides given as flags).
"""
from pathlib import Path

import pytest
import yaml

from common.dev.testing import as_flags, QUIET_ENV, run_script
from d3net_seg.model import load_config
from d3net_seg.training import backbone_source, network_config, parse_args

FOLDER = Path(__file__).resolve().parents[1]
TRAIN = FOLDER / "train.py"
CONFIGS = FOLDER / "configs"
ROOT = "/data/cityscapes"

# The official configs/D3Net_{S,L}.yaml, every key.
_SHARED_NETWORK = {
    "batch_size": 8, "num_init_features": 64, "num_layers": [4, 4, 4, 4],
    "block_comp": [0.2, 0.2, 0.2, 0.2], "trans_comp_factor": 2,
    "dense_n_out_layer_block": [4, 4, 4, 4], "dilation": [True, True, True, True],
    "image_height": 512, "image_width": 1024, "num_classes": 19, "max_iter": 80000,
    "save_interval": 8000, "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0005, "power": 0.9,
    "min_lr": 0.0001, "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375],
    "palette": [[128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156],
                [190, 153, 153], [153, 153, 153], [250, 170, 30], [220, 220, 0],
                [107, 142, 35], [152, 251, 152], [70, 130, 180], [220, 20, 60], [255, 0, 0],
                [0, 0, 142], [0, 0, 70], [0, 60, 100], [0, 80, 100], [0, 0, 230],
                [119, 11, 32]]}
OFFICIAL_NETWORKS = {
    "D3Net_S": {**_SHARED_NETWORK, "n_blocks": [8, 8, 8, 8], "dens_k": [36, 36, 36, 36],
                "intermediate_out_ch": [32, 40, 64, 128], "channels": 264},
    "D3Net_L": {**_SHARED_NETWORK, "n_blocks": [10, 10, 10, 10], "dens_k": [64, 64, 64, 64],
                "intermediate_out_ch": [32, 48, 96, 192], "channels": 368},
}
# Network-file key -> option of train.py, for the training values it holds.
TRAINING_KEYS = ("batch_size", "max_iter", "save_interval", "lr", "momentum", "weight_decay",
                 "power", "min_lr")
# train.py get_args defaults and image_preprocess.py: the same for both networks.
OFFICIAL_SCRIPT = {"log_interval": 50, "context": "cudnn", "recompute": False,
                   "scale_range": [0.5, 2.0], "flip": True, "photometric": True,
                   "train_split": "train", "synthetic": False}
ARCH_OPTIONS = ("num_init_features", "num_layers", "n_blocks", "dens_k",
                "dense_n_out_layer_block", "block_comp", "intermediate_out_ch",
                "trans_comp_factor", "channels")
# option -> (official value, value here), on purpose
DIFFERENCES = {"seed": (None, 0), "backbone_weights": ("BACKBONE.h5 (required)", "auto")}


def official_recipe(network):
    """The official values of one run, under this repository's option names (the network's
    own sizes: no override)."""
    values = OFFICIAL_NETWORKS[network]
    return {**{k: values[k] for k in TRAINING_KEYS}, **OFFICIAL_SCRIPT,
            "crop_size": [values["image_height"], values["image_width"]],
            "network_config": network, **dict.fromkeys(ARCH_OPTIONS),
            **{k: official for k, (official, _) in DIFFERENCES.items()}}


def recipe(network):
    return {**official_recipe(network), **{k: here for k, (_, here) in DIFFERENCES.items()}}


RECIPES = {"train_D3Net_S.yaml": "D3Net_S", "train_D3Net_L.yaml": "D3Net_L"}
# This repository's CPU smoke run (a tiny D3Net on generated data): no published recipe;
# listed so that it cannot drift unnoticed (it is layered on train_D3Net_L.yaml).
SMOKE = {"synthetic": True, "synthetic_images": [8, 4], "synthetic_size": [128, 256],
         "root": None, "crop_size": [64, 128], "scale_range": [0.5, 2.0],
         "network_config": "D3Net_S", "num_init_features": 16, "num_layers": [2, 2, 2, 2],
         "n_blocks": [1, 1, 1, 1], "dens_k": [8, 8, 8, 8],
         "dense_n_out_layer_block": [2, 2, 2, 2], "intermediate_out_ch": [16, 16, 16, 16],
         "channels": 32, "backbone_weights": "none", "batch_size": 8, "max_iter": 60,
         "lr": 0.1, "min_lr": 0.0001, "save_interval": 30, "checkpoint_interval": 10,
         "log_interval": 1, "loader_threads": 2, "context": "cpu"}
# How a run executes (no effect on what it computes): this repository's choices; the synthetic
# set's size matters only with --synthetic.
EXECUTION = {"stop_at_iter": 0, "checkpoint_interval": 1000, "keep_last": 3,
             "loader_threads": 4, "synthetic_images": [8, 4], "synthetic_size": [128, 256],
             "ooc_budget": None, "ooc_window": None, "type_config": "float", "device_id": 0}
# Options about the command itself (``config`` and ``verbose`` are not saved with a run).
COMMAND = {"output", "resume", "root"}
UNSAVED = {"config", "verbose"}
# The real run of a recipe config: the smoke run's tiny network for two iterations on the
# CPU, on the generated set.
CHEAP = {"synthetic": True, "crop_size": [64, 128], "num_init_features": 16,
         "num_layers": [2, 2, 2, 2], "n_blocks": [1, 1, 1, 1], "dens_k": [8, 8, 8, 8],
         "dense_n_out_layer_block": [2, 2, 2, 2], "intermediate_out_ch": [16, 16, 16, 16],
         "channels": 32, "backbone_weights": "none", "batch_size": 2, "max_iter": 2,
         "context": "cpu", "loader_threads": 0}


def resolve(*argv, output="run"):
    """The options train.py would run with (as saved in config.yaml)."""
    args = parse_args(["--output", output, *map(str, argv)])
    return {k: v for k, v in vars(args).items() if k not in UNSAVED}


def ours_flat(network):
    """This repository's network file in the official flat layout."""
    config = load_config(network)
    return {**config["model"], **config["train"], "mean": config["preprocess"]["mean"],
            "std": config["preprocess"]["std"], "palette": config["palette"]}


def test_every_shipped_config_is_listed():
    networks = [f"{n}.yaml" for n in OFFICIAL_NETWORKS]
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(
        [*networks, *RECIPES, "train_smoke.yaml"])


@pytest.mark.parametrize("network", sorted(OFFICIAL_NETWORKS))
def test_network_file_is_the_official_one(network):
    assert ours_flat(network) == OFFICIAL_NETWORKS[network]
    assert load_config(network)["preprocess"]["to_rgb"]  # image_preprocess.standardize


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_file_holds_exactly_the_official_values(name):
    listed = {**recipe(RECIPES[name]), **EXECUTION, "root": None}
    in_file = yaml.safe_load((CONFIGS / name).read_text())
    assert set(in_file) - set(listed) == set(), "a key this test does not list"
    for key, value in in_file.items():
        assert value == listed[key], (name, key, value, listed[key])
    official = official_recipe(RECIPES[name])
    assert {k for k in official if official[k] != listed[k]} == set(DIFFERENCES)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_the_config_resolves_to_the_official_recipe_and_nothing_else(name):
    """``--config FILE --root R``: every option is an official value, a listed difference, an
    execution choice or about the command; the network is the official one, initialised from
    its published backbone."""
    args = parse_args(["--output", "run", "--config", str(CONFIGS / name), "--root", ROOT])
    resolved = {k: v for k, v in vars(args).items() if k not in UNSAVED}
    expected = {**recipe(RECIPES[name]), **EXECUTION, "root": ROOT}
    assert set(resolved) == set(expected) | COMMAND, "an option this test does not list"
    for key, value in expected.items():
        assert resolved[key] == value, (name, key, resolved[key], value)
    config, modified = network_config(args)
    assert not modified and config["name"] == RECIPES[name]
    backbone = backbone_source(args.backbone_weights, config, modified)
    assert backbone == RECIPES[name].lower().replace("_", "-") + "-backbone"


@pytest.mark.parametrize("network", sorted(OFFICIAL_NETWORKS))
def test_the_official_command_line_trains_the_same_recipe(network, tmp_path):
    """``train.py --data-dir ROOT -cfg ./configs/D3Net_X.yaml -p BACKBONE -o OUT -c cudnn``
    with the official flat file itself: the recipe of train_D3Net_X.yaml."""
    flat = tmp_path / f"{network}.yaml"
    flat.write_text(yaml.safe_dump(OFFICIAL_NETWORKS[network]))
    official = resolve("--data-dir", ROOT, "-cfg", flat, "-p", "bb.h5", "-o", "out", "-c",
                       "cudnn", output="ignored")
    ours = resolve("--config", CONFIGS / f"train_{network}.yaml", "--root", ROOT,
                   "--backbone-weights", "bb.h5", output="out")
    assert official == {**ours, "network_config": str(flat)}
    # by name, and the official default network (no -cfg) is D3Net-L
    assert resolve("--root", ROOT, "-cfg", network) == resolve(
        "--config", CONFIGS / f"train_{network}.yaml", "--root", ROOT)
    assert resolve("--root", ROOT) == resolve("--config", CONFIGS / "train_D3Net_L.yaml",
                                              "--root", ROOT)


def test_smoke_settings_apply_only_without_root_and_config(tmp_path):
    """Built-in defaults < --config < flags; the smoke file sits between the defaults and the
    flags only when neither a dataset root nor --config is given."""
    base = recipe("D3Net_L")
    smoke = resolve()
    assert {k: smoke[k] for k in SMOKE} == SMOKE
    assert {k: smoke[k] for k in base if k not in SMOKE} == {
        k: v for k, v in base.items() if k not in SMOKE}
    # explicit flags stay on top of the smoke run ...
    assert resolve("--max-iter", 7) == {**smoke, "max_iter": 7}
    # ... and of the recipe: a root or a config file, and no smoke value leaks in
    for argv, name in ((["--root", ROOT], "train_D3Net_L.yaml"),
                       (["--config", CONFIGS / "train_D3Net_S.yaml"], "train_D3Net_S.yaml")):
        args = resolve(*argv)
        want = {**recipe(RECIPES[name]), **EXECUTION,
                "root": ROOT if "--root" in argv else None}
        assert {k: args[k] for k in SMOKE} == {k: want[k] for k in SMOKE}, argv
    assert resolve("--root", ROOT, "--lr", 0.02) == {**resolve("--root", ROOT), "lr": 0.02}
    # a partial config file (here one naming the data): the rest is the recipe, never the smoke
    # run, whether or not it gives a dataset root
    partial = tmp_path / "partial.yaml"
    partial.write_text("max_iter: 3\n")
    assert resolve("--config", partial) == {**resolve("--root", ROOT), "max_iter": 3,
                                            "root": None}
    partial.write_text(f"root: {ROOT}\n")
    assert resolve("--config", partial) == resolve("--root", ROOT)


@pytest.mark.parametrize("name", [*sorted(RECIPES), "train_smoke.yaml"])
def test_a_real_run_saves_what_the_config_says(name, tmp_path):
    out = tmp_path / "run"
    if name == "train_smoke.yaml":  # what `train.py --output DIR` runs, one iteration of it
        overrides = {"stop_at_iter": 1}
        argv = ["--output", out, *as_flags(overrides)]
        expected = {**recipe("D3Net_L"), **EXECUTION, **SMOKE}
    else:
        overrides = CHEAP
        argv = ["--config", CONFIGS / name, "--output", out, *as_flags(CHEAP)]
        expected = {**recipe(RECIPES[name]), **EXECUTION, "root": None}
    run_script(TRAIN, *argv, env=QUIET_ENV)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    in_file = yaml.safe_load((CONFIGS / name).read_text())
    assert set(saved) == set(expected) | COMMAND
    for key, value in in_file.items():
        assert saved[key] == overrides.get(key, value), (name, key, saved[key])
    for key, value in expected.items():
        assert saved[key] == overrides.get(key, value), (name, key, saved[key])
