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
from common.mss.evaluation import (FEW_TRACKS, SCORING_THREADS, THREAD_VARIABLES,
                                   aggregate_scores, core_shares, evaluate_musdb, sdr_figure,
                                   summary_rows, track_json_path)

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
            # pid, then what the runtimes inside see: the cores this process may use
            # and the BLAS thread-pool size
            cores = ",".join(map(str, sorted(os.sched_getaffinity(0))))
            with open(self.log, "a") as fh:
                fh.write(f"{what} {os.getpid()} {cores} "
                         f"{os.environ.get('OPENBLAS_NUM_THREADS', '-')}\\n")

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


def test_two_jobs_give_the_same_scores(serial_run, musdb_root, helper, tmp_path, monkeypatch):
    res1, out1, log1 = serial_run
    blas_threads = os.environ.get("OPENBLAS_NUM_THREADS", "-")  # the serial run's
    for name in THREAD_VARIABLES:  # the workers' sizes are then those of their shares
        monkeypatch.delenv(name, raising=False)
    log = tmp_path / "calls.log"
    res2 = evaluate_musdb(helper.OracleFactory(musdb_root, log), musdb_root, is_wav=True,
                          out_dir=tmp_path / "eval", jobs=2, progress=False, quiet=True)
    assert sorted(res2.evaluated) == sorted(TRACKS)
    for name in TRACKS:  # every number of every track, as museval wrote it
        assert (track_json_path(tmp_path / "eval", "test", name).read_bytes()
                == track_json_path(out1, "test", name).read_bytes())
    pd.testing.assert_frame_equal(res2.table, res1.table, rtol=0, atol=0)
    inits, calls = log_lines(log, "init"), log_lines(log, "call")
    # Work happened in worker processes, each building its separator once.
    assert len(calls) == 3 and all(pid != str(os.getpid()) for _, pid, *_ in calls)
    assert sorted(pid for _, pid, *_ in inits) == sorted(set(pid for _, pid, *_ in calls))
    # Each worker runs on its own share of this process's cores, with BLAS thread pools of
    # that size; the serial run kept the cores and the environment of this process.
    cores = sorted(os.sched_getaffinity(0))
    seen = {pid: (tuple(map(int, shown.split(","))), threads) for _, pid, shown, threads in inits}
    assert sorted(seen.values()) == sorted((tuple(share), str(len(share)))
                                           for share in core_shares(cores, 2))
    assert {tuple(line[2:]) for line in log_lines(log1, "")} == {
        (",".join(map(str, cores)), blas_threads)}
    assert all(os.environ.get(name) is None for name in THREAD_VARIABLES)  # restored


@pytest.mark.parametrize("cores,workers,shares", [
    ([0, 1], 2, [[0], [1]]),
    ([0, 1, 2, 3], 2, [[0, 1], [2, 3]]),
    ([4, 5, 6], 2, [[4], [5, 6]]),
    ([1, 0], 3, [[0], [1], [0]]),
    ([3], 2, [[3], [3]]),
    ([0, 1, 2, 3, 4, 5, 6, 7], 3, [[0, 1], [2, 3, 4], [5, 6, 7]]),
])
def test_core_shares(cores, workers, shares):
    assert core_shares(cores, workers) == shares


def test_worker_thread_pools_fit_the_smallest_share(monkeypatch):
    from common.mss.evaluation import _worker_environment

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # smaller than a share: kept
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "8")  # larger: lowered
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    assert _worker_environment([[0, 1], [2, 3, 4]]) == {"OPENBLAS_NUM_THREADS": "2",
                                                         "MKL_NUM_THREADS": "2"}


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


def write_track_scores(folder, name, sdr_frames, other_metrics=(1.0, 2.0, 3.0)):
    """A museval JSON file of a track: ``sdr_frames`` maps target -> its frames' SDRs; SIR,
    ISR and SAR are the SDR plus ``other_metrics``."""
    targets = [{"name": target, "frames": [
        {"time": i, "duration": 1, "metrics": dict(
            SDR=v, **{m: v + d for m, d in zip(("SIR", "ISR", "SAR"), other_metrics)})}
        for i, v in enumerate(frames)]} for target, frames in sdr_frames.items()]
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"targets": targets}))
    return path


def test_summary_rows_are_the_mean_and_median_over_instruments(tmp_path):
    rng = np.random.default_rng(3)
    frames = {name: {t: list(rng.normal(5 + k, 3, 6)) for k, t in enumerate(
        ["vocals", "drums", "bass", "other", "accompaniment"])} for name in "abc"}
    for per_target in frames.values():
        per_target["accompaniment"] = [v + 20 for v in per_target["accompaniment"]]
    paths = [write_track_scores(tmp_path, name, f) for name, f in frames.items()]
    table, _, _ = aggregate_scores(paths)
    rows = summary_rows(table)
    assert list(rows.index) == ["mean", "median"] and list(rows.columns) == list(table.columns)
    # recomputed from the JSON: median over frames, over tracks, then across the instruments
    per_target = {t: np.median([np.median(frames[n][t]) for n in frames])
                  for t in ["vocals", "drums", "bass", "other"]}
    assert rows.loc["mean", "SDR"] == pytest.approx(np.mean(list(per_target.values())))
    assert rows.loc["median", "SDR"] == pytest.approx(np.median(list(per_target.values())))
    assert rows.loc["mean", "SAR"] == pytest.approx(rows.loc["mean", "SDR"] + 3.0)
    # accompaniment (about 20 dB higher) is not in the average, as in the published tables
    assert rows.loc["mean", "SDR"] < table.loc["accompaniment", "SDR"] - 10

    one = aggregate_scores([write_track_scores(tmp_path, "d", {
        "vocals": [1.0, 2.0], "accompaniment": [3.0, 4.0]})])[0]
    assert summary_rows(one).empty  # one instrument: nothing to summarise


