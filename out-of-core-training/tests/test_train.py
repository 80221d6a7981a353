"""out-of-core-training/train.py as a user runs it: the networks at their published sizes,
which defaults apply (the smoke run, the paper's recipe, a --config), the real ImageNet
class-folder layout, synthetic data, validation and bad input. The run-folder contracts
(resume, Ctrl-C, full disk, ...) are in test_run_contracts.py; every shipped config against
its recipe in test_recipes.py."""
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from common.dev.testing import assert_one_line_error, run_script
from common.errors import UserError
from common.runtime.params_io import read_param_file
from common.train.monitor import read_series

TRAIN = Path(__file__).resolve().parents[1] / "train.py"
CONFIGS = TRAIN.parent / "configs"
ENV = {"NNABLA_RESEARCH_NO_PROGRESS": "1"}
TINY = ["--blocks", "1", "1", "--width", "4", "--batch-size", "4", "--iterations", "2",
        "--val-interval", "0", "--checkpoint-interval", "1", "--loader-threads", "0"]


@pytest.mark.parametrize("arch, trainable", [("resnet50", 25_557_032),
                                             ("densenet121", 7_978_856)])
def test_published_sizes(arch, trainable):
    """The parameter counts of the ImageNet networks (torchvision's, for reference)."""
    import nnabla as nn

    from ooctrain.models import ModelSpec, build, count_parameters

    nn.clear_parameters()
    try:
        logits = build(ModelSpec(arch), nn.Variable((1, 3, 224, 224)), 1000, test=True)
        assert logits.shape == (1, 1000)
        assert count_parameters(nn.get_parameters()) == trainable
    finally:
        nn.clear_parameters()


