"""Out-of-core training through ``common.train.out_of_core``: the scheduler changes nothing in the
results (bit for bit, in process and through every training script, with any prefetch
window), and a budget or window that is too small or unreadable is one clear error line.

On a CPU host and device memory are the same, so these tests exercise the scheduler's
recording, scheduling and error paths, not a memory saving (that needs a GPU)."""
from pathlib import Path

import numpy as np
import pytest

from common.dev.testing import run_script
from common.errors import UserError
from common.runtime.params_io import read_param_file
from common.train.monitor import read_series
from common.train.out_of_core import MemorySize, OutOfCore, check_ooc_args, format_size, \
    parse_size

REPO = Path(__file__).resolve().parents[2]
OOC_TRAIN = REPO / "out-of-core-training" / "train.py"
XUMX_TRAIN = REPO / "x-umx" / "train.py"
# Well above what the tiny networks below need, far below what the scheduler could ever
# fit everything into: it has to plan swaps.
BUDGET = "24MiB"
TOO_SMALL = "64KiB"
# train.py's TINY_RESNET below: its largest function touches 1.50 MiB (plan.py), which is
# the smallest window that can be scheduled.
NARROW_WINDOW, TOO_NARROW = "1.6MiB", "1.4MiB"


def test_parse_size_units_and_errors():
    assert parse_size("6GiB") == 6 * 2 ** 30
    assert parse_size("1.5GB") == 1_500_000_000
    assert parse_size("512 MiB") == 512 * 2 ** 20
    assert parse_size("2e9") == 2_000_000_000
    assert parse_size("1048576") == 2 ** 20
    assert format_size(1536) == "1.50 KiB"
    for bad in ("6 gigs", "", "-1GiB", "0", "GiB", "1e30", 2 ** 61):
        with pytest.raises(UserError):
            parse_size(bad)
    # the flag type keeps the text as written (config.yaml keeps the units)
    assert MemorySize()(" 6GiB ") == "6GiB" and MemorySize()("2e9") == "2e9"


def test_window_needs_a_budget():
    from argparse import Namespace

    with pytest.raises(UserError, match="--ooc-window .* needs --ooc-budget"):
        check_ooc_args(Namespace(ooc_budget=None, ooc_window="1GiB"))
    with pytest.raises(UserError, match="needs --ooc-budget"):
        OutOfCore(None, window="1GiB")
    check_ooc_args(Namespace(ooc_budget="2GiB", ooc_window="1GiB"))
    assert OutOfCore(None).effective_window is None


def test_disabled_is_a_no_op():
    ooc = OutOfCore(None)
    assert not ooc.enabled
    with ooc.step() as hooks:
        assert hooks == {}


@pytest.fixture
def restore_context():
    import nnabla as nn
    saved = nn.get_current_context()
    yield
    nn.set_default_context(saved)
    nn.clear_parameters()


SMALL_RESNET = {"arch": "resnet50", "overrides": {"blocks": [1, 1], "width": 4},
                "image_size": 16, "num_classes": 5, "small_input": True, "batch_size": 8}


def _train_small_resnet(budget, iterations=4, window=None):
    """Losses and final parameters of a tiny ResNet (batch norm, momentum, weight decay)."""
    import nnabla as nn
    import nnabla.functions as F
    import nnabla.solvers as S

    from common.context import get_context
    from ooctrain.models import ModelSpec, build

    nn.clear_parameters()
    nn.set_default_context(get_context("cpu"))
    ooc = OutOfCore(budget, window=window)
    if ooc.enabled:
        nn.set_default_context(ooc.device_ctx)
    nn.seed(7)
    x, y = nn.Variable((8, 3, 16, 16)), nn.Variable((8, 1))
    spec = ModelSpec("resnet50", SMALL_RESNET["overrides"])
    loss = F.mean(F.softmax_cross_entropy(build(spec, x, 5, small_input=True), y))
    solver = S.Momentum(0.05, 0.9)
    solver.set_parameters(nn.get_parameters())
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(iterations):
        with ooc.step() as hooks:
            x.d = rng.standard_normal(x.shape)
            y.d = rng.integers(0, 5, (8, 1))
            solver.zero_grad()
            loss.forward(clear_no_need_grad=True, **hooks)
            loss.backward(clear_buffer=True, **hooks)
            solver.weight_decay(1e-4)
            solver.update()
        losses.append(float(loss.d))
    return losses, {k: v.d.copy() for k, v in nn.get_parameters(grad_only=False).items()}


