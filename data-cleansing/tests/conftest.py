"""Fixtures several data-cleansing test modules share: one tiny run trained by train.py."""
from pathlib import Path

import pytest

from common.dev.testing import run_script

TRAIN = Path(__file__).resolve().parent.parent / "train.py"
TINY = ["--dataset", "mnist5k", "--train-samples", "160", "--model", "mlp", "--epochs", "2",
        "--batch-size", "32", "--cache", "all", "--flip-labels", "0.1"]


@pytest.fixture(scope="session")
def tiny_args():
    """The train.py options of ``tiny_run``."""
    return list(TINY)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """An MLP trained by train.py on 160 images with 10 % flipped labels, every traced step
    cached (test_cli.py adds scores and a sweep to it)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    proc = run_script(TRAIN, "--output", out, *TINY, env={"NNABLA_RESEARCH_NO_PROGRESS": "1"})
    assert "parameter cache: final" in proc.stdout and "MB" in proc.stdout
    return out
