"""The paper packages' Python API: each exports its main objects from its ``__init__``, and
``from_pretrained`` takes a published name (resolved through the weights cache, here holding
a parity fixture under the published file name) or a path, with one ``UserError`` naming the
published names for anything else."""
import importlib
import shutil

import numpy as np
import pytest

from common.dev.testing import FixtureFolder
from common.errors import UserError

EXPORTS = {
    "xumx": ["Separator", "CrossNet", "OpenUnmix", "load"],
    "d3net_mss": ["Separator", "D3NetMSS", "load_config", "load"],
    "d3net_seg": ["Segmenter", "D3NetSegmentation", "load_config", "load_weights", "read_image"],
    "mpdnn": ["quantize", "parametrization", "get_experiment", "list_experiments",
              "NetworkMemory"],
    "datacleansing": ["Run", "compute_influence", "train_run", "load_data"],
    "ooctrain": ["plan", "plan_spec", "Plan", "build_training_graph", "ModelSpec", "build"],
}


@pytest.mark.parametrize("package", sorted(EXPORTS))
def test_main_objects_are_exported(package):
    module = importlib.import_module(package)
    for name in EXPORTS[package]:
        assert name in module.__all__, name
        assert callable(getattr(module, name)), name
    with pytest.raises(AttributeError):
        module.no_such_object  # noqa: B018


@pytest.mark.parametrize("package, published", [
    ("xumx", "x-umx, umx, umxhq"), ("d3net_mss", "d3net-mss, d3net-openvino"),
    ("d3net_seg", "d3net-s, d3net-l")])
def test_from_pretrained_refuses_what_is_neither_name_nor_path(package, published, tmp_path):
    module = importlib.import_module(package)
    model = getattr(module, "Separator", None) or module.Segmenter
    with pytest.raises(UserError, match=published):
        model.from_pretrained(str(tmp_path / "x-umx-typo"))


@pytest.mark.parametrize("package, name", [
    ("xumx", "umxhq"), ("d3net_mss", "d3net-mss"), ("d3net_seg", "d3net-l")])
def test_the_constructor_given_a_published_name_points_to_from_pretrained(package, name,
                                                                          tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no file or folder of that name here
    module = importlib.import_module(package)
    model = getattr(module, "Separator", None) or module.Segmenter
    with pytest.raises(UserError, match=rf"{model.__name__}\.from_pretrained\('{name}'\)"):
        model(name)


def test_xumx_from_pretrained_name_equals_the_same_file_by_path(tmp_path, monkeypatch):
    from xumx import Separator

    fixture = FixtureFolder("x-umx").path("xumx_params.h5")
    monkeypatch.setenv("NNABLA_RESEARCH_CACHE", str(tmp_path))
    (tmp_path / "weights").mkdir()
    shutil.copy(fixture, tmp_path / "weights" / "x-umx.h5")
    audio = np.random.default_rng(0).uniform(-0.3, 0.3, (22050, 2)).astype(np.float32)
    by_name = Separator.from_pretrained("x-umx", backend="nnabla")(audio)
    by_path = Separator(fixture, backend="nnabla")(audio)
    assert list(by_name) == list(by_path)
    for target in by_path:
        assert np.array_equal(by_name[target], by_path[target])
