"""The run and output contracts through the real entry scripts: occupied --output, --resume
with changed options or a changed experiment, Ctrl-C in the middle of a step (a real SIGINT),
a non-finite loss, eval.py's output folder (read-only, under a file, full disk, an input in
the way, another model's scores), and one-line errors for every bad number."""
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from common.cli import numeric_actions
from common.dev.testing import (ReadOnlyDir, SmallDisk, assert_one_line_error, files_under,
                                interrupt_script, run_script)
from common.errors import Interrupted, UserError
from common.train.checkpoint import CheckpointManager
from mpdnn import evaluation, training
from mpdnn.options import load_experiment, parse_overrides

FOLDER = Path(__file__).resolve().parent.parent
TRAIN, EVAL = FOLDER / "train.py", FOLDER / "eval.py"
ENV = {"NNABLA_RESEARCH_NO_PROGRESS": "1"}
# The smoke setting (U3 weights and activations on the bundled MNIST subset), smaller.
TINY = ["--train-samples", "64", "--val-samples", "20", "--set", "batch_size=16",
        "--set", "epochs=1", "--set", "lr_milestones=[1]", "--loader-threads", "0"]


def train(*args, check=True, **kw):
    return run_script(TRAIN, *args, check=check, env=ENV, **kw)


def evaluate(*args, check=True, **kw):
    return run_script(EVAL, *args, check=check, env=ENV, **kw)


def snapshot(folder):
    return {p: (Path(folder) / p).read_bytes() for p in files_under(folder)}


def steps(folder):
    return [s for s, _ in CheckpointManager(Path(folder) / "checkpoints",
                                            clean=False).checkpoints()]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "run"
    train("--output", out, *TINY, "--checkpoint-interval", "2")
    return out


# ----------------------------------------------------------------------------- train.py

def test_occupied_output_is_refused_without_resume(tiny_run):
    before = snapshot(tiny_run)
    proc = train("--output", tiny_run, *TINY, check=False)
    assert_one_line_error(proc, "already holds a run", "--resume")
    assert snapshot(tiny_run) == before


def test_resume_with_a_changed_option_is_refused_and_nothing_rewritten(tiny_run):
    before = snapshot(tiny_run)
    changed = [a if a != "epochs=1" else "epochs=2" for a in TINY]
    proc = train("--output", tiny_run, *changed, "--resume", check=False)
    assert_one_line_error(proc, "cannot --resume", "--set")
    proc = train("--output", tiny_run, *TINY, "--seed", "3", "--resume", check=False)
    assert_one_line_error(proc, "cannot --resume", "--seed (0 -> 3)")
    assert snapshot(tiny_run) == before
    # options that do not change results may differ: the finished run only rewrites its report
    proc = train("--output", tiny_run, *TINY, "--quantizers", "graph", "--checkpoint-interval",
                 "3", "--resume")
    assert "resumed at iteration 4" in proc.stdout


OFFICIAL_STYLE_CFG = """\
[DEFAULT]
num_layers = 20
shortcut_type =
initial_learning_rate = 0.1

[TINY_U3]
w_quantize = parametric_fp_d_xmax
a_quantize = parametric_fp_d_xmax_relu
w_bitwidth = {bits}
"""


def test_official_cfg_trains_and_a_changed_section_cannot_be_resumed(tmp_path):
    """The official spelling (`train_resnet.py EXPERIMENT --cfg FILE`) trains a section of an
    official-style cfg; when the file changes, --resume is refused and config.yaml and
    experiment.yaml still describe the run that was trained."""
    cfg = tmp_path / "mine.cfg"
    cfg.write_text(OFFICIAL_STYLE_CFG.format(bits=4))
    out = tmp_path / "run"
    args = ["TINY_U3", "--cfg", cfg, "--output", out, "--dataset", "mnist5k",
            "--stop-at-epoch", "1", *[a if a != "epochs=1" else "epochs=2" for a in TINY]]
    train(*args)
    experiment = yaml.safe_load((out / "experiment.yaml").read_text())
    assert (experiment["name"], experiment["w_bitwidth"], experiment["epochs"]) == (
        "TINY_U3", 4, 2)
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert (config["experiment"], config["cfg"]) == ("TINY_U3", str(cfg))
    before = snapshot(out)
    cfg.write_text(OFFICIAL_STYLE_CFG.format(bits=3))
    proc = train(*args, "--resume", check=False)
    assert_one_line_error(proc, "cannot --resume", "w_bitwidth", "experiment.yaml")
    assert snapshot(out) == before


