"""The contract tests that the music-source-separation papers (X-UMX / UMX, D3Net) share, run
through each paper's real ``train.py``, ``separate.py`` and ``eval.py``.

A paper's ``tests/test_scripts.py`` subclasses :class:`ScriptContracts` (the name does not
start with ``Test``, so pytest collects the tests only in the subclasses), sets ``paper`` to
its :class:`PaperScripts` and implements :meth:`ScriptContracts.make_tiny_model` and
:meth:`ScriptContracts.make_separator`; every test below then runs for that paper, in its own
test folder. The logic is written once here; what differs between the papers is data in
:class:`PaperScripts`.

What is checked: training (validation loss falls; an occupied ``--output``; ``--resume`` with
an option that changes results; Ctrl-C mid-run, then ``--resume`` giving bit for bit the
weights of an uninterrupted run; a non-finite loss; unknown config keys; ``--root`` without
``--config`` trains the paper's recipe; the data-parallel wiring in a faked two-process
world), separation (formats, rates, channels, chunking, bad inputs and models, an unwritable,
read-only or full output location, an output that would replace an input, a truncated input)
and evaluation (scores, reuse on rerun, another model refused, unreadable or incomplete
datasets, Ctrl-C with worker processes).
"""
import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from common.config import load_config
from common.data.bundled import MUSDB_SAMPLE_TRACK, bundled_musdb_root
from common.dev.testing import (QUIET_ENV, ReadOnlyDir, SmallDisk, assert_one_line_error,
                                checkpoint_steps, fake_world, files_under, interrupt_script,
                                run_script, snapshot, synthetic_music, write_audio)
from common.mss.separation import separate_files, validate_inputs
from common.runtime.params_io import read_param_file
from common.train.monitor import read_series

__all__ = ["PaperScripts", "ScriptContracts", "run", "series",
           "musdb_copy", "broken_stem_root"]

SR = 44100
VALIDATION_TRACK = "Actions - One Minute Smile"  # one of musdb's 14 validation tracks


@dataclass(frozen=True)
class PaperScripts:
    """What the shared tests need to know about a paper.

    ``folder``: holds ``train.py``, ``separate.py`` and ``eval.py``; ``tiny_train``:
    ``train.py`` flags of a tiny run on the bundled sample with two iterations per epoch and a
    checkpoint after each; ``run_folder``: the run folder inside ``--output`` (``""``: the
    output itself); ``weights_name``: the best weights ``train.py`` writes into ``--output``;
    ``changed_option``: ``(flag, value, fragment)``, a flag that changes results, a value
    other than the tiny run's, and what the refusal must say; ``smoke_config`` /
    ``recipe_config``: the YAML defaults without / with a dataset root; ``train_main`` /
    ``train_parser``: the training module's ``main`` and its parser maker;
    ``model_targets``: what the tiny model separates; ``separate_flags``: extra flags for
    ``separate.py`` / ``eval.py`` (e.g. to make them faster); ``graphs_per_model``: network
    graphs a separator builds for one chunk size; ``direct_call_rtol``: how close a file
    written by ``separate_files`` is to a direct call on the same audio."""
    folder: Path
    tiny_train: tuple
    run_folder: str
    weights_name: str
    changed_option: tuple
    smoke_config: Path
    recipe_config: Path
    train_main: object
    train_parser: object
    model_targets: tuple
    separate_flags: tuple = ()
    graphs_per_model: int = 1
    direct_call_rtol: float = 0.0


def run(paper, script, *args, check=True, **kw):
    """Run one of the paper's entry scripts (no progress bars); see
    :func:`common.dev.testing.run_script`."""
    return run_script(paper.folder / script, *args, check=check, env=QUIET_ENV, **kw)


def series(run_dir, name):
    """A training curve of ``run_dir`` as ``(steps, values)`` lists."""
    steps, values = read_series(run_dir, name)
    return steps.tolist(), values.tolist()


def musdb_copy(dest, tracks, subset="train"):
    """A WAV-layout MUSDB18 root at ``dest`` whose ``subset`` holds copies of the bundled
    track under the names ``tracks``; returns ``dest``."""
    source = bundled_musdb_root(is_wav=True) / "test" / MUSDB_SAMPLE_TRACK
    for name in tracks:
        shutil.copytree(source, Path(dest) / subset / name)
    (Path(dest) / ("test" if subset == "train" else "train")).mkdir(parents=True,
                                                                      exist_ok=True)
    return Path(dest)


