"""D3Net segmentation runtimes: OpenVINO on the fixture (the bounds of the ONNX parity tests:
logits within 1e-4 x max of the official nnabla logits, probabilities within 1e-4, labels
equal wherever the top-2 gap is clear), ``--backend auto`` (the first installed runtime of
``AUTO_ORDER`` on the CPU, announced once by ``infer.py``; nnabla on a GPU context) and
``--threads`` reaching the sessions."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.dev.testing import assert_one_line_error, run_script
from d3net_seg.inference import AUTO_ORDER, Segmenter

INFER = Path(__file__).resolve().parents[1] / "infer.py"


class CudnnContext:
    """Stands in for an nnabla Context of the CUDA extension (only ``backend`` is read)."""
    backend = ["cudnn:float", "cuda:float", "cpu:float"]


@pytest.fixture
def model(seg_set):
    from d3net_seg.weights import load_weights

    params, config = load_weights(str(seg_set.h5), seg_set.name)
    return params, config, seg_set.arrays


def test_openvino_matches_the_fixture(model, tmp_path, monkeypatch):
    monkeypatch.setenv("NNABLA_RESEARCH_CACHE", str(tmp_path))
    params, config, ref = model
    seg = Segmenter(params, config, backend="openvino", threads=1)
    out = seg.segment(ref["image_bgr"], channel_order="BGR")
    logits = ref["logits"][0]
    assert np.abs(out.logits - logits).max() <= 1e-4 * np.abs(logits).max()
    assert np.abs(out.probs - ref["probs"][0]).max() <= 1e-4
    top2 = np.sort(logits, axis=0)[-2:]
    clear = (top2[1] - top2[0]) > 1e-3
    np.testing.assert_array_equal(out.labels[clear], ref["labels"][0][clear])
    session = seg._runner.session_for(ref["input"].shape)
    assert session.runtime == "openvino" and session.threads == 1


def test_auto_choice(model, tmp_path, monkeypatch):
    monkeypatch.setenv("NNABLA_RESEARCH_CACHE", str(tmp_path))
    params, config, _ = model
    assert Segmenter(params, config).backend == AUTO_ORDER[0]
    assert Segmenter(params, config, context=CudnnContext()).backend == "nnabla"


def test_infer_announces_auto_once_and_passes_threads(tiny_model, tmp_path):
    weights, cfg, _ = tiny_model
    image = tmp_path / "street.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), np.uint8)).save(image)
    env = {"NNABLA_RESEARCH_CACHE": str(tmp_path / "cache")}
    proc = run_script(INFER, image, "--model", weights, "--network-config", cfg, "--out-dir",
                      tmp_path / "out", "-n", 1, env=env)
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith("backend: ")] \
        == [f"backend: {AUTO_ORDER[0]} (auto)"]
    with Image.open(tmp_path / "out" / "street_labels.png") as im:
        auto_labels = np.asarray(im)
    ours = Segmenter(str(weights), str(cfg), backend=AUTO_ORDER[0])
    np.testing.assert_array_equal(auto_labels, ours.segment(np.asarray(
        Image.open(image).convert("RGB"))).labels)
    proc = run_script(INFER, image, "--model", weights, "--network-config", cfg, "--out-dir",
                      tmp_path / "bad", "--threads", 0, check=False)
    assert_one_line_error(proc, "--threads")
