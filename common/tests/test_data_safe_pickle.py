"""The data-only unpickler: numpy arrays and plain containers load, nothing else is looked up."""
import io
import pickle

import numpy as np
import pytest

from common.data.safe_pickle import ForbiddenGlobal, load_data_pickle


def _load(data):
    return load_data_pickle(io.BytesIO(data))


@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_arrays_scalars_and_containers_round_trip(protocol):
    obj = {b"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": [np.int64(3), 1.5, None],
           "c": (b"bytes", "text", True), "d": np.array([1, 2], dtype=">i4")}
    data = pickle.dumps(obj, protocol=protocol)
    out, plain = _load(data), pickle.loads(data, encoding="bytes")
    assert out.keys() == obj.keys()
    assert np.array_equal(out[b"a"], obj[b"a"]) and out[b"a"].dtype == np.float32
    assert out["b"] == [3, 1.5, None] and type(out["b"][0]) is np.int64
    assert out["c"] == obj["c"]
    assert out["d"].tolist() == [1, 2] and out["d"].dtype == plain["d"].dtype


def _global_call(module, name, arg):
    """A protocol-2 pickle of ``module.name(arg)`` (arg a str)."""
    text = arg.encode()
    return (b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X" + len(text).to_bytes(4, "little")
            + text + b"\x85R.")


@pytest.mark.parametrize("module,name", [
    ("builtins", "eval"), ("posix", "system"), ("os", "system"), ("subprocess", "getoutput"),
    ("numpy.testing._private.utils", "runstring"),  # a code-running function inside numpy
    ("numpy", "load"), ("pickle", "loads"), ("builtins", "getattr"),
])
def test_any_other_global_is_refused_before_it_is_called(module, name):
    with pytest.raises(ForbiddenGlobal, match=f"refers to {module}.{name}, "):
        _load(_global_call(module, name, "1"))


def test_only_the_latin1_byte_encoding_is_admitted():
    # protocol 2 writes bytes as _codecs.encode(str, "latin1"); other codecs are refused
    assert _load(pickle.dumps(b"\x00\xff", protocol=2)) == b"\x00\xff"
    forged = pickle.dumps(b"\x00\xff", protocol=2).replace(b"latin1", b"rot_13")
    with pytest.raises(ForbiddenGlobal, match="rot_13"):
        _load(forged)
