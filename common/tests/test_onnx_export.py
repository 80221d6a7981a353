"""Tests of common.runtime.onnx_export (nnabla graph -> .nnp -> nnabla-converter -> .onnx ->
onnxruntime) on small networks: agreement with nnabla's forward, the on-disk cache (what
invalidates it, what reuses it), per-shape sessions, several inputs/outputs, parameter
naming, and the errors for functions the converter does not support."""
import json
import os
from collections import OrderedDict

import nnabla as nn
import nnabla.functions as F
import nnabla.parametric_functions as PF
import numpy as np
import pytest

from common.errors import UserError
from common.runtime.onnx_export import (OnnxFunction, cache_key, check_supported, export_cached,
                                        export_graph, graph_function_types, make_session,
                                        supported_functions, trace_graph)


def _params(seed=0):
    """A parameter dict for :func:`_net` with non-trivial batch-norm statistics."""
    scope = OrderedDict()
    rng = np.random.RandomState(seed)
    with nn.parameter_scope("", scope), nn.auto_forward(False):
        _net_body(nn.Variable((1, 3, 8, 8)))
    with nn.parameter_scope("", scope):
        for name, var in nn.get_parameters(grad_only=False).items():
            if name.endswith("/var"):
                var.d = rng.uniform(0.5, 2.0, var.shape)
            else:
                var.d = rng.uniform(-0.5, 0.5, var.shape)
    return scope


def _net_body(x):
    """Conv + BN + ReLU, channel slices accumulated D3Net-style, pooling, deconvolution,
    bilinear resize (half-pixel), sigmoid gate."""
    h = PF.convolution(x, 8, (3, 3), pad=(1, 1), name="conv1")
    h = PF.batch_normalization(h, batch_stat=False, name="bn1")
    h = F.relu(h, inplace=True)
    a, b = h[:, :4], h[:, 4:]
    b = b + PF.convolution(a, 4, (3, 3), pad=(2, 2), dilation=(2, 2), name="conv2")
    h = F.concatenate(a, b, axis=1)
    p = F.average_pooling(h, (2, 2))
    p = PF.deconvolution(p, 8, (2, 2), stride=(2, 2), name="up")
    g = F.sigmoid(PF.convolution(p, 8, (1, 1), name="gate"))
    y = h * g + 0.5
    return F.interpolate(y, output_size=(y.shape[2] * 2 - 1, y.shape[3] + 3), mode="linear",
                         align_corners=False, half_pixel=True)


def _named(scope):
    with nn.parameter_scope("", scope):
        return nn.get_parameters(grad_only=False)


def _builder(scope):
    def build(x):
        with nn.parameter_scope("", scope):
            return _net_body(x)
    return build


def _nnabla_forward(build, *arrays):
    with nn.auto_forward(True):
        out = build(*[nn.Variable.from_numpy_array(a) for a in arrays])
    if isinstance(out, (tuple, list)):
        return tuple(o.d.copy() for o in out)
    return out.d.copy()


def _rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def test_matches_nnabla_and_caches_per_shape(tmp_path):
    scope = _params()
    build = _builder(scope)
    fn = OnnxFunction(build, name="tiny", cache_dir=tmp_path, max_sessions=1)
    x = np.random.RandomState(1).randn(2, 3, 12, 16).astype(np.float32)
    y = fn(x)
    ref = _nnabla_forward(build, x)
    assert y.shape == ref.shape and y.dtype == np.float32
    assert _rel(y, ref) <= 1e-5
    assert fn.exports == 1 and fn.sessions_opened == 1
    files = sorted(p.name for p in tmp_path.glob("*.onnx"))
    assert len(files) == 1 and files[0].startswith("tiny-2x3x12x16-")
    meta = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert meta["inputs"] == {"x": [2, 3, 12, 16]} and meta["opset"] == "13"
    assert meta["functions"]["Interpolate"] == 1 and meta["functions"]["Deconvolution"] == 1

    fn(x)  # same shape: same session, nothing new
    assert fn.exports == 1 and fn.sessions_opened == 1
    x2 = np.random.RandomState(2).randn(1, 3, 8, 10).astype(np.float32)  # fixed shapes:
    assert _rel(fn(x2), _nnabla_forward(build, x2)) <= 1e-5           # one export per shape
    assert fn.exports == 2 and len(list(tmp_path.glob("*.onnx"))) == 2
    fn(x)  # max_sessions=1 closed the first session; the file is reused, no export
    assert fn.exports == 2 and fn.sessions_opened == 3

    # a new function object (e.g. a later run) finds both files
    again = OnnxFunction(build, name="tiny", cache_dir=tmp_path)
    assert _rel(again(x), ref) <= 1e-5 and again.exports == 0
    assert not again.last_export.exported and again.last_export.meta["key"]


