"""Checkpoint round trips, pruning, corruption handling, and SIGKILL-resume."""
import os
import random
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import nnabla as nn
import nnabla.functions as F
import nnabla.parametric_functions as PF
import nnabla.random
import nnabla.solvers as S
import numpy as np
import pytest

from common.errors import UserError
from common.fileio import OutputError
from common.train.checkpoint import (CheckpointError, CheckpointManager, load_checkpoint,
                                     load_parameters_only)
from common.train.seeding import seed_everything

SCRIPT = Path(__file__).with_name("_ckpt_train_script.py")
PY = sys.executable


@pytest.fixture(autouse=True)
def fresh_parameters():
    nn.clear_parameters()
    yield
    nn.clear_parameters()


def build(width=4, seed=0):
    """Small model with an Adam-trained body and a Momentum-trained head."""
    seed_everything(seed)
    x = nn.Variable((5, 3))
    with nn.parameter_scope("body"):
        h = F.relu(PF.affine(x, width))
    with nn.parameter_scope("head"):
        y = PF.affine(h, 2)
    loss = F.mean(y ** 2)
    adam, mom = S.Adam(1e-2), S.Momentum(1e-1, 0.9)
    with nn.parameter_scope("body"):
        adam.set_parameters(nn.get_parameters())
    with nn.parameter_scope("head"):
        mom.set_parameters(nn.get_parameters())
    return x, loss, {"body": adam, "head": mom}


def train(x, loss, solvers, steps):
    for _ in range(steps):
        x.d = np.random.randn(*x.shape)
        loss.forward()
        for s in solvers.values():
            s.zero_grad()
        loss.backward()
        for s in solvers.values():
            s.update()


def snapshot(solvers):
    params = {k: v.d.copy() for k, v in nn.get_parameters(grad_only=False).items()}
    states = {(sn, pn, k): v.d.copy()
              for sn, s in solvers.items() for pn, st in s.get_states().items()
              for k, v in st.pstate.items()}
    ts = {(sn, pn): st.t for sn, s in solvers.items() for pn, st in s.get_states().items()}
    lrs = {sn: s.learning_rate() for sn, s in solvers.items()}
    return params, states, ts, lrs


def test_round_trip_restores_everything_exactly(tmp_path):
    x, loss, solvers = build()
    train(x, loss, solvers, 3)
    solvers["head"].set_learning_rate(0.05)
    rs = np.random.RandomState(11)
    rs.rand(5)
    gen = np.random.default_rng(5)
    gen.random(3)
    ema = np.arange(6, dtype=np.float32).reshape(2, 3)
    before = snapshot(solvers)
    mgr = CheckpointManager(tmp_path)
    mgr.save(7, solvers, config={"lr": 0.01, "out": tmp_path}, metric=0.5, epoch=2,
             extra={"rng": rs, "gen": gen, "ema": ema, "note": {"a": [1, 2]}})
    # What every generator yields next from the saved state.
    expect_draws = (np.random.rand(), random.random(), nnabla.random.prng.rand())
    rs_next, gen_next = rs.rand(), gen.random()

    # Wreck everything, then restore.
    train(x, loss, solvers, 2)
    solvers["head"].set_learning_rate(9.0)
    seed_everything(999)
    ckpt = mgr.load_latest()
    step, config, extra = mgr.restore(ckpt, solvers)

    after = snapshot(solvers)
    assert step == 7 and ckpt.epoch == 2 and ckpt.metric == 0.5
    assert config == {"lr": 0.01, "out": str(tmp_path)}
    for b, a in zip(before[:2], after[:2]):
        assert b.keys() == a.keys()
        for k in b:
            assert np.array_equal(b[k], a[k]), k
    assert before[2] == after[2] and all(t == 3 for t in after[2].values())
    assert after[3] == pytest.approx(before[3])
    assert (np.random.rand(), random.random(), nnabla.random.prng.rand()) == expect_draws
    assert extra["rng"].rand() == rs_next
    assert extra["gen"].random() == gen_next
    assert np.array_equal(extra["ema"], ema) and extra["ema"].dtype == np.float32
    assert extra["note"] == {"a": [1, 2]}


def test_restored_run_continues_identically(tmp_path):
    x, loss, solvers = build()
    train(x, loss, solvers, 2)
    mgr = CheckpointManager(tmp_path)
    mgr.save(2, solvers)
    train(x, loss, solvers, 3)
    reference = snapshot(solvers)[0]
    train(x, loss, solvers, 4)  # diverge
    mgr.resume(solvers)
    train(x, loss, solvers, 3)
    for k, v in snapshot(solvers)[0].items():
        assert np.array_equal(v, reference[k]), k


