"""out-of-core-training/train.py as a user runs it: the networks at their published sizes,
the real ImageNet class-folder layout, synthetic data, validation and bad input."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.dev.testing import run_script
from common.runtime.params_io import read_param_file
from common.train.monitor import read_series

TRAIN = Path(__file__).resolve().parents[1] / "train.py"
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
    proc = run_script(TRAIN, "--output", out, "--data", "imagenet", "--root", root,
                      "--no-small-input", *TINY)
    assert "6 training images, 2 classes" in proc.stdout
    params, _ = read_param_file(out / "final.h5")
    assert params["fc/affine/W"].shape[1] == 2          # the classes are the folders
    assert params["stem/conv/W"].shape[2:] == (7, 7)    # the ImageNet stem
    steps, errors = read_series(out, "validation error")
    assert steps.tolist() == [2] and 0.0 <= errors[0] <= 1.0


def test_densenet_on_synthetic_data(tmp_path):
    out = tmp_path / "run"
    run_script(TRAIN, "--output", out, "--data", "synthetic", "--image-size", "16",
               "--num-classes", "3", "--synthetic-samples", "12", "--arch", "densenet121",
               "--blocks", "1", "1", "--growth", "4", "--small-input", "--batch-size", "4",
               "--iterations", "3", "--val-interval", "0", "--val-batches", "2",
               "--loader-threads", "0")
    params, _ = read_param_file(out / "final.h5")
    assert "block2/layer1/conv2/conv/W" in params and "block3/layer1/conv1/conv/W" not in params
    assert params["fc/affine/W"].shape[1] == 3
    _, losses = read_series(out, "training loss")
    assert len(losses) == 3 and np.all(np.isfinite(losses))


def _one_line_error(proc, text):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert text in proc.stderr.strip().splitlines()[-1]


def test_bad_input_is_one_line(tmp_path):
    _one_line_error(run_script(TRAIN, "--output", tmp_path / "a", "--data", "imagenet",
                               "--root", tmp_path / "missing", *TINY, check=False),
                    "does not exist")
    _one_line_error(run_script(TRAIN, "--output", tmp_path / "b", "--growth", "4", *TINY,
                               check=False), "has no size parameter 'growth'")
    _one_line_error(run_script(TRAIN, "--output", tmp_path / "c", "--batch-size", "0",
                               check=False), "--batch-size must be at least 1")
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: 0.1\n")
    _one_line_error(run_script(TRAIN, "--output", tmp_path / "d", "--config", bad,
                               check=False), "unknown key 'learning_rate'")


def test_resume_refuses_other_options(tmp_path):
    out = tmp_path / "run"
    run_script(TRAIN, "--output", out, "--stop-at-iter", "1", *TINY)
    _one_line_error(run_script(TRAIN, "--output", out, "--resume", *TINY, "--lr", "0.5",
                               check=False), "cannot --resume with different options: --lr")
