"""Tests for common.mss.evaluation on a tiny generated MUSDB18 (WAV layout) root."""
import importlib
import json
import os
import shutil
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from common.errors import UserError
from common.mss.evaluation import aggregate_scores, evaluate_musdb, track_json_path

SR = 44100
SOURCES = ["drums", "bass", "other", "vocals"]
# Three tracks, so the median over tracks differs from the mean.
TRACKS = ["Artist A - First Song", "Artist B - Second Song", "Artist C - Third Song"]

# The dummy separator must be importable by spawned worker processes, so it
# lives in a module written to a temporary folder that is put on sys.path
# (spawned children inherit the parent's sys.path).
HELPER = textwrap.dedent('''
    import os
    from pathlib import Path
    import numpy as np
    import soundfile as sf

    SOURCES = ["drums", "bass", "other", "vocals"]


    class Oracle:
        """Knows the true sources of every track; returns them plus small noise."""

        def __init__(self, root, log, targets, noise):
            self.sample_rate = 44100
            self.targets = list(targets)
            self.noise = noise
            self.log = log
            self.tracks = []
            for i, d in enumerate(sorted((Path(root) / "test").iterdir())):
                src = {s: sf.read(d / f"{s}.wav", dtype="float32")[0] for s in SOURCES}
                src["accompaniment"] = src["drums"] + src["bass"] + src["other"]
                mix = sf.read(d / "mixture.wav", dtype="float32")[0]
                self.tracks.append((i, mix, src))
            self._write("init")

        def _write(self, what):
            with open(self.log, "a") as fh:
                fh.write(f"{what} {os.getpid()}\\n")

        def __call__(self, audio):
            self._write("call")
            for i, mix, src in self.tracks:
                if mix.shape == audio.shape and np.allclose(mix, audio, atol=1e-6):
                    rng = np.random.default_rng(1000 + i)
                    return {t: (src[t] + self.noise * rng.standard_normal(src[t].shape))
                            .astype(np.float32) for t in self.targets}
            raise AssertionError("unknown mixture")


    class OracleFactory:
        def __init__(self, root, log, targets=("vocals", "drums"), noise=0.01):
            self.args = (str(root), str(log), list(targets), noise)

        def __call__(self):
            return Oracle(*self.args)
''')


@pytest.fixture(scope="module")
def musdb_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("musdb")
    rng = np.random.default_rng(7)
    n = 3 * SR  # three 1 s BSSEval frames
    t = np.arange(n) / SR
    for k, name in enumerate(TRACKS):
        d = root / "test" / name
        d.mkdir(parents=True)
        mix = np.zeros((n, 2))
        for j, s in enumerate(SOURCES):
            # Distinct tones per source and track plus noise, 16-bit like MUSDB18-HQ.
            f = 110 * (j + 1) * (1 + 0.1 * k)
            x = 0.1 * np.sin(2 * np.pi * f * t)[:, None] + 0.03 * rng.standard_normal((n, 2))
            x = np.round(x * 32767) / 32767
            sf.write(d / f"{s}.wav", x, SR, subtype="PCM_16")
            mix += x
        sf.write(d / "mixture.wav", mix, SR, subtype="PCM_16")
    (root / "train").mkdir()
    return root


@pytest.fixture(scope="module")
def helper(tmp_path_factory):
    d = tmp_path_factory.mktemp("helper")
    (d / "mss_eval_dummy.py").write_text(HELPER)
    sys.path.insert(0, str(d))
    try:
        yield importlib.import_module("mss_eval_dummy")
    finally:
        sys.path.remove(str(d))
        sys.modules.pop("mss_eval_dummy", None)


def log_lines(path, kind):
    if not path.exists():
        return []
    return [ln.split() for ln in path.read_text().splitlines() if ln.startswith(kind)]


@pytest.fixture(scope="module")
def serial_run(musdb_root, helper, tmp_path_factory):
    work = tmp_path_factory.mktemp("serial")
    log = work / "calls.log"
    res = evaluate_musdb(helper.OracleFactory(musdb_root, log), musdb_root, is_wav=True,
                         out_dir=work / "eval", jobs=1, progress=False, quiet=True)
    return res, work / "eval", log