def broken_stem_root(root, content):
    """A MUSDB18 root (stems layout) whose test subset holds one ``.stem.mp4`` that is not a
    stem file: ``"text"`` (not audio at all) or ``"one stream"`` (an ordinary one-stream
    mp4); returns the file's path."""
    (Path(root) / "test").mkdir(parents=True)
    (Path(root) / "train").mkdir()
    stem = Path(root) / "test" / "Some - Song.stem.mp4"
    if content == "text":
        stem.write_text("this is not an mp4 file\n")
    else:
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=d=0.5", "-c:a",
                        "aac", "-f", "mp4", str(stem)], check=True)
    return stem


def children(pid):
    """Process ids of the children of ``pid`` (Linux)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def workers_busy_for(count, seconds):
    """A ``ready(pid)`` for :func:`common.dev.testing.interrupt_script`: true once ``pid``
    has had ``count`` child processes for ``seconds`` (they are then importing or
    working)."""
    since = []

    def ready(pid):
        if len(children(pid)) < count:
            since.clear()
            return False
        since[:] = since or [time.monotonic()]
        return time.monotonic() - since[0] >= seconds
    return ready


@dataclass(frozen=True)
class Trained:
    full: Path          # uninterrupted run
    split: Path         # interrupted run, then resumed
    interrupted: object  # CompletedProcess of the interrupted run
    saved: list         # its checkpoint steps right after the interruption
    resumed: object     # CompletedProcess of the --resume run


class ScriptContracts:
    """The shared tests (see the module docstring). Subclasses set ``paper`` and implement
    :meth:`make_tiny_model` and :meth:`make_separator`; they may override
    :meth:`prepare_fake_world`."""

    paper: PaperScripts

    # ------------------------------------------------------------------ paper hooks
    def make_tiny_model(self, folder, seed):
        """Write a small model with random weights (``seed``) into ``folder``, in the form
        ``train.py`` writes; return what ``--model`` takes."""
        raise NotImplementedError

    def make_separator(self, model):
        """The paper's separator (in this process) for the tiny model ``model``."""
        raise NotImplementedError

    def prepare_fake_world(self, monkeypatch, calls):
        """Stand-ins for what a faked communicator cannot do in this paper (they append what
        they see to ``calls``)."""

    def check_fake_world(self, calls, comms):
        """Paper-specific checks of :meth:`prepare_fake_world`'s ``calls`` after both ranks
        trained with the communicators ``comms``."""

    # ------------------------------------------------------------------ fixtures
    @pytest.fixture(scope="class")
    def tiny_model(self, tmp_path_factory):
        return self.make_tiny_model(tmp_path_factory.mktemp("model"), seed=0)

    @pytest.fixture(scope="class")
    def other_model(self, tmp_path_factory):
        return self.make_tiny_model(tmp_path_factory.mktemp("other-model"), seed=1)

    @pytest.fixture(scope="class")
    def trained(self, tmp_path_factory):
        """A 3-epoch run, and the same run interrupted by SIGINT after its first checkpoint
        and continued with --resume: ``Trained(full, split, interrupted, saved, resumed)``
        (``saved``: the checkpoint steps the interrupted run left)."""
        root = tmp_path_factory.mktemp("train")
        full, split = root / "full", root / "split"
        args = ["--epochs", 3, *self.paper.tiny_train]
        run(self.paper, "train.py", "--output", full, *args)
        checkpoints = self.run_dir(split) / "checkpoints"
        interrupted = interrupt_script(self.paper.folder / "train.py", "--output", split, *args,
                                       ready=lambda _: any(checkpoints.glob("ckpt_*.npz")),
                                       env=QUIET_ENV)
        saved = checkpoint_steps(self.run_dir(split))
        resumed = run(self.paper, "train.py", "--output", split, "--resume", *args)
        return Trained(full, split, interrupted, saved, resumed)

    @pytest.fixture(scope="class")
    def evaluated(self, tiny_model, tmp_path_factory):
        """eval.py on the bundled sample: ``(out_dir, first run, rerun)``."""
        out = tmp_path_factory.mktemp("eval") / "scores"
        args = ["--model", tiny_model, "--root", bundled_musdb_root(), "--out-dir", out,
                *self.paper.separate_flags]
        return out, run(self.paper, "eval.py", *args), run(self.paper, "eval.py", *args)

    def run_dir(self, output):
        return Path(output) / self.paper.run_folder

    # ------------------------------------------------------------------ training
    def test_validation_loss_falls(self, trained):
        epochs, valid = series(self.run_dir(trained.full), "validation loss")
        assert epochs == [0, 1, 2]
        assert all(np.isfinite(valid)) and valid[-1] < valid[0]

    def test_sigint_checkpoints_and_resume_is_bit_exact(self, trained):
        interrupted = trained.interrupted
        assert interrupted.returncode == 130, interrupted.stderr[-3000:]
        assert "Traceback" not in interrupted.stderr
        last = interrupted.stderr.strip().splitlines()[-1]
        assert last.startswith("interrupted at iteration ") and "--resume" in last, last
        stopped = int(last.split()[3].rstrip(";"))
        assert 1 <= stopped < 6  # inside the run: there is something left to resume
        assert trained.saved[-1] == stopped  # the finished iteration was saved
        assert f"iteration {stopped}" in trained.resumed.stdout
        a, _ = read_param_file(trained.full / self.paper.weights_name)
        b, _ = read_param_file(trained.split / self.paper.weights_name)
        assert a.keys() == b.keys()
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        for name in ("validation loss", "training loss per iteration"):
            assert (series(self.run_dir(trained.full), name)
                    == series(self.run_dir(trained.split), name))

    def test_occupied_output_is_refused(self, trained):
        full = trained.full
        before = snapshot(full)
        proc = run(self.paper, "train.py", "--output", full, *self.paper.tiny_train,
                   check=False)
        assert_one_line_error(proc, "already holds a run", "--resume", "new --output")
        assert snapshot(full) == before

    def test_resume_with_a_changed_option_is_refused(self, trained):
        full = trained.full
        flag, value, fragment = self.paper.changed_option
        before = snapshot(full)
        proc = run(self.paper, "train.py", "--output", full, "--epochs", 3, "--resume",
                   *self.paper.tiny_train, flag, value, check=False)
        assert_one_line_error(proc, "cannot --resume with different options", fragment)
        assert snapshot(full) == before  # config.yaml (and everything else) unchanged

    def test_non_finite_loss_stops_in_one_line(self, tmp_path):
        root = musdb_copy(tmp_path / "musdb", [VALIDATION_TRACK, "Broken - Vocals"])
        vocals = root / "train" / "Broken - Vocals" / "vocals.wav"
        audio, rate = sf.read(str(vocals), dtype="float32")
        sf.write(str(vocals), np.full_like(audio, np.nan), rate, subtype="FLOAT")
        out = tmp_path / "run"
        proc = run(self.paper, "train.py", "--output", out, "--config", self.paper.smoke_config,
                   *self.paper.tiny_train, "--root", root, "--is-wav", check=False)
        assert_one_line_error(proc, "diverged at iteration 1", "nan")
        assert checkpoint_steps(self.run_dir(out)) == []

    def test_unknown_config_key_is_one_line_and_writes_nothing(self, tmp_path):
        bad = tmp_path / "bad.yaml"
        bad.write_text("hiden_size: 8\n")
        proc = run(self.paper, "train.py", "--output", tmp_path / "run", "--config", bad,
                   check=False)
        assert_one_line_error(proc, "unknown key 'hiden_size'")
        assert not (tmp_path / "run").exists()

    def test_root_without_config_trains_the_recipe(self, tmp_path):
        recipe, smoke = load_config(self.paper.recipe_config), load_config(
            self.paper.smoke_config)
        given = vars(self.paper.train_parser().parse_args(["--output", str(tmp_path),
                                                           "--root", str(tmp_path)]))
        assert {k: given[k] for k in recipe if k != "root"} == {
            k: v for k, v in recipe.items() if k != "root"}
        assert given["root"] == str(tmp_path)
        default = vars(self.paper.train_parser().parse_args(["--output", str(tmp_path)]))
        assert {k: default[k] for k in smoke} == smoke

    def test_data_parallel_wiring(self, tmp_path, monkeypatch):
        """Two ranks of a faked MPI world through the real training main(): each trains on
        its own share of the excerpts, gradients are all-reduced (averaged) at every step,
        and only rank 0 writes."""
        import nnabla as nn

        from common.data.loader import BatchLoader

        monkeypatch.setenv("NNABLA_RESEARCH_NO_PROGRESS", "1")
        loaders, seen = [], []
        original = BatchLoader.__init__

        def recording_init(loader, *args, **kwargs):
            original(loader, *args, **kwargs)
            loaders.append(loader)
        monkeypatch.setattr(BatchLoader, "__init__", recording_init)
        self.prepare_fake_world(monkeypatch, seen)
        worlds = []
        for rank in (0, 1):
            comm = fake_world(monkeypatch, size=2, rank=rank)
            nn.clear_parameters()
            self.paper.train_main(["--output", str(tmp_path / f"rank{rank}"), "--epochs", "1",
                                   *map(str, self.paper.tiny_train),
                                   "--samples-per-track", "8"])
            worlds.append((comm, len(nn.get_parameters())))
        nn.clear_parameters()
        assert [(ld.rank, ld.world_size) for ld in loaders] == [(0, 2), (1, 2)]
        shares = [set(ld.indices(0).tolist()) for ld in loaders]
        assert shares[0] and shares[1] and not shares[0] & shares[1]
        for (comm, n_params), loader in zip(worlds, loaders):
            grads = [c for c in comm.calls if c[0] == "all_reduce" and c[1] == n_params]
            assert len(grads) == len(loader) >= 1  # one averaging all-reduce per step
            assert all(division for _, _, division in grads)
        self.check_fake_world(seen, [comm for comm, _ in worlds])
        assert files_under(tmp_path / "rank1") == []
        written = files_under(tmp_path / "rank0")
        assert self.paper.weights_name in written
        assert str(Path(self.paper.run_folder) / "config.yaml") in written

    # ------------------------------------------------------------------ separation
    @pytest.mark.parametrize("sr,channels", [(22050, 1), (44100, 2), (48000, 3)])
    def test_separate_keeps_length_rate_and_targets(self, tiny_model, tmp_path, sr, channels):
        song = write_audio(tmp_path / "song.flac", synthetic_music(1.3, sr, channels), sr)
        proc = run(self.paper, "separate.py", song, "--model", tiny_model, "--out-dir",
                   tmp_path / "out", *self.paper.separate_flags)
        if channels > 2:
            assert "first two" in proc.stderr
        written = sorted(p.name for p in (tmp_path / "out" / "song").iterdir())
        assert written == sorted(f"{t}.wav" for t in self.paper.model_targets)
        for name in written:
            audio, rate = sf.read(str(tmp_path / "out" / "song" / name), always_2d=True)
            # the input's channel count is kept; more than two channels give stereo
            assert rate == sr and audio.shape == (int(1.3 * sr), min(channels, 2))
            assert np.all(np.isfinite(audio)) and np.abs(audio).max() > 0

    def test_separate_mp3_input_with_official_flags(self, tiny_model, tmp_path):
        """-i / -o / -m, and one target plus the residual."""
        mp3 = write_audio(tmp_path / "clip.mp3", synthetic_music(1.0, SR, 2), SR)
        target = self.paper.model_targets[0]
        run(self.paper, "separate.py", "-i", mp3, "-m", tiny_model, "-o", tmp_path / "out",
            *self.paper.separate_flags, "--targets", target, "--residual")
        folder = tmp_path / "out" / "clip"
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            [f"{target}.wav", "accompaniment.wav"])
        assert sf.info(str(folder / f"{target}.wav")).frames == sf.info(str(mp3)).frames

    @pytest.mark.parametrize("content", ["missing", "empty", "text", "nan"])
    def test_separate_bad_input_is_one_line_and_writes_nothing(self, tiny_model, tmp_path,
                                                              content):
        path = tmp_path / "bad.wav"
        if content == "empty":
            path.write_bytes(b"")
        elif content == "text":
            path.write_text("this is not audio\n")
        elif content == "nan":
            write_audio(path, np.full((SR, 2), np.nan, dtype=np.float32), SR)
        good = write_audio(tmp_path / "good.wav", synthetic_music(1.0, SR, 2), SR)
        out = tmp_path / "out"
        proc = run(self.paper, "separate.py", good, path, "--model", tiny_model, "--out-dir",
                   out, check=False)
        assert_one_line_error(proc, "bad.wav")
        assert not out.exists()

    def test_separate_bad_model_is_one_line(self, tmp_path):
        song = write_audio(tmp_path / "s.wav", synthetic_music(1.0, SR, 2), SR)
        junk = tmp_path / f"{self.paper.model_targets[0]}.h5"
        junk.write_bytes(b"not hdf5")
        proc = run(self.paper, "separate.py", song, "--model", junk, "--out-dir",
                   tmp_path / "o", check=False)
        assert_one_line_error(proc)
        assert not (tmp_path / "o").exists()

    def test_separate_checks_the_output_location_before_the_weights(self, tmp_path):
        """A read-only --out-dir and one under a file are one line naming --out-dir; the
        (unreadable) weights are never opened, so that error cannot come first."""
        song = write_audio(tmp_path / "s.wav", synthetic_music(1.0, SR, 2), SR)
        junk = tmp_path / "junk.h5"
        junk.write_bytes(b"not hdf5")
        (tmp_path / "file").write_text("x")
        with ReadOnlyDir(tmp_path / "ro") as ro:
            proc = run(self.paper, "separate.py", song, "--model", junk, "--out-dir",
                       Path(ro.path) / "out", check=False)
            assert_one_line_error(proc, "--out-dir", "cannot write")
        proc = run(self.paper, "separate.py", song, "--model", junk, "--out-dir",
                   tmp_path / "file" / "out", check=False)
        assert_one_line_error(proc, "--out-dir", "lies under the file")

    def test_separate_on_a_full_disk_is_one_line_and_leaves_no_partial_file(self, tiny_model,
                                                                           tmp_path):
        song = write_audio(tmp_path / "song.wav", synthetic_music(1.0, SR, 2), SR)
        # Room for less than one estimate (1 s of float32 stereo is 353 kB).
        with SmallDisk(tmp_path / "disk", 256 * 1024) as disk:
            proc = run(self.paper, "separate.py", song, "--model", tiny_model, "--out-dir",
                       Path(disk.path) / "out", *self.paper.separate_flags, check=False,
                       preexec_fn=disk.preexec_fn())
            line = assert_one_line_error(proc, "cannot write")
            assert str(Path(disk.path) / "out" / "song") in line
            assert files_under(disk.path) == []

    def test_separate_refuses_to_overwrite_an_input(self, tiny_model, tmp_path):
        target = self.paper.model_targets[0]
        (tmp_path / target).mkdir()
        song = write_audio(tmp_path / target / f"{target}.wav", synthetic_music(1.0, SR, 2), SR)
        before = song.read_bytes()
        proc = run(self.paper, "separate.py", song, "--model", tiny_model, "--out-dir",
                   tmp_path, check=False)
        assert_one_line_error(proc, "would overwrite the input")
        assert song.read_bytes() == before and files_under(tmp_path) == [
            f"{target}/{target}.wav"]

    def test_separate_truncated_input_warns_with_both_lengths(self, tiny_model, tmp_path):
        song = write_audio(tmp_path / "cut.wav", synthetic_music(1.0, SR, 2), SR)
        data = song.read_bytes()
        song.write_bytes(data[:len(data) // 2])  # a copy cut short: the header stays whole
        decoded = sf.info(str(song)).frames
        proc = run(self.paper, "separate.py", song, "--model", tiny_model, "--out-dir",
                   tmp_path / "out", *self.paper.separate_flags)
        warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning: ")]
        assert len(warnings) == 1 and "truncated" in warnings[0], proc.stderr
        assert f"declares {SR} samples" in warnings[0] and f"only {decoded} " in warnings[0]
        target = self.paper.model_targets[0]
        assert sf.info(str(tmp_path / "out" / "cut" / f"{target}.wav")).frames == decoded

    def test_chunked_separation_builds_its_graphs_once(self, tiny_model, tmp_path):
        """Many chunks and several files go through one network graph per model."""
        files = [write_audio(tmp_path / f"f{i}.wav", synthetic_music(d, SR, 2, seed=i), SR)
                 for i, d in enumerate((2.3, 1.2))]
        sep = self.make_separator(tiny_model)
        separate_files(validate_inputs([str(f) for f in files]), sep,
                       out_dir=tmp_path / "out", chunk_dur=1.0, chunk_overlap=0.25,
                       progress=False, log=None)
        assert sep.graph_builds == self.paper.graphs_per_model
        for f in files:
            n = sf.info(str(f)).frames
            for target in self.paper.model_targets:
                assert sf.info(str(tmp_path / "out" / f.stem / f"{target}.wav")).frames == n

    def test_chunking_off_equals_direct_call(self, tiny_model, tmp_path):
        audio = synthetic_music(2.0, SR, 2)
        song = write_audio(tmp_path / "s.wav", audio, SR)
        sep = self.make_separator(tiny_model)
        direct = sep(audio)
        separate_files(validate_inputs([str(song)]), sep, out_dir=tmp_path / "out",
                       chunk_dur=0, progress=False, log=None)
        for name, est in direct.items():
            written, _ = sf.read(str(tmp_path / "out" / "s" / f"{name}.wav"), dtype="float32")
            np.testing.assert_allclose(written, est, rtol=self.paper.direct_call_rtol,
                                       atol=1e-12 if self.paper.direct_call_rtol else 0)

    # ------------------------------------------------------------------ evaluation
    def test_eval_scores_the_bundled_track_and_reuses_them(self, evaluated):
        out, first, again = evaluated
        scores = list((out / "test").glob("*.json"))
        assert len(scores) == 1
        data = json.loads(scores[0].read_text())
        assert {t["name"] for t in data["targets"]} == set(self.paper.model_targets)
        assert "SDR" in first.stdout and (out / "sdr_test.png").exists()
        assert (out / "scores_test.md").exists()
        assert "skipping 1 track" in again.stderr and "SDR" in again.stdout
        assert json.loads(scores[0].read_text()) == data

    def test_eval_rerun_with_another_model_is_refused(self, evaluated, other_model):
        out = evaluated[0]
        before = snapshot(out)
        proc = run(self.paper, "eval.py", "--model", other_model, "--root", bundled_musdb_root(),
                   "--out-dir", out, *self.paper.separate_flags, check=False)
        assert_one_line_error(proc, "holds scores of another evaluation", "model")
        assert snapshot(out) == before

    def test_eval_checks_the_output_location_before_the_weights(self, tmp_path):
        junk = tmp_path / "junk.h5"
        junk.write_bytes(b"not hdf5")
        with ReadOnlyDir(tmp_path / "ro") as ro:
            proc = run(self.paper, "eval.py", "--model", junk, "--root", bundled_musdb_root(),
                       "--out-dir", Path(ro.path) / "scores", check=False)
            assert_one_line_error(proc, "--out-dir", "cannot write")

    @pytest.mark.parametrize("damage", ["text", "one stream", "missing stem", "truncated wav"])
    def test_eval_on_a_broken_dataset_is_one_line_naming_the_file(self, tiny_model, tmp_path,
                                                                 damage):
        root = tmp_path / "musdb"
        wav = damage in ("missing stem", "truncated wav")
        if wav:
            musdb_copy(root, ["Some - Song"], subset="test")
            folder = root / "test" / "Some - Song"
            if damage == "missing stem":
                (folder / "bass.wav").unlink()
                culprit = "bass.wav"
            else:
                data = (folder / "mixture.wav").read_bytes()
                (folder / "mixture.wav").write_bytes(data[:len(data) // 2])
                culprit = "mixture.wav"
        else:
            culprit = broken_stem_root(root, damage).name
        out = tmp_path / "scores"
        proc = run(self.paper, "eval.py", "--model", tiny_model, "--root", root, "--out-dir",
                   out, *(["--is-wav"] if wav else []), *self.paper.separate_flags,
                   check=False)
        assert_one_line_error(proc, culprit)
        assert not out.exists()  # no empty or partial result files

    def test_eval_ctrl_c_with_workers_is_one_line(self, tiny_model, tmp_path):
        """Ctrl-C reaches the whole process group: the workers ignore it and the main
        process stops them, says so in one line and exits with 130 (no other line after
        it, e.g. no leaked-semaphore warning of the resource tracker)."""
        root = musdb_copy(tmp_path / "musdb", ["Song - One", "Song - Two"], subset="test")
        proc = interrupt_script(
            self.paper.folder / "eval.py", "--model", tiny_model, "--root", root, "--is-wav",
            "--jobs", 2, "--out-dir", tmp_path / "scores", *self.paper.separate_flags,
            ready=workers_busy_for(2, seconds=2.0), group=True, env=QUIET_ENV)
        assert proc.returncode == 130, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr and "KeyboardInterrupt" not in proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("interrupted; ") and "same command again" in last
