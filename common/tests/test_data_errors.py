"""A damaged dataset file reaches the user as one ``error:`` line naming it (exit 2, no
traceback), through a real process that loads the data the way the training scripts do:
``common.data.classification.load`` and a threaded ``BatchLoader`` under ``run_cli``."""
import os
import pickle
import textwrap

import numpy as np
import pytest
from PIL import Image

from common.data import cifar10
from common.dev.testing import assert_one_line_error, run_script

SCRIPT = textwrap.dedent('''
    """Load one batch of a dataset like a training script would."""
    import sys

    from common.data.classification import load
    from common.data.loader import BatchLoader
    from common.cli import run_cli


    def main(argv):
        name, root = argv
        dataset = load(name, "train", None if root == "-" else root)
        loader = BatchLoader(dataset, batch_size=len(dataset), shuffle=False, num_threads=2)
        loader.next()
        print("loaded", len(dataset))


    run_cli(main, sys.argv[1:])
''')


@pytest.fixture
def load_script(tmp_path):
    script = tmp_path / "load_one_batch.py"
    script.write_text(SCRIPT)

    def run(name, root, **env):
        return run_script(script, name, root, check=False, env=env)
    return run


def _imagenet(root, per_class=2):
    rng = np.random.default_rng(0)
    for wnid in ("n01440764", "n01443537"):
        folder = root / "train" / wnid
        folder.mkdir(parents=True)
        for k in range(per_class):
            pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{wnid}_{k}.JPEG")
    return root


def test_corrupt_jpeg_decoded_in_a_loader_thread(tmp_path, load_script):
    root = _imagenet(tmp_path / "imagenet")
    assert load_script("imagenet", root).stdout.strip() == "loaded 4"  # the intact set loads
    bad = root / "train" / "n01443537" / "n01443537_1.JPEG"
    bad.write_bytes(bad.read_bytes()[:200])
    proc = load_script("imagenet", root)
    assert_one_line_error(proc, f"{bad}: cannot decode image (")
    assert proc.stdout == ""


def test_empty_class_folder(tmp_path, load_script):
    root = _imagenet(tmp_path / "imagenet")
    (root / "train" / "n09999999").mkdir()
    assert_one_line_error(load_script("imagenet", root),
                          f"{root / 'train' / 'n09999999'}: class folder without images")


def test_crafted_cifar10_pickle_runs_nothing(tmp_path, load_script):
    root = tmp_path / "cifar"
    batches = root / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in cifar10.TRAIN_BATCHES:
        with open(batches / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8),
                         b"labels": [0, 1]}, f)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    (batches / "data_batch_3").write_bytes(pickle.dumps(Payload()))
    proc = load_script("cifar10", root)
    assert_one_line_error(proc, f"{batches / 'data_batch_3'}: not a CIFAR-10 python batch",
                          "system", "refused without running it")
    assert not marker.exists()


def test_truncated_cifar10_batch(tmp_path, load_script):
    root = tmp_path / "cifar"
    batches = root / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    for name in cifar10.TRAIN_BATCHES:
        with open(batches / name, "wb") as f:
            pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, f)
    whole = (batches / "data_batch_4").read_bytes()
    (batches / "data_batch_4").write_bytes(whole[:3000])
    assert_one_line_error(load_script("cifar10", root),
                          f"{batches / 'data_batch_4'}: not a CIFAR-10 python batch")
    (batches / "data_batch_5").unlink()
    assert_one_line_error(load_script("cifar10", root),
                          f"{batches / 'data_batch_5'}: no such file")


def test_damaged_bundled_mnist_cache(tmp_path, load_script):
    from common.data.bundled import MNIST_5K_FILE
    cache = tmp_path / "cache"
    damaged = cache / "data" / "mnist_5k" / MNIST_5K_FILE
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"\x1f\x8b\x08\x00 cut short")
    proc = load_script("mnist5k", "-", NNABLA_RESEARCH_CACHE=str(cache))
    assert_one_line_error(proc, f"{damaged}: the bundled MNIST 5k file is damaged",
                          "python -m common.data.bundled --only mnist_5k")
