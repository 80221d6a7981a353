"""The data-cleansing tool for a user's class-folder image set (`cleanse.py`), run as a user
runs it.

A tiny synthetic set: three classes of 20x20 images (red blobs, green stripes, blue
checkerboard; one class is named ``x<y`` to test escaping), 30 per class, PNG and JPEG.
Three images of every class are overwritten with the next class's pattern, i.e. they are
mislabelled: a model that never saw them predicts the next class.
"""
import base64
import csv
import io
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.dev.browser import media_load_check
from common.dev.testing import (ReadOnlyDir, SmallDisk, assert_one_line_error, files_under,
                                interrupt_script, run_script)
from datacleansing import ranking
from datacleansing.cleanse import main, render_html, split_top

SCRIPT = Path(__file__).resolve().parents[1] / "cleanse.py"
CLASSES = ("blobs", "stripes", "x<y")
PER_CLASS, WRONG_PER_CLASS = 30, 3
N_IMAGES = PER_CLASS * len(CLASSES)
FAST = ["--image-size", "16", "--batch-size", "16", "--epochs", "5", "--top", "4"]
QUIET = {"NNABLA_RESEARCH_NO_PROGRESS": "1"}


def read_csv(path):
    """The rows of a ``cleanse.csv`` as dicts (``rank`` int, ``score`` float)."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{**row, "rank": int(row["rank"]), "score": float(row["score"])}
                for row in csv.DictReader(f)]


def pattern(cls, rng, size=20):
    yy, xx = np.mgrid[:size, :size]
    colour = np.array([(200, 60, 50), (60, 180, 70), (50, 80, 210)][cls], float)
    colour = colour + rng.integers(-20, 21, 3)
    if cls == 0:
        cy, cx = rng.integers(5, size - 5, 2)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < rng.integers(9, 25)
    elif cls == 1:
        mask = ((yy + rng.integers(0, 6)) // 3) % 2 == 0
    else:
        p = rng.integers(0, 4)
        mask = (((yy + p) // 4) + ((xx + p) // 4)) % 2 == 0
    img = np.where(mask[..., None], colour * 0.4 + 150, colour * 0.6)
    img = img + rng.normal(0, 12, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def make_set(root, per_class=PER_CLASS, classes=CLASSES, seed=0):
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pattern(c % 3, rng).save(root / name / f"img{i:02d}.{'jpg' if i % 3 == 2 else 'png'}")
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """(root, {absolute path of a mislabelled image: the class its pattern belongs to})."""
    root = make_set(tmp_path_factory.mktemp("cleanse") / "data")
    rng = np.random.default_rng(1)
    wrong = {}
    for c, name in enumerate(CLASSES):
        for p in rng.choice(sorted((root / name).iterdir()), WRONG_PER_CLASS, replace=False):
            pattern((c + 1) % 3, rng).save(p)
            wrong[os.path.abspath(p)] = CLASSES[(c + 1) % 3]
    return root, wrong


def cleanse(root, out, *args, check=True):
    return run_script(SCRIPT, "--data", root, "--output", out, *FAST, *args, env=QUIET,
                      check=check)


@pytest.fixture(scope="module")
def cli_run(dataset, tmp_path_factory):
    """The tool with its defaults (confident learning, 5 folds x 3 repeats) as a user runs it."""
    root, _ = dataset
    out = tmp_path_factory.mktemp("cleanse-out") / "out"
    return out, cleanse(root, out)


def test_every_image_is_ranked_once_with_given_and_predicted_label(dataset, cli_run):
    root, wrong = dataset
    out, proc = cli_run
    rows = read_csv(out / "cleanse.csv")
    everything = sorted(os.path.abspath(p) for c in CLASSES for p in (root / c).iterdir())
    assert sorted(r["path"] for r in rows) == everything and len(rows) == N_IMAGES
    assert [r["rank"] for r in rows] == list(range(1, N_IMAGES + 1))
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores) and all(0 <= s <= 1 for s in scores)
    assert all(r["given_label"] == Path(r["path"]).parent.name for r in rows)
    assert {r["predicted_label"] for r in rows} == set(CLASSES)
    assert all(re.fullmatch(r"[0-3]/3", r["flagged_by"]) for r in rows)
    assert "wrote" in proc.stdout and "out-of-fold accuracy" in proc.stdout
    assert "repeat 3/3, fold 5/5" in proc.stdout
    assert not list(out.glob(".*.tmp.*"))


def test_planted_errors_are_the_most_harmful_and_predicted_as_their_pattern(dataset, cli_run):
    """By chance about 0.9 of the 9 mislabelled images would be among the 9 most harmful."""
    _, wrong = dataset
    rows = read_csv(cli_run[0] / "cleanse.csv")
    top = rows[:len(wrong)]
    assert {r["path"] for r in top} == set(wrong)
    assert all(r["predicted_label"] == wrong[r["path"]] != r["given_label"] for r in top)
    assert all(r["flagged_by"] in ("2/3", "3/3") for r in top)


def test_flagged_images_do_not_depend_on_the_seed(dataset, cli_run, tmp_path):
    """The stability property: the user acts on the flagged images (the most harmful 10 %),
    so another --seed (other folds, initializations, orders, in all three repeats) must flag
    the same images. The report's agreement of the repeats within a run is checked too."""
    root, _ = dataset
    cleanse(root, tmp_path / "other", "--seed", "11")
    first = read_csv(cli_run[0] / "cleanse.csv")
    other = read_csv(tmp_path / "other" / "cleanse.csv")
    k = ranking.flagged_count(N_IMAGES)
    overlap = len({r["path"] for r in first[:k]} & {r["path"] for r in other[:k]}) / k
    assert overlap == 1
    page = (cli_run[0] / "report.html").read_text(encoding="utf-8")
    assert "repeat agreement" in page


