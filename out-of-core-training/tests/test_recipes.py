"""Every shipped configuration (configs/*.yaml) against the recipe it stands for, key by key.

The values are written out here, each with its source, not read from the code: a change to a
config file, to train.py's defaults or to the network definitions that moves a run away from
its recipe fails here.

* ``resnet50.yaml``: the paper's headline network (Hayakawa & Narihira 2020 train ResNet-50
  on ImageNet; they measure speed and memory and publish no training schedule). The
  schedule is the standard large-batch ImageNet recipe of Goyal et al. 2017 ("Accurate,
  Large Minibatch SGD", section 5.1): momentum SGD 0.9, weight decay 1e-4, learning rate
  0.1 per 256 images, 90 epochs, divided by 10 at epochs 30, 60 and 80. The network is
  torchvision's ``resnet50`` (He et al. 2016): bottleneck blocks 3-4-6-3, base width 64,
  expansion 4, 25,557,032 parameters;
* ``densenet121.yaml``: the first network of the official README's figure, with DenseNet's
  own ImageNet recipe (Huang et al. 2017, section 4.2): 90 epochs at batch 256, learning
  rate 0.1 divided by 10 at epochs 30 and 60, weight decay 1e-4, Nesterov momentum 0.9. The
  network is torchvision's ``densenet121``: growth 32, blocks 6-12-24-16, 64 stem channels,
  bottleneck 4x growth, compression 0.5, 7,978,856 parameters;
* ``smoke.yaml``: no published recipe; the repository's CPU smoke settings, listed so that
  they cannot drift unnoticed.

Each config is checked three ways: the file holds exactly the listed values; train.py
resolves ``--config FILE`` to them (network sizes included); and a real one-iteration run of
train.py saves a ``config.yaml`` that says what the file says (the recipe configs run on
synthetic 32x32 images on the CPU; those overrides are the only keys that differ).
"""
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

from common.dev.testing import run_script

FOLDER = Path(__file__).resolve().parents[1]
TRAIN = FOLDER / "train.py"
CONFIGS = FOLDER / "configs"
ENV = {"NNABLA_RESEARCH_NO_PROGRESS": "1"}
EPOCH = 5005            # ImageNet-1k: ceil(1,281,167 / 256) iterations per epoch at batch 256

RECIPES = {
    "resnet50.yaml": {           # Goyal et al. 2017, section 5.1
        "dataset": "imagenet", "arch": "resnet50", "small_input": False, "batch_size": 256,
        "iterations": 90 * EPOCH, "lr": 0.1,
        "lr_milestones": [30 * EPOCH, 60 * EPOCH, 80 * EPOCH], "solver": "momentum",
        "momentum": 0.9, "weight_decay": 1e-4},
    "densenet121.yaml": {        # Huang et al. 2017, section 4.2
        "dataset": "imagenet", "arch": "densenet121", "small_input": False, "batch_size": 256,
        "iterations": 90 * EPOCH, "lr": 0.1, "lr_milestones": [30 * EPOCH, 60 * EPOCH],
        "solver": "nesterov", "momentum": 0.9, "weight_decay": 1e-4},
    "smoke.yaml": {              # this repository's CPU smoke run, not a published recipe
        "dataset": "mnist5k", "arch": "resnet50", "blocks": [1, 1, 1, 1], "width": 8,
        "small_input": True, "batch_size": 32, "iterations": 60, "lr": 0.05,
        "lr_milestones": [45], "solver": "momentum", "momentum": 0.9, "weight_decay": 1e-4},
}
# How and where a run executes (no effect on the recipe): the repository's choices.
EXECUTION = {
    "resnet50.yaml": {"val_interval": EPOCH, "checkpoint_interval": 1000, "loader_threads": 8,
                      "context": "cudnn"},
    "densenet121.yaml": {"val_interval": EPOCH, "checkpoint_interval": 1000,
                         "loader_threads": 8, "context": "cudnn"},
    "smoke.yaml": {"val_interval": 30, "val_batches": 8, "checkpoint_interval": 20,
                   "loader_threads": 2, "context": "cpu"},
}
NETWORKS = {
    "resnet50.yaml": {"blocks": (3, 4, 6, 3), "width": 64, "expansion": 4},
    "densenet121.yaml": {"blocks": (6, 12, 24, 16), "growth": 32, "stem": 64, "bottleneck": 4,
                         "compression": 0.5},
    "smoke.yaml": {"blocks": (1, 1, 1, 1), "width": 8, "expansion": 4},
}
# torchvision's parameter counts with the 1000-class head swapped for a 2-class one
TWO_CLASS_PARAMETERS = {"resnet50.yaml": 25_557_032 - 998 * (2048 + 1),
                        "densenet121.yaml": 7_978_856 - 998 * (1024 + 1)}