def test_cache_key_tracks_parameters_shapes_structure_and_version(tmp_path):
    scope = _params()
    build = _builder(scope)

    def key(b=build, shape=(1, 3, 8, 8), code_version=""):
        with nn.auto_forward(False):
            x = nn.Variable(shape)
            y = b(x)
        return cache_key(trace_graph({"x": x}, {"y": y}), code_version=code_version)

    k0 = key()
    assert key() == k0  # deterministic
    assert key(shape=(1, 3, 8, 10)) != k0
    assert key(code_version="v2") != k0
    with nn.parameter_scope("", scope):
        w = nn.get_parameters(grad_only=False)["bn1/bn/mean"]
    w.d = w.d + 1e-6  # any parameter value change re-exports
    assert key() != k0
    w.d = w.d - 1e-6

    def other(x):  # same parameters, different structure
        with nn.parameter_scope("", scope):
            return F.relu(_net_body(x))
    assert key(b=other) != k0

    r1 = export_cached(build, [(1, 3, 8, 8)], name="tiny", cache_dir=tmp_path)
    r2 = export_cached(build, [(1, 3, 8, 8)], name="tiny", cache_dir=tmp_path)
    assert r1.exported and not r2.exported and r1.path == r2.path and r1.key == r2.key


def test_several_inputs_and_outputs_and_parameter_names(tmp_path):
    scope = OrderedDict()

    def build(a, b):
        with nn.parameter_scope("", scope):
            h = PF.convolution(a, 4, (3, 3), pad=(1, 1), name="enc/conv")
            return {"sum": h + b, "gate": F.sigmoid(h) * b}

    with nn.auto_forward(False):
        build(nn.Variable((1, 2, 6, 6)), nn.Variable((1, 4, 6, 6)))  # create parameters
    fn = OnnxFunction(build, name="two", cache_dir=tmp_path, input_names=["a", "b"],
                      parameters=lambda: _named(scope))
    rng = np.random.RandomState(0)
    a = rng.randn(1, 2, 6, 6).astype(np.float32)
    b = rng.randn(1, 4, 6, 6).astype(np.float32)
    s, g = fn(a, b)
    with nn.auto_forward(True):
        ref = build(nn.Variable.from_numpy_array(a), nn.Variable.from_numpy_array(b))
    assert fn.output_names == ["sum", "gate"]
    assert _rel(s, ref["sum"].d) <= 1e-5 and _rel(g, ref["gate"].d) <= 1e-5

    # parameters named from an explicit mapping end up as ONNX initializer names
    import onnx

    with nn.auto_forward(False):
        x1, x2 = nn.Variable((1, 2, 6, 6)), nn.Variable((1, 4, 6, 6))
        outs = build(x1, x2)
    path = tmp_path / "named.onnx"
    meta = export_graph({"a": x1, "b": x2}, outs, path, parameters=_named(scope))
    model = onnx.load(str(path))
    assert {"enc/conv/conv/W", "enc/conv/conv/b"} <= {i.name for i in model.graph.initializer}
    assert meta["nb_parameters"] == 4 * 2 * 9 + 4
    sess = make_session(path, threads=1)
    assert [i.name for i in sess.get_inputs()] == ["a", "b"]
    assert [o.name for o in sess.get_outputs()] == ["sum", "gate"]