def test_small_resnet_bit_exact_with_scheduler(restore_context):
    ref_losses, ref_params = _train_small_resnet(None)
    losses, params = _train_small_resnet("2MiB")
    assert losses == ref_losses
    assert sorted(params) == sorted(ref_params)
    for name in ref_params:
        np.testing.assert_array_equal(params[name], ref_params[name], err_msg=name)
    assert ref_losses[-1] != ref_losses[0]  # it did train


def test_too_small_budget_in_process_is_user_error(restore_context):
    with pytest.raises(UserError, match=r"--ooc-budget 1\.00 KiB is too small"):
        _train_small_resnet("1KiB")


def _smallest_window(spec):
    from ooctrain.planner import plan_spec
    return plan_spec(spec).min_budget


def test_any_prefetch_window_gives_identical_results(restore_context):
    """Windows from just above the smallest schedulable one (the planner's smallest budget)
    to far above the budget: the same losses and parameters as without the scheduler."""
    ref_losses, ref_params = _train_small_resnet(None)
    smallest = _smallest_window(SMALL_RESNET)
    for window in (int(smallest * 1.01), "2MiB", "64MiB"):
        losses, params = _train_small_resnet("2MiB", window=window)
        assert losses == ref_losses, window
        for name in ref_params:
            np.testing.assert_array_equal(params[name], ref_params[name], err_msg=name)
    with pytest.raises(UserError, match=r"--ooc-window [0-9.]+ KiB is too small .*raise "
                                        r"--ooc-window"):
        _train_small_resnet("2MiB", window=int(smallest * 0.99))


# --------------------------------------------------------------------------- entry scripts

TINY_RESNET = ["--iterations", "6", "--batch-size", "8", "--blocks", "1", "1", "--width", "4",
               "--val-interval", "0", "--val-batches", "1", "--checkpoint-interval", "3",
               "--loader-threads", "0"]


def _same_params(a_file, b_file):
    a, _ = read_param_file(a_file)
    b, _ = read_param_file(b_file)
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_train_script_bit_exact_with_budget_and_any_window(tmp_path):
    plain, ooc, narrow = tmp_path / "plain", tmp_path / "ooc", tmp_path / "narrow"
    run_script(OOC_TRAIN, "--output", plain, *TINY_RESNET)
    proc = run_script(OOC_TRAIN, "--output", ooc, "--ooc-budget", BUDGET, *TINY_RESNET)
    assert "out-of-core: budget 24.00 MiB" in proc.stdout
    assert "prefetch window 36.00 MiB (default: 1.5x the budget)" in proc.stdout
    proc = run_script(OOC_TRAIN, "--output", narrow, "--ooc-budget", BUDGET, "--ooc-window",
                      NARROW_WINDOW, *TINY_RESNET)
    assert "prefetch window 1.60 MiB" in proc.stdout
    for run in (ooc, narrow):
        _same_params(plain / "final.h5", run / "final.h5")
        assert read_series(plain, "training loss")[1].tolist() == \
            read_series(run, "training loss")[1].tolist()


