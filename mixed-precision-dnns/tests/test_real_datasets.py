"""train.py on tiny data sets written in the real on-disk formats: the CIFAR-10 python
pickles and the ImageNet class-folder layout (ResNet-18 and MobileNetV2)."""
import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from common.data import cifar10
from common.dev.testing import assert_one_line_error, fixtures_root, run_script
from mpdnn.network import random_subset

TRAIN = Path(__file__).resolve().parent.parent / "train.py"
EVAL = Path(__file__).resolve().parent.parent / "eval.py"


def _write_cifar(root, per_batch):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in list(cifar10.TRAIN_BATCHES) + [cifar10.TEST_BATCH]:
        batch = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, per_batch).tolist(),
                 b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"filenames": [f"{k}.png".encode() for k in range(per_batch)]}
        with open(d / name, "wb") as f:
            pickle.dump(batch, f)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in cifar10.CIFAR10_CLASSES]}, f)


def test_cifar10_pickles(tmp_path):
    _write_cifar(tmp_path / "data", per_batch=8)
    out = tmp_path / "run"
    run_script(TRAIN, "--experiment", "PARAMETRIC_POW2_WAQ_XMIN_XMAX", "--dataset", "cifar10",
               "--root", tmp_path / "data", "--output", out, "--set", "epochs=1",
               "--set", "lr_milestones=[]", "--set", "batch_size=8", "--loader-threads", "0")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "cifar10" and 0 <= summary["val_error"] <= 1
    # 5 training batches of 8 images -> 5 iterations of batch 8
    assert summary["iteration"] == 5


def test_truncated_cifar10_files_are_one_line_errors(tmp_path):
    _write_cifar(tmp_path / "data", per_batch=8)
    batches = tmp_path / "data" / "cifar-10-batches-py"
    for name in ("data_batch_3", cifar10.TEST_BATCH):
        data = (batches / name).read_bytes()
        (batches / name).write_bytes(data[:len(data) // 2])
    out = tmp_path / "run"
    proc = run_script(TRAIN, "--experiment", "DEFAULT", "--dataset", "cifar10", "--root",
                      tmp_path / "data", "--output", out, check=False)
    assert_one_line_error(proc, "data_batch_3", "truncated")
    assert not out.exists()
    official = fixtures_root() / "mixed-precision-dnns" / "resnet20_default.h5"
    proc = run_script(EVAL, "--model", official, "--experiment", "DEFAULT", "--dataset",
                      "cifar10", "--root", tmp_path / "data", "--out-dir", tmp_path / "eval",
                      check=False)
    assert_one_line_error(proc, cifar10.TEST_BATCH, "truncated")
    assert not (tmp_path / "eval").exists()


def _write_folder(root, classes, per_class, size, seed):
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True)
        for k in range(per_class):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / c / f"{c}_{k}.JPEG", quality=90)


def test_imagenet_folders_resnet18_and_mobilenetv2(tmp_path):
    root = tmp_path / "imagenet"
    _write_folder(root / "train", ["n01440764", "n01443537"], 2, (300, 260), 0)
    _write_folder(root / "val", ["n01440764", "n01443537"], 1, (260, 280), 1)
    for experiment in ("RESNET18_FLOAT", "MOBILENETV2_FLOAT"):
        out = tmp_path / experiment
        run_script(TRAIN, "--experiment", experiment, "--dataset", "imagenet", "--data-dir", root,
                   "--output", out, "--set", "epochs=1", "--set", "lr_milestones=[]",
                   "--set", "batch_size=2", "--loader-threads", "0")
        summary = json.loads((out / "summary.json").read_text())
        assert summary["iteration"] == 2 and 0 <= summary["val_error"] <= 1


def test_subset_is_fixed_and_distinct():
    class Numbers:
        def __len__(self):
            return 100

        def __getitem__(self, i, rng=None):
            return i

    data = Numbers()
    a, b = random_subset(data, 10, seed=0), random_subset(data, 10, seed=0)
    assert [a[i] for i in range(10)] == [b[i] for i in range(10)]
    assert len(set(a[i] for i in range(10))) == 10