def test_html_report_is_self_contained_escaped_and_shows_both_labels(dataset, cli_run):
    _, wrong = dataset
    out, _ = cli_run
    page = (out / "report.html").read_text(encoding="utf-8")
    thumbs = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(thumbs) == 2 * 4                     # --top 4 harmful + 4 helpful
    with Image.open(io.BytesIO(base64.b64decode(thumbs[0]))) as im:
        assert im.format == "PNG" and max(im.size) == 96
    assert "x&lt;y" in page and "x<y" not in page
    assert 'src="http' not in page and "<script" not in page
    for text in ("Most harmful", "Most helpful", "out-of-fold accuracy", f"{N_IMAGES} in 3",
                 "all scored", "5 folds x 3 repeats"):
        assert text in page
    rows = read_csv(out / "cleanse.csv")
    cards = page.split('<div class="card">')[1:]
    for card, row in zip(cards, rows[:4] + rows[::-1][:4]):
        assert f"<b>#{row['rank']}</b>" in card
        given = re.search(r"given <b>(.*?)</b>", card).group(1)
        predicted = re.search(r"predicted <b>(.*?)</b>", card).group(1)
        assert (given, predicted) == tuple(
            label.replace("<", "&lt;") for label in (row["given_label"], row["predicted_label"]))
    assert media_load_check(out / "report.html")["images"] == [True] * 8


@pytest.mark.parametrize("method", ["final", "influence-functions"])
def test_influence_methods_score_every_image_by_models_that_trained_on_it(dataset, tmp_path,
                                                                          method):
    """The paper's SGD-influence (final) and influence functions: every image is scored by the
    models of the folds it trained in, on the held-out fold's loss (per-fold percentile
    ranks averaged); on this easy set the mislabelled images rank harmful (by chance about 0.9
    of 9 would be in the top 9)."""
    root, wrong = dataset
    proc = cleanse(root, tmp_path / "out", "--method", method, "--folds", "3",
                   "--repeats", "2")
    rows = read_csv(tmp_path / "out" / "cleanse.csv")
    assert len(rows) == N_IMAGES and "repeat 2/2, fold 3/3" in proc.stdout
    assert all(0 <= r["score"] <= 1 for r in rows)
    assert len({r["score"] for r in rows}) > N_IMAGES // 2       # not one constant
    found = len({r["path"] for r in rows[:len(wrong)]} & set(wrong))
    print(f"{method}: mislabelled among the {len(wrong)} most harmful of {len(rows)}: {found}")
    assert found >= 5