def test_tables_and_printout_carry_the_summary_rows(serial_run, musdb_root, helper, tmp_path,
                                                    capsys):
    res, out, _ = serial_run
    expected = res.table.loc[["vocals", "drums"]].agg(["mean", "median"])
    pd.testing.assert_frame_equal(res.summary, expected, check_names=False)
    csv = pd.read_csv(res.files["csv"], index_col=0)
    assert list(csv.index) == ["vocals", "drums", "mean", "median"]
    np.testing.assert_allclose(csv.loc[["mean", "median"]].to_numpy(), expected.to_numpy(),
                               atol=1e-5)
    md = res.files["markdown"].read_text()
    assert f"| *mean* | *{expected.loc['mean', 'SDR']:.3f}* |" in md
    assert f"| *median* | *{expected.loc['median', 'SDR']:.3f}* |" in md
    # the printed table too, from the same per-track JSON files
    shutil.copytree(out / "test", tmp_path / "eval" / "test")
    log = tmp_path / "calls.log"
    evaluate_musdb(helper.OracleFactory(musdb_root, log), musdb_root, is_wav=True,
                   out_dir=tmp_path / "eval", progress=False)
    assert not log.exists()  # every track reused
    printed = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in printed[-5:-1]] == ["vocals", "drums", "mean", "median"]
    assert printed[-3].split()[1:] == [f"{v:.3f}" for v in expected.loc["mean"]]
    assert printed[-1].startswith("mean / median: mean and median over the instrument")


def sdr_points(ax):
    """(x, y) of every plotted point of the SDR figure's axes."""
    return [xy for line in ax.lines for xy in zip(*line.get_data())]


@pytest.mark.parametrize("tracks", [1, 2])
def test_sdr_plot_of_few_tracks_shows_named_points(tmp_path, tracks):
    import matplotlib.pyplot as plt

    names = [f"Artist {k} - A Rather Long Song Title Number {k}" for k in range(tracks)]
    targets = ["vocals", "drums", "bass", "other"]
    paths = [write_track_scores(tmp_path, name, {t: [4.0 + k, 6.0 + k] for t in targets})
             for k, name in enumerate(names)]
    table, per_track, _ = aggregate_scores(paths)
    fig = sdr_figure(per_track, list(table.index), "MUSDB18 test: SDR per track")
    try:
        ax = fig.axes[0]
        assert [t.get_text() for t in ax.get_xticklabels()] == targets
        # one point per track and target, at that track's score, and no (flat) boxes
        assert all(line.get_linestyle() == "None" for line in ax.lines)
        points = sdr_points(ax)
        assert len(points) == tracks * len(targets)
        assert sorted(y for _, y in points) == sorted(
            per_track["SDR"].tolist())
        assert len({round(x, 6) for x, _ in points}) == tracks * len(targets)  # side by side
        assert [t.get_text() for t in ax.get_legend().get_texts()] == names
        low, high = ax.get_ylim()
        assert low < min(y for _, y in points) and high > max(y for _, y in points)
        # everything (the legend with the long names too) is inside the figure
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        inside = fig.bbox.padded(1)
        for artist in (ax.get_legend(), ax.title, ax.yaxis.label, *ax.get_xticklabels()):
            box = artist.get_window_extent(renderer)
            assert inside.contains(box.x0, box.y0) and inside.contains(box.x1, box.y1), artist
    finally:
        plt.close(fig)


def test_sdr_plot_of_many_tracks_has_boxes(tmp_path):
    import matplotlib.pyplot as plt

    paths = [write_track_scores(tmp_path, f"t{k}", {"vocals": [float(k)], "bass": [k + 1.0]})
             for k in range(FEW_TRACKS + 1)]
    table, per_track, _ = aggregate_scores(paths)
    fig = sdr_figure(per_track, list(table.index), "many")
    try:
        ax = fig.axes[0]
        assert ax.get_legend() is None
        # a box per target, drawn with lines, among them each target's median over tracks
        drawn = {round(float(y), 9) for line in ax.lines for y in line.get_ydata()}
        assert {np.median(range(FEW_TRACKS + 1)), np.median(range(1, FEW_TRACKS + 2))} <= drawn
    finally:
        plt.close(fig)


def test_museval_scores_with_one_blas_thread(musdb_root, helper, tmp_path, monkeypatch):
    """museval's last digits depend on the BLAS thread count, so it always scores with
    SCORING_THREADS, whatever --jobs and the machine give (the same JSON everywhere)."""
    import museval
    from threadpoolctl import threadpool_info, threadpool_limits

    seen = []
    real = museval.eval_mus_track

    def recording(*args, **kwargs):
        seen.append({pool["num_threads"] for pool in threadpool_info()
                     if pool["user_api"] == "blas"})
        return real(*args, **kwargs)

    monkeypatch.setattr(museval, "eval_mus_track", recording)
    with threadpool_limits(2, user_api="blas"):  # as on a machine with more cores
        evaluate_musdb(helper.OracleFactory(musdb_root, tmp_path / "log"), musdb_root,
                       is_wav=True, out_dir=tmp_path / "eval", tracks=[TRACKS[0]],
                       progress=False, quiet=True)
        after = {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}
    assert seen == [{SCORING_THREADS}]
    assert after == {min(2, os.cpu_count())}  # restored for the rest of the process
