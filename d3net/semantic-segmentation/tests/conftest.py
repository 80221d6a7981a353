"""Shared fixtures of the D3Net segmentation tests.

Parity data live in ``$FIXTURES_DIR/d3net-seg`` (default ``../shared/fixtures`` relative to
the repository root; a relative ``FIXTURES_DIR`` is resolved against the repository root).
Fixture sets are discovered by pattern: every ``D3Net_<X>.h5`` with a matching
``D3Net_<X>_outputs.npz``; the network config is ``configs/D3Net_<X>.yaml`` (derived from the
file name) and every size comes from the arrays. A missing folder, or a folder without a
complete set, makes the parity tests *fail* (not skip) with a message saying where they
looked.
"""
from pathlib import Path

import numpy as np
import pytest

from common.dev.testing import FixtureFolder, fixtures_root

REPO_ROOT = Path(__file__).resolve().parents[3]
CONFIG_DIR = REPO_ROOT / "d3net" / "semantic-segmentation" / "configs"

# A tiny network in the D3Net layout (every code path, no pretrained size) for fast CLI tests.
TINY_MODEL = {
    "num_classes": 19,
    "num_init_features": 18,  # > 4 * dens_k: the first D2 block has a bc_layer
    "num_layers": [3, 2, 2, 2],
    "n_blocks": [2, 1, 1, 1],
    "dens_k": [4, 4, 4, 4],
    "block_comp": [0.5, 0.5, 0.5, 0.5],
    "dense_n_out_layer_block": [2, 2, 1, 1],
    "intermediate_out_ch": [4, 4, 6, 8],
    "trans_comp_factor": 2,
    "channels": 12,
}



def fixture_dir():
    return fixtures_root() / "d3net-seg"


def discover_sets():
    """Names ``D3Net_<X>`` of the complete fixture sets (sorted); [] if none."""
    d = fixture_dir()
    if not d.is_dir():
        return []
    names = []
    for h5 in sorted(d.glob("D3Net_*.h5")):
        if (d / f"{h5.stem}_outputs.npz").is_file():
            names.append(h5.stem)
    return names


def require_sets():
    """Fail (not skip) when no fixture set is available."""
    d = FixtureFolder("d3net-seg").check_dir()
    names = discover_sets()
    if not names:
        found = ", ".join(sorted(p.name for p in d.iterdir())) or "nothing"
        pytest.fail(f"no fixture set in {d}: expected D3Net_<X>.h5 with a matching "
                    f"D3Net_<X>_outputs.npz (found {found})", pytrace=False)
    return names


def pytest_generate_tests(metafunc):
    """Tests taking ``set_name`` run once per discovered fixture set; with none, once with
    ``None``, and :func:`seg_set` then fails the test with an explanation."""
    if "set_name" in metafunc.fixturenames:
        names = discover_sets()
        metafunc.parametrize("set_name", names if names else [None],
                             ids=names if names else ["no-fixtures"])


class SegFixture:
    """One fixture set, loaded lazily and cached for the session."""

    def __init__(self, name):
        self.name = name
        self.h5 = fixture_dir() / f"{name}.h5"
        self.npz_path = fixture_dir() / f"{name}_outputs.npz"
        self.config_path = CONFIG_DIR / f"{name}.yaml"
        if not self.config_path.is_file():
            pytest.fail(f"fixture set {name}: no config {self.config_path} for it",
                        pytrace=False)
        self._arrays = None
        self._params = None
        self._segmenter = None
        self._result = None

    @property
    def arrays(self):
        if self._arrays is None:
            with np.load(self.npz_path) as data:
                self._arrays = {k: data[k] for k in data.files}
            missing = {"image_bgr", "input", "logits", "probs", "labels",
                       "overlay_bgr"} - set(self._arrays)
            if missing:
                pytest.fail(f"{self.npz_path} lacks {', '.join(sorted(missing))}",
                            pytrace=False)
        return self._arrays

    @property
    def params(self):
        if self._params is None:
            from common.runtime.params_io import read_param_file

            self._params, _ = read_param_file(str(self.h5))
        return self._params

    @property
    def segmenter(self):
        if self._segmenter is None:
            from d3net_seg.inference import Segmenter

            self._segmenter = Segmenter(self.params, str(self.config_path), context="cpu",
                                        backend="nnabla")
        return self._segmenter

    @property
    def image_rgb(self):
        return np.ascontiguousarray(self.arrays["image_bgr"][..., ::-1])

    @property
    def result(self):
        """Our segmentation of the fixture image (computed once)."""
        if self._result is None:
            self._result = self.segmenter.segment(self.image_rgb)
        return self._result


_SETS = {}


class _NoFixtures:
    """Stands in when no fixture set exists: any use fails the test (in its call phase, so
    it is reported as FAILED with the explanation, not as a setup error or a skip)."""

    def __getattr__(self, name):
        require_sets()
        raise AssertionError("unreachable")


@pytest.fixture
def seg_set(set_name):
    """The :class:`SegFixture` of ``set_name`` (shared across tests)."""
    if set_name is None:
        return _NoFixtures()
    if set_name not in _SETS:
        _SETS[set_name] = SegFixture(set_name)
    return _SETS[set_name]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """(weights .h5, config .yaml, config dict) of a tiny random D3Net segmentation model
    with randomised batch-norm statistics, saved with the official names."""
    import yaml

    from common.runtime.params_io import write_param_file
    from d3net_seg.model import D3NetSegmentation, load_config

    d = tmp_path_factory.mktemp("tiny")
    cfg_path = d / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump({"name": "tiny", "model": TINY_MODEL}))
    config = load_config(cfg_path)
    model = D3NetSegmentation(config)
    model.create_parameters()
    rng = np.random.default_rng(0)
    params = model.parameters_numpy()
    for name, value in params.items():
        if name.endswith("/bn/mean"):
            params[name] = rng.uniform(-0.2, 0.2, value.shape).astype(np.float32)
        elif name.endswith("/bn/var"):
            params[name] = rng.uniform(0.5, 2.0, value.shape).astype(np.float32)
        elif name.endswith("/conv/W"):
            fan_in = int(np.prod(value.shape[1:]))
            lim = np.sqrt(6.0 / fan_in)
            params[name] = rng.uniform(-lim, lim, value.shape).astype(np.float32)
        elif name.endswith("/conv/b"):
            params[name] = rng.uniform(-0.5, 0.5, value.shape).astype(np.float32)
    weights = d / "tiny.h5"
    write_param_file(weights, params)
    return weights, cfg_path, config
