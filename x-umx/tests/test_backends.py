"""X-UMX / UMX runtimes: ``--backend auto`` (onnxruntime on the CPU, announced once; nnabla on
a GPU context), the agreement bound ``auto`` relies on (outputs within 1e-4 of the nnabla
path on the fixture input), ``--threads`` reaching the onnxruntime sessions, and OpenVINO,
which X-UMX does not offer (measured slower than onnxruntime, see ``xumx.separator``), refused
in one line."""
from pathlib import Path

import numpy as np
import pytest

from common.dev.testing import assert_one_line_error, run_script, synthetic_music, write_audio
from xumx import weights
from xumx.separator import AUTO_ORDER, Separator

X_UMX = Path(__file__).resolve().parents[1]
SR = 44100
ABS_TOL = 1e-4  # the bound auto must meet: outputs within 1e-4 of the nnabla path


class CudnnContext:
    """Stands in for an nnabla Context of the CUDA extension (only ``backend`` is read)."""
    backend = ["cudnn:float", "cuda:float", "cpu:float"]


@pytest.fixture(scope="module")
def xumx(fx):
    return weights.load_xumx(fx.xumx_params)


def test_auto_picks_onnxruntime_on_the_cpu_within_the_bound(fx, xumx):
    params, config = xumx
    auto = Separator.from_params("xumx", params, config)
    reference = Separator.from_params("xumx", params, config, backend="nnabla")
    assert auto.backend == AUTO_ORDER[0] == "onnx" and reference.backend == "nnabla"
    ours, ref = auto(fx.audio), reference(fx.audio)
    for target in ref:
        assert np.abs(ours[target] - ref[target]).max() <= ABS_TOL, target


def test_auto_on_a_gpu_context_is_nnabla(fx, xumx):
    params, config = xumx
    assert Separator.from_params("xumx", params, config,
                                 context=CudnnContext()).backend == "nnabla"
    umx = Separator(fx.umx_dir, targets=["vocals"], context=CudnnContext())
    assert umx.backend == "nnabla"


def test_threads_reach_the_sessions(fx, xumx):
    params, config = xumx
    sep = Separator.from_params("xumx", params, config, backend="onnx", threads=1)
    (runner,) = sep._runners
    assert runner.session.get_session_options().intra_op_num_threads == 1
    umx = Separator(fx.umx_dir, targets=["vocals", "bass"], threads=2)
    assert [r.session.get_session_options().intra_op_num_threads for r in umx._runners] \
        == [2, 2]


def test_separate_py_announces_auto_once_and_refuses_openvino(fx, tmp_path):
    song = write_audio(tmp_path / "song.wav", synthetic_music(1.0, SR, 2), SR)
    proc = run_script(X_UMX / "separate.py", song, "--model", fx.xumx_params, "--targets",
                      "vocals", "--out-dir", tmp_path / "out", "-n", 1, quiet=True)
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith("backend: ")] \
        == ["backend: onnxruntime (auto)"]
    proc = run_script(X_UMX / "separate.py", song, "--model", fx.xumx_params, "--out-dir",
                      tmp_path / "ov", "--backend", "openvino", check=False, quiet=True)
    assert_one_line_error(proc, "--backend", "invalid choice: 'openvino'")
    assert not (tmp_path / "ov").exists()