def test_resume_may_switch_the_scheduler_on_and_change_its_window(tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    run_script(OOC_TRAIN, "--output", whole, *TINY_RESNET)
    run_script(OOC_TRAIN, "--output", split, "--stop-at-iter", "2", *TINY_RESNET)
    run_script(OOC_TRAIN, "--output", split, "--resume", "--stop-at-iter", "4",
               "--ooc-budget", BUDGET, *TINY_RESNET)
    proc = run_script(OOC_TRAIN, "--output", split, "--resume", "--ooc-budget", BUDGET,
                      "--ooc-window", NARROW_WINDOW, *TINY_RESNET)
    assert "resumed at iteration 4" in proc.stdout
    _same_params(whole / "final.h5", split / "final.h5")


def test_train_script_too_small_budget_is_one_line(tmp_path):
    proc = run_script(OOC_TRAIN, "--output", tmp_path / "run", "--ooc-budget", TOO_SMALL,
                      *TINY_RESNET, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --ooc-budget 64.00 KiB is too small")
    assert "raise --ooc-budget" in last
    assert not (tmp_path / "run" / "final.h5").exists()


@pytest.mark.parametrize("flags, needle", [
    (["--ooc-budget", "lots"], "argument --ooc-budget: cannot read 'lots' as a memory size"),
    (["--ooc-budget", "1e30"], "argument --ooc-budget: memory size '1e30' is larger than"),
    (["--ooc-budget", BUDGET, "--ooc-window", "0"],
     "argument --ooc-window: memory size '0' must be positive"),
    (["--ooc-window", "4MiB"], "--ooc-window sets the out-of-core scheduler's prefetch "
                               "window: it needs --ooc-budget"),
    (["--ooc-budget", BUDGET, "--ooc-window", TOO_NARROW],
     "--ooc-window 1.40 MiB is too small for this network and batch"),
], ids=["unreadable-budget", "huge-budget", "zero-window", "window-alone", "narrow-window"])
def test_bad_budget_or_window_is_one_line(tmp_path, flags, needle):
    proc = run_script(OOC_TRAIN, "--output", tmp_path / "run", *flags, *TINY_RESNET,
                      check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: " + needle)
    assert not (tmp_path / "run" / "final.h5").exists()


# X-UMX: the recurrent network of the audio papers, through the shared MSS training loop.
TINY_XUMX = ["--hidden-size", "8", "--nb-layers", "1", "--nfft", "512", "--nhop", "128",
             "--seq-dur", "0.3", "--samples-per-track", "6", "--batch-size", "2",
             "--valid-dur", "1", "--checkpoint-interval", "1", "--loader-threads", "0",
             "--lr", "0.01", "--epochs", "1"]


def test_xumx_training_bit_exact_with_budget(tmp_path):
    plain, ooc = tmp_path / "plain", tmp_path / "ooc"
    run_script(XUMX_TRAIN, "--output", plain, *TINY_XUMX)
    run_script(XUMX_TRAIN, "--output", ooc, "--ooc-budget", BUDGET, *TINY_XUMX)
    losses = read_series(plain, "training loss per iteration")[1].tolist()
    assert len(losses) == 3 and losses == \
        read_series(ooc, "training loss per iteration")[1].tolist()
    assert read_series(plain, "validation loss")[1].tolist() == \
        read_series(ooc, "validation loss")[1].tolist()
    _same_params(plain / "xumx.h5", ooc / "xumx.h5")


def test_xumx_too_small_budget_is_one_line(tmp_path):
    proc = run_script(XUMX_TRAIN, "--output", tmp_path / "run", "--ooc-budget", TOO_SMALL,
                      *TINY_XUMX, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --ooc-budget 64.00 KiB")


# Every other training script of the repository: the same flag, the same results. Each runs
# a few iterations of its smallest configuration; the final checkpoint is compared.
OTHER_SCRIPTS = {
    "d3net-mss": ("d3net/music-source-separation/train.py",
                  ["--epochs", "1", "--samples-per-track", "4", "--batch-size", "2",
                   "--checkpoint-interval", "1", "--loader-threads", "0"], "vocals/checkpoints"),
    "d3net-seg": ("d3net/semantic-segmentation/train.py",
                  ["--max-iter", "3", "--loader-threads", "0"], "checkpoints"),
    "mixed-precision": ("mixed-precision-dnns/train.py",
                        ["--experiment", "PARAMETRIC_FP_WAQ_DELTA_XMAX", "--dataset",
                         "mnist5k", "--train-samples", "96", "--val-samples", "40", "--set",
                         "batch_size=32", "--set", "epochs=1", "--set", "lr_milestones=[1]",
                         "--loader-threads", "0"],
                        "checkpoints"),
    "data-cleansing": ("data-cleansing/train.py",
                       ["--dataset", "mnist5k", "--train-samples", "96", "--model", "cnn",
                        "--epochs", "1", "--batch-size", "32"], "checkpoints"),
}


def _latest_checkpoint_params(folder):
    from common.train.checkpoint import CheckpointManager
    ckpt = CheckpointManager(folder, clean=False).load_latest()
    assert ckpt is not None, folder
    return ckpt.step, ckpt.params


@pytest.mark.parametrize("name", sorted(OTHER_SCRIPTS))
def test_every_training_script_bit_exact_with_budget_and_window(name, tmp_path):
    """Each script takes --ooc-budget and --ooc-window (a window below the budget, so the
    scheduler prefetches less far ahead than by default)."""
    script, args, ckpt_dir = OTHER_SCRIPTS[name]
    plain, ooc = tmp_path / "plain", tmp_path / "ooc"
    run_script(REPO / script, "--output", plain, *args)
    proc = run_script(REPO / script, "--output", ooc, "--ooc-budget", "256MiB",
                      "--ooc-window", "200MiB", *args)
    assert "out-of-core: budget 256.00 MiB" in proc.stdout
    assert "prefetch window 200.00 MiB" in proc.stdout
    step, ref = _latest_checkpoint_params(plain / ckpt_dir)
    step_ooc, got = _latest_checkpoint_params(ooc / ckpt_dir)
    assert step_ooc == step > 0
    assert sorted(got) == sorted(ref)
    for key in ref:
        np.testing.assert_array_equal(got[key], ref[key], err_msg=key)