def test_keep_last_and_best_min(tmp_path):
    x, loss, solvers = build()
    mgr = CheckpointManager(tmp_path, keep_last=2)
    metrics = [3.0, 1.0, 2.0, 5.0, 4.0]
    for i, m in enumerate(metrics, start=1):
        mgr.save(i * 10, solvers, metric=m)
    assert [s for s, _ in mgr.checkpoints()] == [40, 50]
    best = mgr.load_best()
    assert best.step == 20 and best.metric == 1.0
    assert not (tmp_path / "ckpt_00000020.npz").exists()  # pruned, best survives
    # A new manager on the same dir knows the best metric from best.npz.
    mgr2 = CheckpointManager(tmp_path, keep_last=2)
    mgr2.save(60, solvers, metric=1.5)
    assert mgr2.load_best().step == 20
    mgr2.save(70, solvers, metric=0.5)
    assert mgr2.load_best().step == 70
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best.npz", "ckpt_00000060.npz", "ckpt_00000070.npz"]


def test_new_manager_prunes_what_a_killed_save_left(tmp_path):
    """A kill between a save's rename and its pruning leaves keep_last + 1 checkpoints; the
    next manager (the resumed run) removes the oldest, never the newest or best."""
    x, loss, solvers = build()
    CheckpointManager(tmp_path, keep_last=3).save(10, solvers, metric=1.0)
    for step in (20, 30):
        CheckpointManager(tmp_path, keep_last=3).save(step, solvers, metric=2.0)
    CheckpointManager(tmp_path, keep_last=2)
    assert [s for s, _ in CheckpointManager(tmp_path, keep_last=2).checkpoints()] == [20, 30]
    assert load_checkpoint(tmp_path / "best.npz").step == 10


def test_best_max_mode_and_nan_ignored(tmp_path):
    x, loss, solvers = build()
    mgr = CheckpointManager(tmp_path, keep_last=1)
    for step, m in [(1, 0.2), (2, 0.9), (3, float("nan")), (4, 0.5)]:
        mgr.save(step, solvers, metric=m, mode="max")
    assert mgr.load_best().step == 2