def test_unsupported_function_raises_user_error_naming_it(tmp_path):
    assert "Convolution" in supported_functions() and "CumSum" not in supported_functions()

    def build(x):
        return F.cumsum(F.relu(x), axis=1)

    with nn.auto_forward(False):
        x = nn.Variable((1, 5))
        y = build(x)
    assert graph_function_types(y) == {"ReLU": 1, "CumSum": 1}
    with pytest.raises(UserError, match=r"CumSum \(x1\)") as info:
        check_supported(y, what="the test network")
    assert "ReLU" not in str(info.value) and "the test network" in str(info.value)
    with pytest.raises(UserError, match="CumSum"):
        export_graph({"x": x}, {"y": y}, tmp_path / "bad.onnx")
    fn = OnnxFunction(build, name="bad", cache_dir=tmp_path)
    with pytest.raises(UserError, match="does not support the function"):
        fn(np.zeros((1, 5), np.float32))
    assert not list(tmp_path.glob("*.onnx")) and not [
        p for p in os.listdir(tmp_path) if p.startswith(".onnx-export-")]


def test_converter_argument_errors_become_user_errors(tmp_path):
    # OneHot is in the converter's table, but only for 2-d outputs
    def build(x):
        return F.one_hot(x, (5,))

    with pytest.raises(UserError, match="converter failed.*onehot dimension"):
        export_cached(build, [(2, 3, 1)], name="onehot", cache_dir=tmp_path)
    assert not list(tmp_path.glob("*.onnx"))


# --------------------------------------------------------------------------- damaged cache
def _damage_garbage(path, note):
    path.write_bytes(os.urandom(path.stat().st_size))  # same size, other bytes


def _damage_truncate(path, note):
    path.write_bytes(path.read_bytes()[:100])


def _damage_empty(path, note):
    path.write_bytes(b"")


def _damage_no_note(path, note):
    note.unlink()


def _damage_garbled_note(path, note):
    note.write_text("{not json")


def _damage_foreign_note(path, note):
    meta = json.loads(note.read_text())
    meta["key"] = "0" * 64  # the note of another export
    note.write_text(json.dumps(meta))


@pytest.mark.parametrize("damage", [_damage_garbage, _damage_truncate, _damage_empty,
                                    _damage_no_note, _damage_garbled_note,
                                    _damage_foreign_note], ids=lambda f: f.__name__[8:])
def test_a_damaged_cached_export_is_rebuilt_never_run(tmp_path, damage, caplog):
    scope = _params()
    build = _builder(scope)
    first = export_cached(build, [(1, 3, 8, 8)], name="tiny", cache_dir=tmp_path)
    path = tmp_path / os.path.basename(first.path)
    note = path.with_suffix(".json")
    assert first.exported and first.meta["onnx_bytes"] == path.stat().st_size
    damage(path, note)
    with caplog.at_level("WARNING", logger="common.runtime.onnx_export"):
        again = export_cached(build, [(1, 3, 8, 8)], name="tiny", cache_dir=tmp_path)
    assert again.exported and again.path == first.path
    assert any("is damaged" in r.getMessage() for r in caplog.records)
    # rebuilt, intact, and a later lookup trusts it again
    later = export_cached(build, [(1, 3, 8, 8)], name="tiny", cache_dir=tmp_path)
    assert not later.exported
    x = np.random.RandomState(3).randn(1, 3, 8, 8).astype(np.float32)
    fn = OnnxFunction(build, name="tiny", cache_dir=tmp_path)
    assert _rel(fn(x), _nnabla_forward(build, x)) <= 1e-5 and fn.exports == 0


def test_damaged_file_with_intact_note_fails_before_any_session(tmp_path):
    scope = _params()
    build = _builder(scope)
    fn = OnnxFunction(build, name="tiny", cache_dir=tmp_path, runtime="openvino")
    x = np.random.RandomState(4).randn(1, 3, 8, 8).astype(np.float32)
    fn(x)
    path = next(tmp_path.glob("*.onnx"))
    path.write_bytes(os.urandom(path.stat().st_size))
    fresh = OnnxFunction(build, name="tiny", cache_dir=tmp_path, runtime="openvino")
    assert _rel(fresh(x), _nnabla_forward(build, x)) <= 1e-5 and fresh.exports == 1


