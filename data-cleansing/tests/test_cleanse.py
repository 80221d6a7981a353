"""The data-cleansing tool for a user's class-folder image set (`cleanse.py`).

A tiny synthetic set: three classes of 20x20 images (red blobs, green stripes, blue
checkerboard; one class is named ``x<y`` to test escaping), 30 per class, PNG and JPEG.
Three training images of every class are overwritten with the next class's pattern,
i.e. mislabelled; the validation split stays clean, as in the paper's experiments.
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

from common.dev.testing import (ReadOnlyDir, SmallDisk, assert_one_line_error, files_under,
                                interrupt_script, run_script)
from datacleansing import data as D
from datacleansing.cleanse import main, render_html, split_top

SCRIPT = Path(__file__).resolve().parents[1] / "cleanse.py"
CLASSES = ("blobs", "stripes", "x<y")
PER_CLASS, WRONG_PER_CLASS = 30, 3
FAST = ["--image-size", "16", "--batch-size", "16", "--epochs", "5", "--top", "4"]
QUIET = {"NNABLA_RESEARCH_NO_PROGRESS": "1"}


def read_csv(path):
    """The rows of an ``influence.csv`` as dicts (``rank`` int, ``influence`` float)."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{**row, "rank": int(row["rank"]), "influence": float(row["influence"])}
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
    """(root, absolute paths of the mislabelled training images)."""
    root = make_set(tmp_path_factory.mktemp("cleanse") / "data")
    # the split depends on file order and --seed only, so the training files are known
    splits = D.load("folder", str(root), seed=0, image_size=16)
    rng = np.random.default_rng(1)
    wrong = []
    for c in range(len(CLASSES)):
        train = [p for p, y in zip(splits.paths, splits.y_train) if y == c]
        for p in rng.choice(train, WRONG_PER_CLASS, replace=False):
            pattern((c + 1) % 3, rng).save(p)
            wrong.append(os.path.abspath(p))
    return root, wrong


@pytest.fixture(scope="module")
def cli_run(dataset, tmp_path_factory):
    """The tool run as a user runs it (default model: the CNN)."""
    root, _ = dataset
    out = tmp_path_factory.mktemp("cleanse-out") / "out"
    proc = run_script(SCRIPT, "--data", root, "--output", out, *FAST)
    return out, proc


def test_csv_ranks_every_training_image_once(dataset, cli_run):
    root, wrong = dataset
    out, proc = cli_run
    rows = read_csv(out / "influence.csv")
    train = D.load("folder", str(root), seed=0, image_size=16)
    assert sorted(r["path"] for r in rows) == sorted(os.path.abspath(p) for p in train.paths)
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    scores = [r["influence"] for r in rows]
    assert scores == sorted(scores) and np.all(np.isfinite(scores))
    assert all(Path(r["path"]).is_file() for r in rows)
    assert all(r["label"] == Path(r["path"]).parent.name for r in rows)
    assert {r["label"] for r in rows} == set(CLASSES)
    assert "wrote" in proc.stdout and "test accuracy" in proc.stdout
    assert not list(out.glob(".*.tmp.*"))
    # measurement only: the CNN ranks some mislabelled images high, but not reliably so
    found = len({r["path"] for r in rows[:len(wrong)]} & set(wrong))
    print(f"cnn: mislabelled among the {len(wrong)} most harmful of {len(rows)}: {found}")


def test_html_report_is_self_contained_and_escaped(cli_run):
    out, _ = cli_run
    page = (out / "report.html").read_text(encoding="utf-8")
    thumbs = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(thumbs) == 2 * 4                     # --top 4 harmful + 4 helpful
    with Image.open(io.BytesIO(base64.b64decode(thumbs[0]))) as im:
        assert im.format == "PNG" and max(im.size) == 96
    assert "x&lt;y" in page and "x<y" not in page
    assert 'src="http' not in page and "<script" not in page
    for text in ("Most harmful", "Most helpful", "validation accuracy", "test accuracy",
                 "Negative", "72 train / 9 validation / 9 test"):
        assert text in page
    rows = read_csv(out / "influence.csv")
    assert "<b>#1</b>" in page and f"<b>#{len(rows)}</b>" in page