def test_corrupt_newest_is_skipped_with_warning(tmp_path):
    x, loss, solvers = build()
    mgr = CheckpointManager(tmp_path, keep_last=5)
    for step in (1, 2, 3, 4):
        mgr.save(step, solvers)
    newest, flipped = mgr.path_for(4), mgr.path_for(3)
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])  # truncated
    raw = bytearray(flipped.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte inside the payload
    flipped.write_bytes(bytes(raw))
    with pytest.warns(UserWarning) as record:
        ckpt = mgr.load_latest()
    assert ckpt.step == 2
    text = " ".join(str(w.message) for w in record)
    assert newest.name in text and flipped.name in text
    with pytest.raises(CheckpointError):
        load_checkpoint(newest)


def test_all_corrupt_or_empty_gives_none(tmp_path):
    mgr = CheckpointManager(tmp_path)
    assert mgr.load_latest() is None
    (tmp_path / "ckpt_00000001.npz").write_bytes(b"not a zip")
    with pytest.warns(UserWarning, match="ckpt_00000001.npz"):
        assert mgr.load_latest() is None


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    x, loss, solvers = build()
    mgr = CheckpointManager(tmp_path)
    good = mgr.save(1, solvers)

    real_write_array = np.lib.format.write_array
    written = []

    def write_until_full(fh, array, **kw):
        if written:
            raise OSError(28, "No space left on device")
        written.append(1)
        real_write_array(fh, array, **kw)

    monkeypatch.setattr(np.lib.format, "write_array", write_until_full)
    with pytest.raises(OutputError, match="No space left"):
        mgr.save(2, solvers)
    assert sorted(p.name for p in tmp_path.iterdir()) == [good.name]
    monkeypatch.undo()
    assert mgr.load_latest().step == 1


def test_stale_temp_of_dead_process_is_removed(tmp_path):
    dead = subprocess.Popen([PY, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".ckpt_00000009.npz.tmp.{dead.pid}.abcd"
    live = tmp_path / f".ckpt_00000009.npz.tmp.{os.getpid()}.efgh"
    stale.write_bytes(b"half")
    live.write_bytes(b"half")
    CheckpointManager(tmp_path)
    assert not stale.exists() and live.exists()


def test_saving_an_older_step_drops_abandoned_newer_checkpoints(tmp_path):
    x, loss, solvers = build()
    mgr = CheckpointManager(tmp_path, keep_last=5)
    for step in (5, 10, 15):
        mgr.save(step, solvers)
    mgr.save(6, solvers)  # e.g. a fresh run reusing the directory
    assert [s for s, _ in mgr.checkpoints()] == [5, 6]


def test_shape_mismatch_and_wrong_solver_are_errors(tmp_path):
    x, loss, solvers = build(width=4)
    train(x, loss, solvers, 2)
    mgr = CheckpointManager(tmp_path)
    mgr.save(1, solvers)
    ckpt = mgr.load_latest()
    nn.clear_parameters()
    x, loss, solvers = build(width=5)
    with pytest.raises(CheckpointError, match=r"body/affine/W.*\(3, 4\).*\(3, 5\)"):
        mgr.restore(ckpt)
    with pytest.raises(CheckpointError, match=r"solver 'body'.*shape"):
        mgr.restore(ckpt, solvers)
    nn.clear_parameters()
    x, loss, solvers = build(width=4)
    untouched = snapshot(solvers)[0]
    with pytest.raises(UserError, match="Momentum"):
        mgr.restore(ckpt, {"body": solvers["body"], "head": S.Adam()})
    with pytest.raises(UserError, match="no solver 'gen'"):
        mgr.restore(ckpt, {"gen": solvers["body"]})
    # A refused restore changed nothing.
    for k, v in snapshot(solvers)[0].items():
        assert np.array_equal(v, untouched[k]), k
    assert not np.array_equal(untouched["body/affine/W"], ckpt.params["body/affine/W"])


def test_load_parameters_only_for_eval(tmp_path):
    x, loss, solvers = build()
    train(x, loss, solvers, 2)
    mgr = CheckpointManager(tmp_path)
    mgr.save(1, solvers, metric=1.0)
    train(x, loss, solvers, 2)
    mgr.save(2, solvers, metric=2.0)
    best = mgr.load_best().params
    nn.clear_parameters()
    params = load_parameters_only(tmp_path)  # directory -> best.npz
    assert set(params) == set(best)
    registry = nn.get_parameters(grad_only=False)
    for k, v in best.items():
        assert np.array_equal(registry[k].d, v)
    latest = load_parameters_only(mgr.path_for(2), set_params=False)
    assert not np.array_equal(latest["body/affine/W"], best["body/affine/W"])


def test_seed_everything_reproduces_all_sources():
    def draws():
        rs = seed_everything(3)
        with nn.parameter_scope("s"):
            w = PF.affine(nn.Variable((1, 2)), 3).parent.inputs[1].d.copy()
        nn.clear_parameters()
        return np.random.rand(), random.random(), rs.rand(), w

    a, b = draws(), draws()
    assert a[:3] == b[:3] and np.array_equal(a[3], b[3])
    seed_everything(4)
    assert np.random.rand() != a[0]


def _wait_for_temp(ckpt_dir, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ckpt_dir.is_dir() and any(".tmp." in p.name for p in ckpt_dir.iterdir()):
            return
        time.sleep(0.001)


def _run_until(proc, how, delay, ckpt_dir):
    """Let ``proc`` run, then SIGKILL it: on its 2nd 'saving' line ("save"), once
    that save's temp file is on disk ("save-tmp"), or after ``delay`` seconds."""
    out = []
    if how in ("save", "save-tmp"):
        seen = 0
        for line in proc.stdout:
            out.append(line)
            if line.startswith("saving"):
                seen += 1
                if seen == 2:
                    if how == "save-tmp":
                        _wait_for_temp(ckpt_dir)
                    proc.send_signal(signal.SIGKILL)
                    break
    else:
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
    rest, _ = proc.communicate(timeout=60)
    out.append(rest or "")
    return "".join(out), proc.returncode


def test_sigkill_at_any_moment_resumes_bit_exact(tmp_path):
    iters = "30"
    ref = tmp_path / "ref"
    subprocess.run([PY, str(SCRIPT), "--out", str(ref), "--iters", iters],
                   check=True, timeout=120, capture_output=True)

    run = tmp_path / "run"
    jitter = random.Random(2024)
    plan = [("save-tmp", None), ("delay", 0.2), ("save", None),
            ("delay", 0.5 + jitter.random()), ("save-tmp", None),
            ("delay", 0.5 + jitter.random()), ("save-tmp", None),
            ("delay", 0.3 + jitter.random())]
    kills, mid_save, resumed_from = 0, 0, []
    for attempt in range(40):
        cmd = [PY, str(SCRIPT), "--out", str(run), "--iters", iters, "--slow-fsync", "0.06"]
        if attempt:
            cmd.append("--resume")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True)
        how, delay = plan[attempt] if attempt < len(plan) else ("finish", 120)
        text, code = _run_until(proc, how, delay, run / "ckpt")
        resumed_from += [int(m) for m in re.findall(r"^resumed (\d+)$", text, re.M)]
        if code == -signal.SIGKILL:
            kills += 1
            if how.startswith("save") and any(".tmp." in p.name for p in (run / "ckpt").iterdir()):
                mid_save += 1  # killed with a checkpoint half written
            continue
        assert code == 0 and "done" in text, text
        break
    else:
        pytest.fail("training never finished")

    assert kills >= 6
    assert mid_save >= 2, "no SIGKILL landed inside a save"
    assert len(set(resumed_from)) >= 3  # really resumed, from several points
    ref_final, run_final = np.load(ref / "final.npz"), np.load(run / "final.npz")
    assert sorted(ref_final.files) == sorted(run_final.files)
    for k in ref_final.files:
        assert np.array_equal(ref_final[k], run_final[k]), k
    # The loss log was appended across restarts with no duplicated or lost steps.
    ref_log = (ref / "log" / "train-loss.series.txt").read_text()
    assert (run / "log" / "train-loss.series.txt").read_text() == ref_log
    assert len(ref_log.splitlines()) == int(iters)
    names = sorted(p.name for p in (run / "ckpt").iterdir())
    assert names == ["best.npz", "ckpt_00000027.npz", "ckpt_00000030.npz"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert CheckpointManager(run / "ckpt").load_latest().step == 30