def _class_folders(root, classes=("cat", "dog"), per_class=3):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 255, (40 + 4 * i, 56, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{c}_{i}.JPEG")
    return root


def test_trains_on_imagenet_class_folders(tmp_path):
    root = _class_folders(tmp_path / "imagenet")
    out = tmp_path / "run"
    proc = run_script(TRAIN, "--output", out, "--dataset", "imagenet", "--root", root,
                      "--no-small-input", *TINY)
    assert "6 training images, 2 classes" in proc.stdout
    # a data set root without --config: the paper's recipe, not the smoke run's settings
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["lr"] == 0.1 and config["lr_milestones"] == [150150, 300300, 400400]
    assert config["val_batches"] == 0 and config["small_input"] is False
    params, _ = read_param_file(out / "final.h5")
    assert params["fc/affine/W"].shape[1] == 2          # the classes are the folders
    assert params["stem/conv/W"].shape[2:] == (7, 7)    # the ImageNet stem
    steps, errors = read_series(out, "validation error")
    assert steps.tolist() == [2] and 0.0 <= errors[0] <= 1.0


def test_densenet_on_synthetic_data(tmp_path):
    out = tmp_path / "run"
    run_script(TRAIN, "--output", out, "--dataset", "synthetic", "--image-size", "16",
               "--num-classes", "3", "--synthetic-samples", "12", "--arch", "densenet121",
               "--blocks", "1", "1", "--growth", "4", "--small-input", "--batch-size", "4",
               "--iterations", "3", "--val-interval", "0", "--val-batches", "2",
               "--loader-threads", "0")
    params, _ = read_param_file(out / "final.h5")
    assert "block2/layer1/conv2/conv/W" in params and "block3/layer1/conv1/conv/W" not in params
    assert params["fc/affine/W"].shape[1] == 3
    _, losses = read_series(out, "training loss")
    assert len(losses) == 3 and np.all(np.isfinite(losses))


def test_which_defaults_apply():
    """The smoke settings only without --config and without a data set root."""
    from ooctrain.models import ARCHITECTURES
    from ooctrain.training import parse_args

    smoke = parse_args(["--output", "x"])
    assert smoke.blocks == [1, 1, 1, 1] and smoke.dataset == "mnist5k" and smoke.iterations == 60
    for extra in (["--root", "/data/imagenet"], ["--data-dir=/data/imagenet"],
                  ["--config", str(CONFIGS / "resnet50.yaml")]):
        args = parse_args(["--output", "x", *extra])
        assert (args.blocks, args.width, args.dataset, args.iterations, args.lr) == \
            (None, None, "imagenet", 450450, 0.1), extra
    densenet = parse_args(["--output", "x", "--config", str(CONFIGS / "densenet121.yaml")])
    assert densenet.arch == "densenet121" and densenet.blocks is None
    from ooctrain.cli import model_spec_from_args
    assert model_spec_from_args(densenet).config() == ARCHITECTURES["densenet121"]


def test_official_spellings_are_hidden_aliases():
    from ooctrain.training import build_parser, parse_args

    args = parse_args(["-o", "run", "-r", "--data", "synthetic", "--data-dir", "d",
                       "--ooc-gpu-memory-size", "4g"])
    assert (args.output, args.resume, args.dataset, args.root) == ("run", True, "synthetic", "d")
    assert args.ooc_budget == 4 * 2 ** 30                # nnabla_cli: g = GiB, G = GB
    assert parse_args(["--outdir", "run", "--ooc-gpu-memory-size", "3.5G"]).ooc_budget == \
        3_500_000_000
    assert parse_args(["-o", "run", "--ooc-window-length", "6g"]).ooc_window == 6 * 2 ** 30
    help_text = build_parser().format_help()
    assert "--ooc-budget" in help_text and "--ooc-window" in help_text
    for hidden in ("--ooc-gpu-memory-size", "--ooc-window-length", "--outdir", "--data-dir",
                   "--data "):
        assert hidden not in help_text


def test_ooc_budget_in_a_config_file_keeps_its_units(tmp_path):
    from ooctrain.training import parse_args

    config = tmp_path / "c.yaml"
    config.write_text("ooc_budget: 16MiB\nooc_window: 24MiB\n")
    args = parse_args(["--output", "x", "--config", str(config)])
    assert (args.ooc_budget, args.ooc_window) == ("16MiB", "24MiB")
    config.write_text("ooc_window: lots\n")
    with pytest.raises(UserError, match="key 'ooc_window'.*memory size"):
        parse_args(["--output", "x", "--config", str(config)])


def test_bad_input_is_one_line(tmp_path):
    assert_one_line_error(run_script(TRAIN, "--output", tmp_path / "a", "--dataset",
                                     "imagenet", "--root", tmp_path / "missing", *TINY,
                                     check=False, env=ENV), "does not exist")
    assert_one_line_error(run_script(TRAIN, "--output", tmp_path / "b", "--growth", "4", *TINY,
                                     check=False, env=ENV), "has no size parameter 'growth'")
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: 0.1\n")
    assert_one_line_error(run_script(TRAIN, "--output", tmp_path / "d", "--config", bad,
                                     check=False, env=ENV), "unknown key 'learning_rate'")
    assert not any((tmp_path / name).exists() for name in "abd")


@pytest.mark.parametrize("flag, value", [("--batch-size", "0"), ("--lr", "nan"),
                                         ("--momentum", "1.5"), ("--iterations", "-3"),
                                         ("--image-size", "4"), ("--blocks", "2.5"),
                                         ("--ooc-gpu-memory-size", "lots"),
                                         ("--ooc-window", "lots"),
                                         ("--ooc-window-length", "-1")])
def test_bad_numbers_are_refused_before_anything_runs(tmp_path, flag, value):
    from ooctrain.training import parse_args

    with pytest.raises(UserError, match=flag):
        parse_args(["--output", str(tmp_path / "run"), flag, value])


def test_bad_number_through_the_script_is_one_line(tmp_path):
    proc = run_script(TRAIN, "--output", tmp_path / "run", "--weight-decay", "-1", check=False,
                      env=ENV)
    assert_one_line_error(proc, "--weight-decay", "expected a number >= 0")
    assert not (tmp_path / "run").exists()
