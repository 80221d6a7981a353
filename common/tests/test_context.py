"""Context flags and the one-line errors for unavailable backends."""
import argparse
import importlib.util
import subprocess
import sys

import nnabla as nn
import pytest

from common.context import add_context_args, context_from_args, get_context
from common.errors import UserError

HAS_CUDA = importlib.util.find_spec("nnabla_ext.cudnn") is not None


def parse(argv):
    return add_context_args(argparse.ArgumentParser()).parse_args(argv)


def test_flag_defaults_and_values():
    args = parse([])
    assert (args.context, args.device_id, args.type_config) == ("cpu", 0, "float")
    args = parse(["--context", "cudnn", "--device-id", "2", "--type-config", "half"])
    assert (args.context, args.device_id, args.type_config) == ("cudnn", 2, "half")
    with pytest.raises(SystemExit):
        parse(["--context", "tpu"])


def test_cpu_float_context_becomes_default():
    before = nn.get_current_context()
    try:
        ctx = context_from_args(parse([]))
        assert ctx.backend == ["cpu:float"]
        assert nn.get_current_context().backend == ["cpu:float"]
    finally:
        nn.set_default_context(before)


def test_cpu_half_runs_in_half_precision():
    import nnabla.functions as F
    import numpy as np

    ctx = get_context("cpu", type_config="half")
    assert ctx.backend[0] == "cpu:half"
    with nn.context_scope(ctx):
        x = nn.Variable.from_numpy_array(np.ones((2, 3), np.float32))
        y = F.relu(x)
        y.forward()
    assert y.data.dtype == np.float16


def test_bad_arguments_are_user_errors():
    with pytest.raises(UserError, match="unknown context"):
        get_context("tpu")
    with pytest.raises(UserError, match="type config"):
        get_context("cpu", type_config="double")
    with pytest.raises(UserError, match="integer"):
        get_context("cpu", device_id="gpu0")


@pytest.mark.skipif(HAS_CUDA, reason="checks the message shown when the CUDA extension is absent")
def test_cudnn_without_extension_names_the_package():
    with pytest.raises(UserError) as exc:
        get_context("cudnn")
    message = str(exc.value)
    assert "\n" not in message
    assert "pip install nnabla-ext-cuda120" in message and "nnabla-ext-cuda110" in message


@pytest.mark.skipif(HAS_CUDA, reason="checks the message shown when the CUDA extension is absent")
def test_cli_prints_one_error_line_and_exits_2():
    code = ("import argparse; from common.cli import run_cli; "
            "from common.context import add_context_args, context_from_args\n"
            "def main(argv):\n"
            "    context_from_args(add_context_args(argparse.ArgumentParser()).parse_args(argv))\n"
            "run_cli(main, ['--context', 'cudnn'])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "nnabla-ext-cuda120" in errors[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.skipif(not HAS_CUDA, reason="needs nnabla-ext-cuda and a GPU")
def test_cudnn_context_on_gpu():
    ctx = get_context("cudnn", 0)
    assert ctx.backend[0].startswith("cudnn") and ctx.device_id == "0"
    with pytest.raises(UserError, match="out of range"):
        get_context("cudnn", 999)