def test_resume_reuses_a_finished_run(dataset, cli_run):
    root, _ = dataset
    out, _ = cli_run
    before = (out / "cleanse.csv").read_bytes()
    proc = cleanse(root, out, "--resume")
    assert "15 of 15 folds already scored" in proc.stdout
    assert "resuming at iteration" not in proc.stdout
    assert (out / "cleanse.csv").read_bytes() == before
    config = (out / "config.yaml").read_text()
    proc = run_script(SCRIPT, "--data", root, "--output", out, *FAST[:-2], "--top", "2",
                      "--epochs", "6", "--resume", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: cannot --resume")
    assert "--epochs (5 -> 6)" in proc.stderr and "--top" not in proc.stderr
    assert (out / "config.yaml").read_text() == config


def _fails(args, *, match):
    proc = run_script(SCRIPT, *args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and match in lines[0], lines
    return lines[0]


def test_bad_input_is_one_error_line(tmp_path):
    out = tmp_path / "out"
    _fails(["--data", tmp_path / "missing", "--output", out], match="does not exist")
    one = make_set(tmp_path / "one", per_class=4, classes=("only",))
    _fails(["--data", one, "--output", out], match="at least two class")
    few = make_set(tmp_path / "few", per_class=4, classes=("a", "b"))
    for p in sorted((few / "b").iterdir())[:3]:
        p.unlink()
    _fails(["--data", few, "--output", out], match="at least 2 images")
    _fails(["--data", few, "--output", out, "--folds", "2"], match="at least 2 images")
    small = make_set(tmp_path / "small", per_class=2, classes=("a", "b"))
    _fails(["--data", small, "--output", out, "--folds", "5"], match="--folds 4 or fewer")
    broken = make_set(tmp_path / "broken", per_class=4, classes=("a", "b"))
    (broken / "a" / "bad.png").write_bytes(b"not an image")
    _fails(["--data", broken, "--output", out], match="bad.png")
    _fails(["--data", broken, "--output", broken / "out"], match="inside --root")
    _fails(["--data", broken, "--top", "0"], match="--top")
    _fails(["--data", broken, "--folds", "1"], match="--folds")
    _fails(["--data", broken, "--repeats", "0"], match="--repeats")
    _fails(["--data", broken, "--model", "resnet"], match="invalid choice")
    _fails(["--data", broken, "--method", "loo"], match="invalid choice")
    assert not out.exists()


def test_quiet_prints_only_the_result(tmp_path):
    """--quiet: nothing on stderr (no progress bar) and on stdout only the three result lines
    (no line per fold, no resuming line), on a new run and on a --resume; without it both
    are there. Progress bars are left on by the environment, so --quiet alone hides them."""
    data = make_set(tmp_path / "data", per_class=6, classes=("a", "b"))
    tiny = ["--data", data, "--image-size", "8", "--epochs", "1", "--folds", "2",
            "--repeats", "2"]
    bars_on = {"NNABLA_RESEARCH_NO_PROGRESS": ""}
    loud = run_script(SCRIPT, *tiny, "--output", tmp_path / "loud", env=bars_on)
    assert "repeat 2/2, fold 2/2:" in loud.stdout and "training" in loud.stderr
    for again in ([], ["--resume"]):
        proc = run_script(SCRIPT, *tiny, "--output", tmp_path / "quiet", "--quiet", *again,
                          env=bars_on)
        assert proc.stderr == "", again
        lines = proc.stdout.splitlines()
        assert len(lines) == 3, (again, lines)
        assert lines[0].startswith("out-of-fold accuracy ") and \
            lines[1].startswith("most harmful: ") and lines[2].startswith("wrote "), lines
    resumed = run_script(SCRIPT, *tiny, "--output", tmp_path / "quiet", "--resume",
                         env=bars_on)
    assert "resuming: 4 of 4 folds already scored" in resumed.stdout


def test_failed_rerun_keeps_the_previous_outputs(tmp_path):
    data = make_set(tmp_path / "data", per_class=4, classes=("a", "b"))
    out = tmp_path / "out"
    args = ["--data", str(data), "--output", str(out), "--model", "logreg",
            "--image-size", "8", "--epochs", "2", "--top", "3", "--folds", "2", "--repeats", "1"]
    main(args)
    before = {p.name: p.read_bytes() for p in (out / "cleanse.csv", out / "report.html")}
    assert len(read_csv(out / "cleanse.csv")) == 8
    (data / "b" / "zz.jpg").write_bytes(b"\xff\xd8 truncated")
    config = (out / "config.yaml").read_bytes()
    _fails(args + ["--resume"], match="zz.jpg")
    assert {p: (out / p).read_bytes() for p in before} == before
    assert (out / "config.yaml").read_bytes() == config
    assert not [p for p in files_under(out) if ".tmp." in p]
    # a readable new image: the run's images changed, so it is not continued either
    pattern(1, np.random.default_rng(5)).save(data / "b" / "zz.jpg")
    _fails(args + ["--resume"], match="images in")
    assert (out / "config.yaml").read_bytes() == config


def test_occupied_output_is_refused_without_resume(dataset, cli_run):
    root, _ = dataset
    out, _ = cli_run
    before = {p: (out / p).read_bytes() for p in files_under(out)}
    _fails(["--data", root, "--output", out, *FAST], match="already holds a run")
    assert {p: (out / p).read_bytes() for p in files_under(out)} == before


def test_output_is_never_the_image_folder_or_unwritable(tmp_path):
    data = make_set(tmp_path / "data", per_class=4, classes=("a", "b"))
    _fails(["--data", data, "--output", data], match="inside --root")
    _fails(["--data", data, "--output", tmp_path], match="--root")   # DIR inside OUT
    (tmp_path / "file").write_text("x")
    _fails(["--data", data, "--output", tmp_path / "file" / "out"], match="lies under the file")
    with ReadOnlyDir(tmp_path / "ro") as ro:
        _fails(["--data", data, "--output", Path(ro.path) / "out"], match="cannot write")
    assert files_under(data) == [f"{c}/img{i:02d}.{'jpg' if i % 3 == 2 else 'png'}"
                                 for c in ("a", "b") for i in range(4)]


@pytest.mark.parametrize("quiet", [False, True], ids=["verbose", "quiet"])
def test_ctrl_c_during_training_then_resume(dataset, tmp_path, quiet):
    root, _ = dataset
    out = tmp_path / "out"
    args = ["--data", root, "--output", out, "--image-size", "16", "--epochs", "100",
            "--batch-size", "8", "--top", "2", "--folds", "2", "--repeats", "1"]
    proc = interrupt_script(
        SCRIPT, *args, env=QUIET,
        ready=lambda _: any((out / "folds" / "r0-f0" / "checkpoints").glob("ckpt_*.npz")))
    assert proc.returncode == 130, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted at iteration ") and "--resume" in last
    assert "Traceback" not in proc.stderr and not (out / "cleanse.csv").exists()
    stopped = int(last.split()[3].rstrip(";"))
    proc = run_script(SCRIPT, *args, "--resume", *(["--quiet"] if quiet else []), env=QUIET)
    if quiet:  # the three result lines and nothing else, no resuming line
        lines = proc.stdout.splitlines()
        assert len(lines) == 3 and lines[0].startswith("out-of-fold accuracy "), lines
    else:
        assert f"resuming at iteration {stopped} of " in proc.stdout
    assert len(read_csv(out / "cleanse.csv")) == N_IMAGES


def test_full_disk_leaves_no_partial_csv(dataset, cli_run, tmp_path):
    """The finished run copied onto a nearly full disk, its CSV and report removed: resuming
    must write them again and cannot; one line, and no partial file under either name."""
    root, _ = dataset
    with SmallDisk(tmp_path / "disk", 8 * 1024 * 1024) as disk:
        out = Path(disk.path) / "out"
        shutil.copytree(cli_run[0], out)
        for name in ("cleanse.csv", "report.html"):
            (out / name).unlink()
        disk.fill(leave=6000)
        limit = disk.preexec_fn() if disk.mounted else _file_limit(3000)
        proc = run_script(SCRIPT, "--data", root, "--output", out, *FAST, "--resume",
                          check=False, env=QUIET, preexec_fn=limit)
        assert_one_line_error(proc, "cleanse.csv")
        assert "already scored" in proc.stdout
        assert not [p for p in files_under(out) if "cleanse.csv" in p or "report" in p]


def _file_limit(size):
    def limit():
        import resource
        import signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    return limit


def test_report_split_and_escaping():
    assert split_top(100, 10) == (10, 10)
    assert split_top(5, 10) == (3, 2)
    assert split_top(1, 10) == (1, 0)
    entry = {"rank": 1, "path": "/d/<b>/a&b.png", "given": "<b>", "predicted": "<i>",
             "score": 0.1, "flagged_by": "1/1", "uri": "data:image/png;base64,AAAA"}
    page = render_html([entry], [], [("folder", "<d>")], [("<b>", 1, 0)], "a score")
    assert "<b>/" not in page and "&lt;b&gt;" in page and "a&amp;b.png" in page
    assert "&lt;d&gt;" in page and "&lt;i&gt;" in page
    assert "<i>" not in page.split('<div class="grid harmful">')[1]


def test_folds_hold_every_class_evenly_and_agreement_counts_shared_flags():
    labels = np.repeat([0, 1, 2], [10, 7, 3])
    folds = ranking.fold_assignment(labels, 5, seed=3)
    for c in range(3):
        per_fold = np.bincount(folds[labels == c], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1
    assert np.bincount(folds).max() - np.bincount(folds).min() <= 1
    assert not np.array_equal(folds, ranking.fold_assignment(labels, 5, seed=4))
    assert ranking.percentiles([3.0, -1.0, 2.0]).tolist() == [1.0, 0.0, 0.5]
    a = np.arange(20.0)                      # flags image 0 and 1
    b = a.copy()
    b[[1, 5]] = b[[5, 1]]                    # flags 0 and 5
    assert ranking.agreement(np.stack([a, a])) == 1
    assert ranking.agreement(np.stack([a, b])) == pytest.approx(1 / 3)
    assert ranking.seed_votes(np.stack([a, b]))[[0, 1, 5, 2]].tolist() == [2, 1, 1, 0]