def test_mislabelled_images_rank_as_harmful(dataset, tmp_path):
    """With the MLP (fast, and a clear signal on this set) the mislabelled training images
    fill most of the top of the ranking; by chance about 1.1 of 9 would be there."""
    root, wrong = dataset
    main(["--data", str(root), "--output", str(tmp_path / "out"), "--model", "mlp",
          "--image-size", "16", "--batch-size", "16", "--epochs", "10"])
    rows = read_csv(tmp_path / "out" / "influence.csv")
    top = {r["path"] for r in rows[:len(wrong)]}
    found = len(top & set(wrong))
    print(f"mislabelled among the {len(wrong)} most harmful of {len(rows)}: {found}")
    assert found >= 4


def test_resume_reuses_a_finished_run(dataset, cli_run, tmp_path):
    root, _ = dataset
    out, _ = cli_run
    before = (out / "influence.csv").read_bytes()
    proc = run_script(SCRIPT, "--data", root, "--output", out, *FAST, "--resume")
    assert "training in" in proc.stdout and "already computed" in proc.stdout
    assert (out / "influence.csv").read_bytes() == before
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
    for p in sorted((few / "b").iterdir())[:2]:
        p.unlink()
    _fails(["--data", few, "--output", out], match="at least 3 images")
    broken = make_set(tmp_path / "broken", per_class=4, classes=("a", "b"))
    (broken / "a" / "bad.png").write_bytes(b"not an image")
    _fails(["--data", broken, "--output", out], match="bad.png")
    _fails(["--data", broken, "--output", broken / "out"], match="inside --root")
    _fails(["--data", broken, "--top", "0"], match="--top")
    _fails(["--data", broken, "--model", "resnet"], match="invalid choice")
    assert not out.exists()


def test_failed_rerun_keeps_the_previous_outputs(tmp_path):
    data = make_set(tmp_path / "data", per_class=4, classes=("a", "b"))
    out = tmp_path / "out"
    args = ["--data", str(data), "--output", str(out), "--model", "logreg",
            "--image-size", "8", "--epochs", "2", "--top", "3"]
    main(args)
    before = {p.name: p.read_bytes() for p in (out / "influence.csv", out / "report.html")}
    assert len(read_csv(out / "influence.csv")) == 4   # 4 per class: 2 train / 1 val / 1 test
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


def test_ctrl_c_during_training_then_resume(dataset, tmp_path):
    root, _ = dataset
    out = tmp_path / "out"
    args = ["--data", root, "--output", out, "--model", "mlp", "--image-size", "16",
            "--epochs", "100", "--top", "2"]
    proc = interrupt_script(SCRIPT, *args, env=QUIET,
                            ready=lambda _: any((out / "checkpoints").glob("ckpt_*.npz")))
    assert proc.returncode == 130, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted at iteration ") and "--resume" in last
    assert "Traceback" not in proc.stderr and not (out / "influence.csv").exists()
    stopped = int(last.split()[3].rstrip(";"))
    proc = run_script(SCRIPT, *args, "--resume", env=QUIET)
    assert f"resuming at iteration {stopped} of " in proc.stdout
    assert len(read_csv(out / "influence.csv")) == 72


def test_full_disk_leaves_no_partial_csv(dataset, cli_run, tmp_path):
    """The finished run copied onto a nearly full disk, its CSV and report removed: resuming
    must write them again and cannot; one line, and no partial file under either name."""
    root, _ = dataset
    with SmallDisk(tmp_path / "disk", 8 * 1024 * 1024) as disk:
        out = Path(disk.path) / "out"
        shutil.copytree(cli_run[0], out)
        for name in ("influence.csv", "report.html"):
            (out / name).unlink()
        disk.fill(leave=6000)
        limit = disk.preexec_fn() if disk.mounted else _file_limit(3000)
        proc = run_script(SCRIPT, "--data", root, "--output", out, *FAST, "--resume",
                          check=False, env=QUIET, preexec_fn=limit)
        assert_one_line_error(proc, "influence.csv")
        assert "already computed" in proc.stdout
        assert not [p for p in files_under(out) if "influence.csv" in p or "report" in p]


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
    entry = {"rank": 1, "path": "/d/<b>/a&b.png", "label": "<b>", "influence": -0.5,
             "uri": "data:image/png;base64,AAAA"}
    page = render_html([entry], [], [("folder", "<d>")], [("<b>", 1, 0, 0)])
    assert "<b>/" not in page and "&lt;b&gt;" in page and "a&amp;b.png" in page
    assert "&lt;d&gt;" in page
