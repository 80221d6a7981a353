"""Issue 12's contracts for train.py, score.py, sweep.py, eval.py and the tools, through the
real entry scripts: the run lifecycle (occupied --output, --resume with other options, nothing
written before the inputs are valid, Ctrl-C, a diverging loss), output locations (under a file,
read-only, full disk), which scores score.py reuses, bounded numeric flags, the official
spellings, and the refusal of a multi-process (mpirun) launch."""
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.dev.testing import (ReadOnlyDir, SmallDisk, assert_one_line_error, fake_world,
                                files_under, interrupt_script, run_script)
from common.cli import run_cli
from common.train.checkpoint import CheckpointManager
from datacleansing import cleanse
from datacleansing.cli import (build_score_parser, build_sweep_parser, build_train_parser,
                               score_main, sweep_main, train_main)
from datacleansing.experiment import build_parser as build_eval_parser
from datacleansing.experiment import eval_main
from datacleansing.options import MODEL_NAMES, refuse_multi_process

FOLDER = Path(__file__).resolve().parent.parent
TRAIN, SCORE = FOLDER / "train.py", FOLDER / "score.py"
QUIET = {"NNABLA_RESEARCH_NO_PROGRESS": "1"}


def train(*args, check=True, **kw):
    return run_script(TRAIN, *args, check=check, env=QUIET, **kw)


def snapshot(folder):
    return {p: (Path(folder) / p).read_bytes() for p in files_under(folder)}


def checkpoint_steps(run):
    return [s for s, _ in CheckpointManager(Path(run) / "checkpoints", clean=False).checkpoints()]


