"""Every ```python block of the paper READMEs (and the top-level one) runs as written.

Each block runs in a fresh interpreter, in a temporary working folder, with the weights cache
(``NNABLA_RESEARCH_CACHE``) pointing at files prepared here and the network switched off
(a dead proxy), so a published name the test did not prepare fails instead of downloading.
The files a block names are provided before it runs (documented substitutions):

* published weights, placed in the cache under their published file names:
  ``x-umx`` = the X-UMX parity fixture (official layout, hidden size 32);
  ``d3net-s`` = the D3Net-S parity fixture (official size, random values);
  ``d3net-mss`` = a zip of four tiny random D3Net networks (``configs/smoke_network.yaml``,
  one per target, config beside each file, as a training run writes them), since the parity
  fixtures hold only two of the four targets;
* ``song.wav``: 2 s of synthetic stereo music at 44.1 kHz;
* ``street.png``: a 64 x 128 synthetic street scene (``d3net_seg.synthetic``);
* ``runs/data-cleansing/smoke``: a tiny run trained by the real ``data-cleansing/train.py``
  (64 images, logistic regression, one epoch) at ``train.py``'s default output.
"""
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from common.paths import cache_dir
from common.dev.testing import (QUIET_ENV, FixtureFolder, run_script, synthetic_music,
                                write_audio)

REPO = Path(__file__).resolve().parents[2]
READMES = ["README.md", "x-umx/README.md", "d3net/README.md", "mixed-precision-dnns/README.md",
           "data-cleansing/README.md", "out-of-core-training/README.md"]
PAPER_READMES = READMES[1:]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
OFFLINE = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "no_proxy": "", "NO_PROXY": ""}


def snippets():
    found = []
    for readme in READMES:
        for n, match in enumerate(BLOCK.finditer((REPO / readme).read_text()), 1):
            found.append(pytest.param(readme, match.group(1), id=f"{readme}#{n}"))
    return found


def test_every_paper_readme_has_a_python_example():
    with_examples = {p.values[0] for p in snippets()}
    assert with_examples >= set(PAPER_READMES), set(PAPER_READMES) - with_examples


# ------------------------------------------------------------------------------- fixtures
def _x_umx(weights):
    shutil.copy(FixtureFolder("x-umx").path("xumx_params.h5"), weights / "x-umx.h5")


def _d3net_s(weights):
    shutil.copy(FixtureFolder("d3net-seg").path("D3Net_S.h5"), weights / "D3Net-S.h5")


def _d3net_mss(weights):
    from common.runtime.params_io import write_param_file
    from d3net_mss.model import CONFIG_DIR, SOURCES, D3NetMSS, load_config

    network = CONFIG_DIR / "smoke_network.yaml"
    folder = weights / "d3net-mss-files"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for target in SOURCES:
        shapes = D3NetMSS(load_config(network)).parameter_shapes()
        params = {name: (rng.uniform(0.5, 2.0, shape) if name.endswith("/var")
                         else rng.uniform(-0.3, 0.3, shape)).astype(np.float32)
                  for name, shape in shapes.items()}
        write_param_file(folder / f"{target}.h5", params)
        shutil.copy(network, folder / f"{target}.yaml")
    with zipfile.ZipFile(weights / "d3net-mss.zip", "w") as archive:
        for file in sorted(folder.iterdir()):
            archive.write(file, file.name)
    shutil.rmtree(folder)


def _song(cwd):
    write_audio(cwd / "song.wav", synthetic_music(2.0, 44100, 2), 44100)


def _street(cwd):
    from PIL import Image

    from d3net_seg.synthetic import synthetic_scene

    image, _ = synthetic_scene(np.random.default_rng(0), height=64, width=128)
    Image.fromarray(image).save(cwd / "street.png")


def _cleansing_run(cwd):
    run_script(REPO / "data-cleansing" / "train.py", "--output", cwd / "runs/data-cleansing/smoke",
               "--train-samples", "64", "--model", "logreg", "--epochs", "1", quiet=True)


# what a snippet mentions -> how to provide it (weights go to the cache, files to the cwd)
WEIGHTS = {'"x-umx"': _x_umx, '"d3net-s"': _d3net_s, '"d3net-mss"': _d3net_mss}
FILES = {"song.wav": _song, "street.png": _street, "runs/data-cleansing/smoke": _cleansing_run}


@pytest.mark.parametrize("readme, code", snippets())
def test_readme_snippet_runs(readme, code, tmp_path):
    cwd, cache = tmp_path / "work", tmp_path / "cache"
    (cache / "weights").mkdir(parents=True)
    (cache / "data").symlink_to(cache_dir("data"))  # the bundled data sets, as set up
    cwd.mkdir()
    for mention, provide in WEIGHTS.items():
        if mention in code:
            provide(cache / "weights")
    for mention, provide in FILES.items():
        if mention in code:
            provide(cwd)
    env = {**os.environ, **QUIET_ENV, "NNABLA_RESEARCH_CACHE": str(cache), **OFFLINE}
    r = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, f"{readme} snippet failed:\n{code}\n{r.stderr[-3000:]}"
    written = re.findall(r'\.write\("([^"]+)"', code)
    assert r.stdout.strip() or written, "the snippet shows nothing"
    for name in written:
        assert (cwd / name).is_file(), f"the snippet did not write {name}"
