"""common.runtime.backends: the ``auto`` choice (CPU -> the model's fastest installed runtime,
announced once; a GPU context -> nnabla), explicit choices and their one-line errors, the
``--backend`` / ``--threads`` flags, sessions that really get the thread count asked for (and
OpenVINO in float32), and fixed-shape model files run on any batch size."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from common.cli import Parser
from common.errors import UserError
from common.runtime import backends
from common.runtime.backends import ModelFile, choose_backend, open_session


def _scale_model(batch=2, features=3):
    """y = 2 * x + 1 on a fixed (batch, features) input."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, features])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, features])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    nodes = [helper.make_node("Mul", ["x", "two"], ["h"]), helper.make_node("Add", ["h", "one"],
                                                                           ["y"])]
    graph = helper.make_graph(nodes, "scale", [x], [y], initializer=[two, one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


class FakeContext:
    """An nnabla-like Context of the CUDA extension (only ``backend`` is read)."""
    backend = ["cudnn:float", "cuda:float", "cpu:float"]


def test_auto_on_the_cpu_takes_the_first_installed_runtime_and_announces_it():
    lines = []
    assert choose_backend("auto", "cpu", ("openvino", "onnx"), announce=lines.append) \
        == "openvino"
    assert lines == ["backend: openvino (auto)"]
    assert choose_backend("auto", ("cpu", 0, "float"), ("onnx",), announce=lines.append) \
        == "onnx"
    assert lines[-1] == "backend: onnxruntime (auto)" and len(lines) == 2
    # an explicit choice is not announced
    assert choose_backend("onnx", "cpu", ("openvino",), announce=lines.append) == "onnx"
    assert len(lines) == 2


@pytest.mark.parametrize("context", ["cudnn", ("cudnn", 1, "half"), FakeContext()])
def test_auto_on_a_gpu_context_is_nnabla(context):
    lines = []
    assert choose_backend("auto", context, ("openvino", "onnx"), announce=lines.append) \
        == "nnabla"
    assert lines == ["backend: nnabla (auto)"]
    # models nnabla cannot run (published ONNX files) stay on a CPU runtime
    assert choose_backend("auto", context, ("openvino", "onnx"),
                          runtimes=("onnx", "openvino")) == "openvino"


def test_auto_skips_runtimes_that_are_not_installed(monkeypatch):
    monkeypatch.setitem(backends._importable, "openvino", False)
    assert choose_backend("auto", "cpu", ("openvino", "onnx")) == "onnx"
    monkeypatch.setitem(backends._importable, "onnxruntime", False)
    assert choose_backend("auto", "cpu", ("openvino", "onnx")) == "nnabla"
    with pytest.raises(UserError, match="no runtime for the files is installed"):
        choose_backend("auto", "cpu", ("openvino", "onnx"), runtimes=("onnx", "openvino"),
                       what="the files")
    with pytest.raises(UserError, match=r"--backend openvino needs openvino .*make setup"):
        choose_backend("openvino", "cpu")


def test_explicit_choices_are_checked():
    with pytest.raises(UserError, match="unknown backend 'tflite'"):
        choose_backend("tflite")
    with pytest.raises(UserError, match="--backend nnabla: the files cannot run on nnabla; "
                                        "use one of auto, onnx, openvino"):
        choose_backend("nnabla", runtimes=("onnx", "openvino"), what="the files")


def test_flags_threads_and_official_alias():
    parser = backends.add_backend_args(Parser(prog="x"), runtimes=("nnabla", "onnx"))
    args = parser.parse_args([])
    assert args.backend == "auto" and args.threads is None
    assert parser.parse_args(["-n", "3"]).threads == 3
    assert parser.parse_args(["--cpu-number", "2", "--backend", "onnx"]).threads == 2
    with pytest.raises(UserError, match="invalid choice: 'openvino'"):
        parser.parse_args(["--backend", "openvino"])
    with pytest.raises(UserError, match="--threads"):
        parser.parse_args(["--threads", "0"])
    # -n stays with its owner where a script already uses it
    owned = Parser(prog="y")
    owned.add_argument("-n", dest="count")
    backends.add_backend_args(owned)
    assert owned.parse_args(["-n", "5", "--threads", "1"]).count == "5"


@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
@pytest.mark.parametrize("threads", [1, 2])
def test_sessions_get_the_thread_count_asked_for(tmp_path, runtime, threads):
    path = tmp_path / "scale.onnx"
    onnx.save(_scale_model(), str(path))
    session = open_session(runtime, str(path), threads=threads)
    assert session.threads == threads
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(session.run([x])[0], 2 * x + 1)
    default = open_session(runtime, _scale_model())  # in memory, every available core
    assert default.threads == backends.available_cores()


def test_openvino_computes_in_float32():
    session = open_session("openvino", _scale_model())
    assert str(session.compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"


@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_unreadable_model_file_is_one_line(tmp_path, runtime):
    path = tmp_path / "vocals.onnx"
    path.write_bytes(_scale_model().SerializeToString()[:40])  # truncated
    with pytest.raises(UserError, match="cannot run vocals.onnx") as info:
        open_session(runtime, str(path))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_model_file_runs_any_batch_size(tmp_path, runtime):
    path = tmp_path / "scale.onnx"
    onnx.save(_scale_model(batch=2), str(path))
    model = ModelFile(path, runtime, threads=1)
    assert model.input_shape == [2, 3] and model.graph_builds == 1
    rng = np.random.RandomState(0)
    for batch in (0, 1, 2, 3, 5):
        x = rng.randn(batch, 3).astype(np.float32)
        y = model(x)
        assert y.shape == (batch, 3)
        np.testing.assert_allclose(y, 2 * x + 1, rtol=1e-6)
    with pytest.raises(UserError, match=r"takes inputs of shape 2x3, got 2x4"):
        model(np.zeros((2, 4), np.float32))