def _script_main(relative):
    spec = importlib.util.spec_from_file_location(f"dc_{Path(relative).stem}", FOLDER / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


# ----------------------------------------------------------------------------- run lifecycle

def test_occupied_output_is_refused_and_resume_compares_options(tiny_run, tiny_args):
    before = snapshot(tiny_run)
    proc = train("--output", tiny_run, *tiny_args, check=False)
    assert_one_line_error(proc, "already holds a run", "--resume", "new --output")
    proc = train("--output", tiny_run, *tiny_args, "--lr", "0.02", "--flip", "--resume",
                 check=False)
    assert_one_line_error(proc, "cannot --resume", "--lr (0.05 -> 0.02)", "--flip (False -> True)")
    assert snapshot(tiny_run) == before          # config.yaml and everything else unchanged


def _class_folder(root, bad=None):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(
                root / c / f"{i}.png")
    if bad:
        (root / "b" / bad).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return root


def test_nothing_is_written_before_the_data_is_read(tmp_path):
    out = tmp_path / "run"
    images = _class_folder(tmp_path / "images", bad="broken.png")
    proc = train("--output", out, "--dataset", "folder", "--root", images, "--epochs", "1",
                 check=False)
    assert_one_line_error(proc, "broken.png", "cannot decode")
    proc = train("--output", out, "--dataset", "mnist", "--root", tmp_path / "images",
                 check=False)
    assert_one_line_error(proc)
    assert not out.exists()


def test_ctrl_c_mid_training_keeps_a_checkpoint_and_resumes(tmp_path):
    out = tmp_path / "run"
    args = ["--output", out, "--model", "mlp", "--train-samples", "320", "--batch-size", "32",
            "--epochs", "60", "--cache", "final"]
    proc = interrupt_script(TRAIN, *args, env=QUIET,
                            ready=lambda _: any((out / "checkpoints").glob("ckpt_*.npz")))
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted at iteration ") and "continue with --resume" in last
    stopped = int(last.split()[3].rstrip(";"))
    assert 0 < stopped < 600 and checkpoint_steps(out) == [stopped]
    assert not (out / "summary.json").exists()
    resumed = train(*args, "--resume")
    assert f"resuming at iteration {stopped} of 600" in resumed.stdout
    assert json.loads((out / "summary.json").read_text())["traced_steps"] == 10


def test_non_finite_loss_is_one_line_and_the_last_checkpoint_stays(tmp_path):
    out = tmp_path / "run"
    proc = train("--output", out, "--model", "mlp", "--train-samples", "64", "--batch-size",
                 "64", "--epochs", "3", "--lr", "1e30", check=False)
    assert_one_line_error(proc, "diverged at iteration 2", "(iteration 1) is intact")
    assert checkpoint_steps(out) == [1]
    assert not (out / "params" / "final.h5").exists()


# ----------------------------------------------------------------------------- output locations

def test_unwritable_output_locations_are_one_line(tmp_path, tiny_run):
    (tmp_path / "file").write_text("x")
    assert_one_line_error(train("--output", tmp_path / "file" / "run", check=False),
                          "lies under the file")
    with ReadOnlyDir(tmp_path / "ro") as ro:
        assert_one_line_error(train("--output", Path(ro.path) / "run", check=False),
                              "--output", "cannot write")
        proc = run_script(SCORE, tiny_run, "--out-dir", ro.path, check=False, env=QUIET)
        assert_one_line_error(proc, "--out-dir", "cannot write")


def _file_limit(size):
    def limit():
        import resource
        import signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    return limit


def test_full_disk_leaves_no_partial_scores(tmp_path, tiny_run):
    with SmallDisk(tmp_path / "disk", 256 * 1024) as disk:
        disk.fill(leave=2048)
        proc = run_script(SCORE, tiny_run, "--method", "random", "--out-dir", disk.path,
                          check=False, env=QUIET,
                          preexec_fn=disk.preexec_fn() if disk.mounted else _file_limit(2048))
        assert_one_line_error(proc, "influence_random.csv")
        assert [p for p in files_under(disk.path) if p != ".filler"] == []


# ----------------------------------------------------------------------------- which scores

def test_scores_are_reused_only_for_the_same_settings_run_and_file(tiny_run, tmp_path, capsys):
    out = tmp_path / "scores"
    csv_path, record_path = out / "influence_final.csv", out / "influence_final.json"

    def score(*extra, run=tiny_run):
        score_main([str(run), "--method", "final", "--out-dir", str(out), *extra])
        return capsys.readouterr().out

    assert "(computed in" in score()
    reference = csv_path.read_bytes()
    assert "(reused)" in score()
    text = score("--hessian", "textbook")
    assert "made with another --hessian" in text and "(replaced in" in text
    assert json.loads(record_path.read_text())["hessian"] == "textbook"
    assert csv_path.read_bytes() != reference
    csv_path.write_bytes(reference)          # a CSV that is not the one its record describes
    assert "does not match its record" in score("--hessian", "textbook")
    # another run (other labels) scored into the same folder
    other = tmp_path / "other"
    shutil.copytree(tiny_run, other)
    with np.load(other / "labels.npz") as z:
        arrays = dict(z)
    arrays["labels"] = np.roll(arrays["labels"], 1)
    np.savez(other / "labels.npz", **arrays)
    assert "made with another run" in score("--hessian", "textbook", run=other)
    assert not [p for p in files_under(out) if ".tmp." in p]


# ----------------------------------------------------------------------------- flags

def _error_line(capsys, main, argv):
    with pytest.raises(SystemExit) as exc:
        run_cli(main, argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_bad_numeric_flags_are_one_line_and_write_nothing(tmp_path, capsys):
    out, root = str(tmp_path / "out"), str(tmp_path)
    cases = [
        (train_main, ["--output", out, "--epochs", "0"], "--epochs"),
        (train_main, ["--output", out, "--lr", "nan"], "--lr"),
        (train_main, ["--output", out, "--lr", "0"], "--lr"),
        (train_main, ["--output", out, "--batch-size", "1.5"], "--batch-size"),
        (train_main, ["--output", out, "--flip-labels", "1.5"], "--flip-labels"),
        (train_main, ["--output", out, "--flip-labels", "1"], "[0, 1)"),
        (train_main, ["--output", out, "--seed", "-1"], "--seed"),
        (train_main, ["--output", out, "--image-size", "4"], "--image-size"),
        (train_main, ["--output", out, "--epochs", "2", "--trace-epochs", "3"], "exceeds"),
        (score_main, [out, "--seed", "-2"], "--seed"),
        (sweep_main, [out, "--trials", "0"], "--trials"),
        (sweep_main, [out, "--counts", "10", "-1"], "--counts"),
        (eval_main, ["--output", out, "--trials", "0"], "--trials"),
        (eval_main, ["--output", out, "--epochs", "0"], "--epochs"),
        (eval_main, ["--output", out, "--counts", "-5"], "--counts"),
        (cleanse.main, ["--root", root, "--output", out, "--top", "0"], "--top"),
        (cleanse.main, ["--root", root, "--output", out, "--image-size", "1000"],
         "--image-size"),
        (cleanse.main, ["--root", root, "--output", out, "--epochs", "2", "--trace-epochs",
                        "3"], "--trace-epochs"),
        (_script_main("tools/mislabel.py"), ["--out-dir", out, "--flip", "0"], "--flip"),
        (_script_main("tools/mislabel.py"), ["--out-dir", out, "--top", "2"], "--top"),
        (_script_main("tools/loo_check.py"), ["--out-dir", out, "--n-loo", "-1"], "--n-loo"),
        (_script_main("bench/bench_scoring.py"), ["--out-dir", out, "--n-train", "x"],
         "--n-train"),
        (_script_main("bench/profile_hvp.py"), ["--repeats", "0"], "--repeats"),
    ]
    for main, argv, fragment in cases:
        assert fragment in _error_line(capsys, main, argv), argv
    assert files_under(tmp_path) == []
    proc = train("--output", out, "--lr", "inf", check=False)
    assert_one_line_error(proc, "--lr", "expected a number > 0")


def test_official_spellings_are_hidden_aliases():
    a = build_train_parser().parse_args(["-o", "r", "-e", "3", "-ds", "mnist", "--data-dir",
                                         "d", "-bs", "16", "-m", "mlp", "-di", "1"])
    assert (a.output, a.epochs, a.dataset, a.root, a.batch_size, a.model, a.device_id) == (
        "r", 3, "mnist", "d", 16, "mlp", 1)
    a = build_train_parser().parse_args(["--output_dir", "r", "--n_epochs", "4",
                                         "--batch_size", "8"])
    assert (a.output, a.epochs, a.batch_size) == ("r", 4, 8)
    sweep = build_sweep_parser()
    assert sweep.parse_args(["run"]).mode == "replay"
    a = sweep.parse_args(["run", "-nt", "2", "-r", "0", "10", "-ra"])
    assert (a.trials, a.counts, a.mode) == (2, [0, 10], "full")
    a = sweep.parse_args(["run", "--n_trials", "3", "--remove_n_list", "5", "--retrain_all"])
    assert (a.trials, a.counts, a.mode) == (3, [5], "full")
    score = build_score_parser()
    assert score.parse_args(["run"]).method == "final"
    assert score.parse_args(["run", "--calc-infl-with-all-params"]).method == "hara"
    a = cleanse.build_parser().parse_args(["--data", "d", "-e", "2", "-bs", "4", "-m",
                                           "logreg", "--n_epochs", "3"])
    assert (a.root, a.epochs, a.batch_size, a.model) == ("d", 3, 4, "logreg")
    hidden = ("-o,", "--output_dir", "--n_epochs", "-ds", "-bs", "--batch_size", "-di", "-nt",
              "--n_trials", "--remove_n_list", "-ra", "--retrain_all", "--calc-infl", "--data-dir")
    a = build_eval_parser().parse_args(["-o", "r", "-ds", "stl10", "-nt", "6", "-r", "0", "1",
                                        "-ra", "-e", "2"])
    assert (a.output, a.dataset, a.trials, a.counts, a.mode, a.epochs) == (
        "r", "stl10", 6, [0, 1], "full", 2)
    for parser in (build_train_parser(), sweep, score, cleanse.build_parser(),
                   build_eval_parser()):
        shown = parser.format_help().split()
        assert not [flag for flag in hidden if flag in shown]


def test_a_dataset_root_selects_the_paper_recipe():
    smoke = build_train_parser().parse_args([])
    assert (smoke.dataset, smoke.epochs, smoke.train_samples) == ("mnist5k", 3, 1280)
    paper = build_train_parser().parse_args(["--root", "CIFAR"])
    assert (paper.dataset, paper.model, paper.epochs, paper.batch_size, paper.lr) == (
        "cifar10", "cnn", 20, 64, 0.05)
    assert (paper.train_samples, paper.trace_epochs, paper.cache, paper.shift, paper.flip) == (
        0, 1, "all", 4, True)
    args = build_train_parser().parse_args(["--data-dir=MNIST", "--dataset", "mnist"])
    assert args.dataset == "mnist"


def test_model_names_match_the_models():
    from datacleansing.models import MODELS
    assert sorted(MODELS) == sorted(MODEL_NAMES)


# ----------------------------------------------------------------------------- one process

def test_mpirun_with_one_process_is_a_single_process(monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "1")
    refuse_multi_process()


@pytest.mark.parametrize("rank", [0, 1])
def test_every_script_refuses_a_multi_process_launch(monkeypatch, tmp_path, capsys, rank):
    """Under mpirun -n 2 each rank would train alone into the same folder: every script stops
    before it reads or writes anything."""
    comm = fake_world(monkeypatch, size=2, rank=rank)
    out, run = str(tmp_path / "out"), str(tmp_path / "run")
    images = str(_class_folder(tmp_path / "images"))
    before = files_under(tmp_path)
    mains = [(train_main, ["--output", out]), (score_main, [run]), (sweep_main, [run]),
             (eval_main, ["--output", out]),
             (cleanse.main, ["--root", images, "--output", out]),
             (_script_main("tools/mislabel.py"), ["--out-dir", out]),
             (_script_main("tools/loo_check.py"), ["--out-dir", out]),
             (_script_main("bench/bench_scoring.py"), ["--out-dir", out]),
             (_script_main("bench/profile_hvp.py"), [])]
    for main, argv in mains:
        line = _error_line(capsys, main, argv)
        assert "single process" in line and "mpirun started 2" in line, line
    assert files_under(tmp_path) == before
    assert comm.calls == []



def test_a_data_parallel_step_is_not_the_traced_step():
    """Why there is no data-parallel path: two shards with summed gradients (what an
    all-reduce over 2 processes gives) take another step than the whole batch the trace
    records, because the CNN's batch normalization takes its statistics per shard."""
    import nnabla as nn
    import nnabla.functions as F

    from datacleansing import data as D
    from datacleansing.models import build, per_sample_loss

    splits = D.stratified_subset(D.load("mnist5k"), 16, 0)
    x, y = splits.x_train, splits.y_train
    nn.clear_parameters()
    xv = {n: nn.Variable((n,) + x.shape[1:]) for n in (16, 8)}
    yv = {n: nn.Variable((n, 1)) for n in (16, 8)}
    loss = {n: F.sum(per_sample_loss(build("cnn", xv[n], 10, bn="batch"), yv[n])) / 16
            for n in (16, 8)}
    params = nn.get_parameters()

    def gradient(n, rows):
        xv[n].d, yv[n].d = x[rows], y[rows].reshape(-1, 1)
        for p in params.values():
            p.grad.zero()
        loss[n].forward()
        loss[n].backward()
        return {k: p.g.copy() for k, p in params.items()}

    whole = gradient(16, slice(None))
    halves = [gradient(8, slice(r, None, 2)) for r in (0, 1)]
    worst = max(np.abs(halves[0][k] + halves[1][k] - whole[k]).max() / np.abs(whole[k]).max()
                for k in whole)
    assert worst > 0.05, worst