def test_json_files_and_tables(serial_run):
    res, out, log = serial_run
    assert sorted(res.evaluated) == sorted(TRACKS) and res.skipped == []
    assert len(log_lines(log, "init")) == 1 and len(log_lines(log, "call")) == 3
    for name in TRACKS:
        path = track_json_path(out, "test", name)
        assert path == out / "test" / f"{name}.json"
        data = json.loads(path.read_text())
        assert {t["name"] for t in data["targets"]} == {"vocals", "drums"}
        for t in data["targets"]:
            assert len(t["frames"]) == 3
            assert set(t["frames"][0]["metrics"]) == {"SDR", "SIR", "ISR", "SAR"}
    table = res.table
    assert list(table.columns) == ["SDR", "SIR", "ISR", "SAR"]
    assert list(table.index) == ["vocals", "drums"]
    assert np.isfinite(table.to_numpy()).all()
    assert (table["SDR"] > 8).all()  # oracle + 1 % noise: clearly good separation
    for key in ("csv", "markdown", "per_track", "pandas", "sdr_plot"):
        assert res.files[key].exists() and res.files[key].stat().st_size > 0
    csv = pd.read_csv(res.files["csv"], index_col=0)
    np.testing.assert_allclose(csv.loc[table.index, table.columns].to_numpy(),
                               table.to_numpy(), atol=1e-5)
    md = res.files["markdown"].read_text()
    assert "| vocals |" in md and f"{table.loc['vocals', 'SDR']:.3f}" in md
    assert res.files["sdr_plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_aggregation_equals_museval_evalstore(serial_run):
    import museval

    res, out, _ = serial_run
    store = museval.EvalStore()
    store.add_eval_dir(out)  # museval reads <out>/test/*.json itself
    theirs = store.agg_frames_tracks_scores()
    for (target, metric), value in theirs.items():
        assert res.table.loc[target, metric] == pytest.approx(value, abs=1e-12)
    assert len(theirs) == res.table.size
    # Independent re-computation: median over frames, then median over tracks.
    means = []
    for target in res.table.index:
        for metric in res.table.columns:
            per_track = []
            for name in TRACKS:
                data = json.loads(track_json_path(out, "test", name).read_text())
                frames = next(t for t in data["targets"] if t["name"] == target)["frames"]
                per_track.append(np.nanmedian([float(f["metrics"][metric]) for f in frames]))
            assert res.table.loc[target, metric] == pytest.approx(np.median(per_track))
            means.append(abs(np.mean(per_track) - np.median(per_track)))
    assert max(means) > 1e-3  # the data can tell a median from a mean


def test_aggregation_of_frames_with_nan(tmp_path):
    """museval stores silent frames as NaN; they are skipped, like EvalStore does."""
    def track(sdrs):
        frames = [{"time": i, "duration": 1, "metrics": {"SDR": v, "SIR": 1.0, "ISR": 2.0,
                                                          "SAR": 3.0}} for i, v in enumerate(sdrs)]
        return {"targets": [{"name": "vocals", "frames": frames},
                            {"name": "bass", "frames": frames}]}
    (tmp_path / "test").mkdir()
    for name, sdrs in [("a", [1.0, float("nan"), 5.0, 9.0]), ("b", [2.0, 4.0]),
                       ("c", [float("nan"), 10.0, 0.0])]:
        (tmp_path / "test" / f"{name}.json").write_text(json.dumps(track(sdrs)))
    table, per_track, _ = aggregate_scores(sorted((tmp_path / "test").glob("*.json")))
    assert per_track.loc[("a", "vocals"), "SDR"] == 5.0
    assert per_track.loc[("c", "vocals"), "SDR"] == 5.0
    assert table.loc["vocals", "SDR"] == 5.0  # median of 5, 3, 5
    assert list(table.index) == ["vocals", "bass"]


def test_two_jobs_give_the_same_table(serial_run, musdb_root, helper, tmp_path):
    res1, _, _ = serial_run
    log = tmp_path / "calls.log"
    res2 = evaluate_musdb(helper.OracleFactory(musdb_root, log), musdb_root, is_wav=True,
                          out_dir=tmp_path / "eval", jobs=2, progress=False, quiet=True)
    assert sorted(res2.evaluated) == sorted(TRACKS)
    pd.testing.assert_frame_equal(res2.table, res1.table, rtol=0, atol=1e-9)
    inits, calls = log_lines(log, "init"), log_lines(log, "call")
    # Work happened in worker processes, each building its separator once.
    assert len(calls) == 3 and all(pid != str(os.getpid()) for _, pid in calls)
    assert sorted(pid for _, pid in inits) == sorted(set(pid for _, pid in calls))


def test_rerun_skips_finished_tracks(serial_run, musdb_root, helper, tmp_path):
    res1, out1, _ = serial_run
    shutil.copytree(out1 / "test", tmp_path / "eval" / "test")  # as if interrupted after
    log = tmp_path / "calls.log"
    factory = helper.OracleFactory(musdb_root, log)
    kw = dict(is_wav=True, out_dir=tmp_path / "eval", progress=False, quiet=True)

    again = evaluate_musdb(factory, musdb_root, **kw)
    assert log_lines(log, "call") == []  # nothing separated again
    assert again.evaluated == [] and sorted(again.skipped) == sorted(TRACKS)
    pd.testing.assert_frame_equal(again.table, res1.table)

    # A missing and a truncated (interrupted) JSON are both redone, the same way.
    track_json_path(tmp_path / "eval", "test", TRACKS[0]).unlink()
    partial = track_json_path(tmp_path / "eval", "test", TRACKS[1])
    partial.write_text(partial.read_text()[:100])
    third = evaluate_musdb(factory, musdb_root, **kw)
    assert len(log_lines(log, "call")) == 2
    assert sorted(third.evaluated) == sorted(TRACKS[:2]) and third.skipped == [TRACKS[2]]
    pd.testing.assert_frame_equal(third.table, res1.table)

    # Results lacking a requested target are not reused.
    with pytest.raises(UserError, match="not produced by the separator"):
        evaluate_musdb(factory, musdb_root, targets=["vocals", "bass"], **kw)

    # Only the selected tracks are aggregated.
    one = evaluate_musdb(factory, musdb_root, tracks=[TRACKS[1]], **kw)
    assert one.skipped == [TRACKS[1]] and len(log_lines(log, "call")) == 2
    assert set(one.per_track.index.get_level_values("track")) == {TRACKS[1]}


@pytest.mark.parametrize("kwargs,match", [
    (dict(root="/nonexistent/musdb"), "not found"),
    (dict(is_wav=False), "--is-wav"),
    (dict(tracks=["No Such - Track"]), "unknown track"),
    (dict(targets=["vocals", "piano"]), "no MUSDB18 reference"),
    (dict(targets=["vocals", "accompaniment"]), "not produced by the separator"),
    (dict(jobs=0), "--jobs"),
])
def test_user_errors(musdb_root, helper, tmp_path, kwargs, match):
    args = dict(root=musdb_root, is_wav=True, out_dir=tmp_path / "eval", progress=False,
                quiet=True)
    args.update(kwargs)
    root = args.pop("root")
    with pytest.raises(UserError, match=match) as info:
        evaluate_musdb(helper.OracleFactory(musdb_root, tmp_path / "log"), root, **args)
    assert "\n" not in str(info.value)


def test_cli_flags_drive_the_evaluation(serial_run, musdb_root, helper, tmp_path, capsys):
    import argparse

    from common.mss.evaluation import add_eval_args, run_evaluation

    _, out1, _ = serial_run
    shutil.copytree(out1 / "test", tmp_path / "eval" / "test")
    parser = add_eval_args(argparse.ArgumentParser())
    args = parser.parse_args(["--root", str(musdb_root), "--is-wav", "--out-dir",
                              str(tmp_path / "eval"),
                              "--jobs", "2", "--tracks", *TRACKS[:2], "--no-progress"])
    assert args.subset == "test" and args.chunk_dur == 0.0
    log = tmp_path / "calls.log"
    res = run_evaluation(args, helper.OracleFactory(musdb_root, log))
    assert sorted(res.skipped) == sorted(TRACKS[:2]) and not log.exists()
    printed = capsys.readouterr().out
    assert "vocals" in printed and "SDR" in printed and "2 tracks" in printed


def test_results_folder_records_the_model_and_settings(musdb_root, helper, tmp_path):
    log = tmp_path / "calls.log"
    factory = helper.OracleFactory(musdb_root, log)
    out = tmp_path / "eval"
    kw = dict(is_wav=True, out_dir=out, tracks=[TRACKS[0]], progress=False, quiet=True)
    model_a = {"model": {"file": "10:aaaa"}, "targets": None}
    evaluate_musdb(factory, musdb_root, settings=model_a, **kw)
    record = json.loads((out / "evaluation.json").read_text())
    assert record["model"] == {"file": "10:aaaa"} and record["is_wav"] is True
    assert record["root"] == str(musdb_root.resolve()) and record["chunk_dur"] == 0.0
    again = evaluate_musdb(factory, musdb_root, settings=model_a, **kw)
    assert again.skipped == [TRACKS[0]] and len(log_lines(log, "call")) == 1
    before = {p.name: p.read_bytes() for p in (out / "test").iterdir()}
    for changed, what in (({"model": {"file": "10:bbbb"}}, "model"),
                          ({"chunk_dur": 1.0}, "chunk_dur")):
        settings = dict(model_a, **{k: v for k, v in changed.items() if k == "model"})
        extra = {k: v for k, v in changed.items() if k != "model"}
        with pytest.raises(UserError, match=f"another evaluation.*{what}"):
            evaluate_musdb(factory, musdb_root, settings=settings, **{**kw, **extra})
    assert {p.name: p.read_bytes() for p in (out / "test").iterdir()} == before
    assert len(log_lines(log, "call")) == 1  # nothing was separated for the refused runs


def test_broken_dataset_leaves_no_results_folder(musdb_root, helper, tmp_path):
    root = tmp_path / "musdb"
    shutil.copytree(musdb_root / "test" / TRACKS[0], root / "test" / TRACKS[0])
    (root / "test" / TRACKS[0] / "bass.wav").unlink()
    with pytest.raises(UserError, match="lacks bass.wav"):
        evaluate_musdb(helper.OracleFactory(musdb_root, tmp_path / "log"), root, is_wav=True,
                       out_dir=tmp_path / "eval", progress=False, quiet=True,
                       settings={"model": {"file": "1:a"}})
    assert not (tmp_path / "eval").exists()
