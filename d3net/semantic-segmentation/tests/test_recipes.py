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

The checks every paper shares (:class:`common.dev.recipes.RecipeChecks`) run on the data
below; this file adds the two official network files (in their flat layout), the published
backbone each recipe starts from, and the official command line with the official flat file.
"""
from pathlib import Path

import pytest
import yaml

pytest.register_assert_rewrite("common.dev.recipes")  # failing checks show their values

from common.dev.recipes import RecipeChecks  # noqa: E402
from d3net_seg.model import load_config  # noqa: E402
from d3net_seg.training import backbone_source, network_config, parse_args  # noqa: E402

FOLDER = Path(__file__).resolve().parents[1]
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
# The real run of a recipe config: the smoke run's tiny network for two iterations on the
# CPU, on the generated set.
CHEAP = {"synthetic": True, "crop_size": [64, 128], "num_init_features": 16,
         "num_layers": [2, 2, 2, 2], "n_blocks": [1, 1, 1, 1], "dens_k": [8, 8, 8, 8],
         "dense_n_out_layer_block": [2, 2, 2, 2], "intermediate_out_ch": [16, 16, 16, 16],
         "channels": 32, "backbone_weights": "none", "batch_size": 2, "max_iter": 2,
         "context": "cpu", "loader_threads": 0}


CHECKS = RecipeChecks(
    script=FOLDER / "train.py", parse_args=parse_args,
    recipes={name: recipe(network) for name, network in RECIPES.items()},
    default="train_D3Net_L.yaml", smoke_file="train_smoke.yaml", smoke=SMOKE,
    execution=EXECUTION, root=ROOT, overrides={"max_iter": 7, "lr": 0.02}, cheap=CHEAP,
    smoke_cheap={"stop_at_iter": 1})
resolve = CHECKS.resolve


def ours_flat(network):
    """This repository's network file in the official flat layout."""
    config = load_config(network)
    return {**config["model"], **config["train"], "mean": config["preprocess"]["mean"],
            "std": config["preprocess"]["std"], "palette": config["palette"]}


def test_every_shipped_config_is_listed():
    CHECKS.check_shipped(*(f"{n}.yaml" for n in OFFICIAL_NETWORKS))


@pytest.mark.parametrize("network", sorted(OFFICIAL_NETWORKS))
def test_network_file_is_the_official_one(network):
    assert ours_flat(network) == OFFICIAL_NETWORKS[network]
    assert load_config(network)["preprocess"]["to_rgb"]  # image_preprocess.standardize


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_file_holds_exactly_the_official_values(name):
    CHECKS.check_file(name)
    CHECKS.check_differences(name, official_recipe(RECIPES[name]), DIFFERENCES)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_the_config_resolves_to_the_official_recipe_and_nothing_else(name):
    """``--config FILE --root R``: every option is an official value, a listed difference, an
    execution choice or about the command; the network is the official one, initialised from
    its published backbone."""
    args = CHECKS.check_resolves(name)
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
    ours = resolve("--config", CHECKS.configs / f"train_{network}.yaml", "--root", ROOT,
                   "--backbone-weights", "bb.h5", output="out")
    assert official == {**ours, "network_config": str(flat)}
    # by name, and the official default network (no -cfg) is D3Net-L
    assert resolve("--root", ROOT, "-cfg", network) == resolve(
        "--config", CHECKS.configs / f"train_{network}.yaml", "--root", ROOT)
    assert resolve("--root", ROOT) == resolve(
        "--config", CHECKS.configs / "train_D3Net_L.yaml", "--root", ROOT)


def test_smoke_settings_apply_only_without_root_and_config(tmp_path):
    CHECKS.check_smoke_layering(tmp_path)


@pytest.mark.parametrize("name", [*sorted(RECIPES), "train_smoke.yaml"])
def test_a_real_run_saves_what_the_config_says(name, tmp_path):
    CHECKS.check_real_run(name, tmp_path)