# The real run of a recipe config: synthetic 32x32 images on the CPU, one iteration.
CHEAP = {"dataset": "synthetic", "image_size": 32, "num_classes": 2, "synthetic_samples": 4,
         "batch_size": 2, "stop_at_iter": 1, "val_batches": 1, "context": "cpu",
         "loader_threads": 0}
NAMES = sorted(RECIPES)


def test_every_shipped_config_is_listed():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_config_file_holds_exactly_the_listed_values(name):
    listed = {**RECIPES[name], **EXECUTION[name]}
    in_file = yaml.safe_load((CONFIGS / name).read_text())
    # a recipe value the file leaves out is train.py's default (checked below)
    assert set(in_file) - set(listed) == set(), "a config key this test does not list"
    assert set(EXECUTION[name]) <= set(in_file)
    for key, value in in_file.items():
        assert value == listed[key], (name, key, value, listed[key])


def _resolved(argv):
    from ooctrain.training import parse_args
    return parse_args(argv)


@pytest.mark.parametrize("name", NAMES)
def test_train_resolves_the_config_to_its_recipe(name):
    from ooctrain.cli import model_spec_from_args

    args = _resolved(["--output", "x", "--config", str(CONFIGS / name)])
    for key, value in {**RECIPES[name], **EXECUTION[name]}.items():
        assert getattr(args, key) == value, (name, key, getattr(args, key), value)
    assert asdict(model_spec_from_args(args).config()) == NETWORKS[name]


def test_a_data_set_root_alone_resolves_to_the_resnet50_recipe():
    """train.py's own defaults are the paper's recipe (without --config, with --root)."""
    from ooctrain.cli import model_spec_from_args

    args = _resolved(["--output", "x", "--root", "/data/imagenet"])
    for key, value in RECIPES["resnet50.yaml"].items():
        assert getattr(args, key) == value, (key, getattr(args, key), value)
    assert asdict(model_spec_from_args(args).config()) == NETWORKS["resnet50.yaml"]


@pytest.mark.parametrize("name", NAMES)
def test_a_real_run_saves_what_the_config_says(name, tmp_path):
    out = tmp_path / "run"
    if name == "smoke.yaml":       # what `train.py --output DIR` runs, one iteration of it
        overrides = {"stop_at_iter": 1}
        argv = ["--output", out, "--stop-at-iter", "1"]
    else:
        overrides = CHEAP
        argv = ["--config", CONFIGS / name, "--output", out]
        for key, value in CHEAP.items():
            argv += [f"--{key.replace('_', '-')}", value]
    proc = run_script(TRAIN, *argv, env=ENV)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    in_file = yaml.safe_load((CONFIGS / name).read_text())
    for key, value in in_file.items():
        assert saved[key] == overrides.get(key, value), (name, key, saved[key])
    for key, value in overrides.items():
        assert saved[key] == value, (name, key, saved[key])
    if name in TWO_CLASS_PARAMETERS:    # the published network, not the smoke run's sizes
        arch = RECIPES[name]["arch"]
        assert f"{arch}: {TWO_CLASS_PARAMETERS[name]:,} parameters" in proc.stdout