def test_ctrl_c_mid_step_checkpoints_and_resumes_bit_exactly(tmp_path):
    args = ["--train-samples", "128", "--val-samples", "20", "--set", "batch_size=8",
            "--set", "epochs=1", "--set", "lr_milestones=[1]", "--loader-threads", "0",
            "--checkpoint-interval", "2", "--keep-last", "50"]
    out = tmp_path / "run"
    proc = interrupt_script(TRAIN, "--output", out, *args, env=ENV,
                            ready=lambda _: (out / "checkpoints" / "ckpt_00000002.npz").exists())
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "KeyboardInterrupt" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted at iteration ") and "continue with --resume" in last
    stopped = int(last.split()[3].rstrip(";"))
    assert 2 <= stopped < 16
    manager = CheckpointManager(out / "checkpoints", clean=False)
    assert manager.load_latest().step == stopped == steps(out)[-1]

    resumed = train("--output", out, *args, "--resume")
    assert f"resumed at iteration {stopped}" in resumed.stdout
    whole = tmp_path / "whole"
    train("--output", whole, *args)
    got = CheckpointManager(out / "checkpoints", clean=False).load_latest()
    ref = CheckpointManager(whole / "checkpoints", clean=False).load_latest()
    assert got.step == ref.step == 16
    for name in ref.params:
        np.testing.assert_array_equal(got.params[name], ref.params[name], err_msg=name)
    assert json.loads((out / "summary.json").read_text())["val_error"] == \
        json.loads((whole / "summary.json").read_text())["val_error"]


def test_ctrl_c_after_an_epochs_last_step_validates_that_epoch_on_resume(tmp_path, monkeypatch):
    """A Ctrl-C caught after the last step of epoch 1 saves before that epoch's validation;
    the resumed run validates epoch 1 first, exactly as an uninterrupted run does."""
    import common.train.run as run_module

    monkeypatch.setenv("NNABLA_RESEARCH_NO_PROGRESS", "1")
    args = [*[a if a != "epochs=1" else "epochs=2" for a in TINY], "--keep-last", "10"]
    out, whole = tmp_path / "run", tmp_path / "whole"
    steps_done = []

    def ctrl_c_at_step_4():
        steps_done.append(1)
        return len(steps_done) == 4
    with monkeypatch.context() as patch:
        patch.setattr(run_module, "interrupt_requested", ctrl_c_at_step_4)
        with pytest.raises(Interrupted, match="interrupted at iteration 4"):
            training.main(["--output", str(out), *args])
    assert steps(out) == [4] and not (out / "val-error.series.txt").exists()
    training.main(["--output", str(out), *args, "--resume"])
    training.main(["--output", str(whole), *args])
    for name in ("val-error.series.txt", "train-loss.series.txt", "summary.json"):
        assert (out / name).read_text() == (whole / name).read_text(), name
    assert steps(out) == steps(whole) == [4, 8]


def test_non_finite_loss_names_the_iteration_and_keeps_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    proc = train("--experiment", "DEFAULT", "--dataset", "mnist5k", "--output", out, *TINY,
                 "--set", "initial_learning_rate=1e30", "--checkpoint-interval", "1",
                 check=False)
    line = assert_one_line_error(proc, "diverged at iteration")
    diverged = int(line.split("iteration ")[1].split(":")[0])
    assert steps(out)[-1] == diverged - 1
    assert f"iteration {diverged - 1}) is intact" in line
    assert not (out / "summary.json").exists()


def test_inputs_are_validated_before_anything_is_written(tmp_path):
    out = tmp_path / "run"
    for bad in (["--experiment", "DEFAULT", "--dataset", "cifar10", "--root", tmp_path / "no"],
                ["--experiment", "DEFAULT_INIT", "--dataset", "mnist5k",
                 "--init-from", tmp_path / "missing.h5"],
                ["--experiment", "RESNET18_FLOAT", "--dataset", "imagenet"],
                ["--set", "batch_size=4096"]):
        proc = train("--output", out, *bad, check=False)
        assert_one_line_error(proc)
        assert not out.exists(), bad


# ----------------------------------------------------------------------------- eval.py

def test_eval_output_location_is_checked_before_the_weights_are_read(tmp_path):
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not a checkpoint")
    with ReadOnlyDir(tmp_path / "ro") as ro:
        proc = evaluate("--model", corrupt, "--out-dir", Path(ro.path) / "eval", check=False)
        assert_one_line_error(proc, "--out-dir", "cannot write")
    (tmp_path / "file").write_text("x")
    proc = evaluate("--model", corrupt, "--out-dir", tmp_path / "file" / "eval", check=False)
    assert_one_line_error(proc, "--out-dir", "lies under the file")
    # the same command with a good folder reaches the weights
    proc = evaluate("--model", corrupt, "--out-dir", tmp_path / "eval", check=False)
    assert_one_line_error(proc, "corrupt.npz")


def test_eval_never_overwrites_its_input(tiny_run, tmp_path):
    out = tmp_path / "eval"
    out.mkdir()
    model = out / "summary.json"   # a checkpoint that happens to sit where a report goes
    model.write_bytes(CheckpointManager(tiny_run / "checkpoints", clean=False)
                      .path_for(4).read_bytes())
    before = model.read_bytes()
    proc = evaluate("--model", model, "--out-dir", out, check=False)
    assert_one_line_error(proc, "would overwrite the input")
    assert model.read_bytes() == before and files_under(out) == ["summary.json"]