def test_reopening_after_release_reuses_the_export_without_rebuilding_the_graph(tmp_path):
    scope = _params()
    builds = []

    def build(x):
        builds.append(x.shape)
        return _builder(scope)(x)
    fn = OnnxFunction(build, name="tiny", cache_dir=tmp_path, runtime="openvino")
    x = np.random.RandomState(6).randn(1, 3, 8, 8).astype(np.float32)
    first = fn(x)
    assert len(builds) == 1 and fn.exports == 1
    fn.release()
    np.testing.assert_array_equal(fn(x), first)
    assert len(builds) == 1 and fn.sessions_opened == 2  # reopened from the same file
    # damaged while released: rebuilt and exported again, never run
    path = next(tmp_path.glob("*.onnx"))
    path.write_bytes(os.urandom(path.stat().st_size))
    fn.release()
    assert _rel(fn(x), _nnabla_forward(build, x)) <= 1e-5
    assert fn.exports == 2 and fn.sessions_opened == 3


@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_runtimes_and_threads(tmp_path, runtime):
    scope = _params()
    build = _builder(scope)
    fn = OnnxFunction(build, name="tiny", cache_dir=tmp_path, runtime=runtime, threads=1)
    x = np.random.RandomState(5).randn(2, 3, 12, 16).astype(np.float32)
    assert _rel(fn(x), _nnabla_forward(build, x)) <= 1e-5
    assert fn.session(x.shape).threads == 1 and fn.session(x.shape).runtime == runtime


def test_export_in_memory_matches_the_nnp_file_route(tmp_path):
    """The in-memory export equals the converter's own .nnp route (nnabla.utils.save +
    NnpImporter with expand_network): the same operators and initializers, the same outputs
    bit for bit; only generated names (with the converter's counters) differ."""
    from nnabla.utils.converter.nnabla import NnpImporter
    from nnabla.utils.converter.onnx import OnnxExporter
    from nnabla.utils.save import save

    import onnx
    from common.runtime.backends import open_session

    scope = _params()
    with nn.auto_forward(False):
        x = nn.Variable((1, 3, 8, 8))
        y = _builder(scope)(x)
    export_graph({"x": x}, {"y": y}, tmp_path / "memory.onnx", parameters=_named(scope))
    with nn.parameter_scope("", scope):
        save(str(tmp_path / "net.nnp"), {
            "networks": [{"name": "network", "batch_size": 1, "outputs": {"y": y},
                          "names": {"x": x}}],
            "executors": [{"name": "runtime", "network": "network", "data": ["x"],
                           "output": ["y"]}]}, variable_batch_size=False)
        nnp = NnpImporter(str(tmp_path / "net.nnp"), expand_network=True,
                          executor_index=None).execute()
    OnnxExporter(nnp, 1, -1, "13").execute(str(tmp_path / "file.onnx"))
    memory, file = (onnx.load(str(tmp_path / n)) for n in ("memory.onnx", "file.onnx"))
    assert [n.op_type for n in memory.graph.node] == [n.op_type for n in file.graph.node]
    params = {i.name: i.raw_data for i in file.graph.initializer if not i.name.startswith("@")}
    assert len(params) == len(_named(scope))
    assert {i.name: i.raw_data for i in memory.graph.initializer
            if not i.name.startswith("@")} == params
    assert sorted(i.raw_data for i in memory.graph.initializer) == \
        sorted(i.raw_data for i in file.graph.initializer)
    data = np.random.RandomState(6).randn(1, 3, 8, 8).astype(np.float32)
    a, b = (open_session("onnx", str(tmp_path / n), threads=1).run([data])[0]
            for n in ("memory.onnx", "file.onnx"))
    np.testing.assert_array_equal(a, b)