def test_eval_full_disk_is_one_line_and_leaves_no_partial_file(tiny_run, tmp_path):
    with SmallDisk(tmp_path / "disk", 20000) as disk:
        out = Path(disk.path) / "eval"
        proc = evaluate("--model", tiny_run, "--out-dir", out, check=False,
                        preexec_fn=disk.preexec_fn())
        assert_one_line_error(proc, "cannot write")
        left = files_under(out)
        assert "summary.json" not in left and not [p for p in left if ".tmp." in p]
        for name in left:   # what was written is complete
            if name.endswith(".json"):
                json.loads((out / name).read_text())


def test_eval_records_its_model_and_refuses_another_ones_folder(tiny_run, tmp_path):
    out = tmp_path / "eval"
    evaluate(tiny_run, "--out-dir", out)           # the network as first argument
    first = snapshot(out)
    assert {"summary.json", "report.md", "layers.csv", "bitwidths.png",
            "evaluation.json"} <= set(first)
    # the same model and settings again: the folder is reused
    evaluate("--model", tiny_run, "--out-dir", out)
    assert json.loads((out / "summary.json").read_text())["val_error"] == \
        json.loads(first["summary.json"])["val_error"]
    other = CheckpointManager(tiny_run / "checkpoints", clean=False).path_for(2)
    proc = evaluate("--model", other, "--out-dir", out, check=False)
    assert_one_line_error(proc, "holds scores of another evaluation", "model")
    proc = evaluate("--model", tiny_run, "--val-samples", "10", "--out-dir", out, check=False)
    assert_one_line_error(proc, "holds scores of another evaluation", "val_samples")


# ----------------------------------------------------------------------------- numbers

def _bad_values(action):
    """Values outside the flag's declared range (and never-valid ones)."""
    kind = action.type
    bad = ["nan", "inf", "x"] if kind.kind is float else ["1.5", "x"]
    if kind.low is not None:
        bad.append(str(kind.low if kind.low_open else kind.low - 1))
    if kind.high is not None:
        bad.append(str(kind.high + 1))
    return bad


@pytest.mark.parametrize("parser", [training.build_parser, evaluation.build_parser],
                         ids=["train", "eval"])
def test_every_numeric_flag_is_validated(parser):
    p = parser()
    actions = numeric_actions(p)
    assert len(actions) >= 4
    for action in actions:
        for value in _bad_values(action):
            with pytest.raises(UserError, match="expected"):
                p.parse_args([action.option_strings[0], value])


@pytest.mark.parametrize("override, words", [
    ("epochs=0", ["epochs", "> 0"]),
    ("epochs=.nan", ["epochs", "integer"]),
    ("batch_size=-3", ["batch_size", "> 0"]),
    ("initial_learning_rate=.inf", ["initial_learning_rate", "finite"]),
    ("initial_learning_rate=nan", ["initial_learning_rate", "finite"]),
    ("lr_decay=2", ["lr_decay", "<= 1"]),
    ("momentum=1", ["momentum", "[0, 1)"]),
    ("w_bitwidth=2.5", ["w_bitwidth", "integer"]),
    ("weight_decay=-1e-4", ["weight_decay", ">= 0"]),
    ("target_weight_kbytes=0", ["target_weight_kbytes"]),
    ("lr_milestones=[200]", ["lr_milestones"]),
    ("epochs=[3]", ["epochs"]),
    ("w_quantize=parametric_fp_d_xmx", ["w_quantize", "did you mean"]),
    ("not_a_field=3", ["not an experiment field"]),
    ("epochs", ["KEY=VALUE"]),
])
def test_every_set_override_is_validated(override, words):
    args = training.parse_args(["--set", override])
    with pytest.raises(UserError) as info:
        load_experiment(args.experiment, None, parse_overrides(args.set))
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("script, args, words", [
    (EVAL, ["--model", "x", "--batch-size", "0"], ["--batch-size", "integer >= 1"]),
    (EVAL, ["--model", "x", "--val-samples", "-1"], ["--val-samples"]),
    (TRAIN, ["--seed", "nan"], ["--seed"]),
    (TRAIN, ["--keep-last", "0"], ["--keep-last"]),
    (TRAIN, ["--set", "momentum=nan"], ["momentum", "finite"]),
    (TRAIN, ["--set", "epochs=-1"], ["epochs"]),
])
def test_bad_numbers_are_one_line_errors_from_the_scripts(script, args, words, tmp_path):
    out = ["--output", tmp_path / "run"] if script == TRAIN else []
    proc = run_script(script, *args, *out, check=False, env=ENV)
    assert_one_line_error(proc, *words)
    assert not (tmp_path / "run").exists()
