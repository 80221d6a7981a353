"""Does ``cleanse.py`` put planted label errors at its harmful end, next to confident learning?

Run (from the repository root; about 12 minutes on the loaded 2-core CPU)::

    .venv/bin/python data-cleansing/bench/bench_cleanse.py --out-dir runs/dc-bench-cleanse

Builds class folders (PNG files, ``OUT/<set>/images/<class>/``) and plants label errors: a
``--flip`` share of the images (chosen at random) is moved into a random other class's
folder. The sets (``--sets``):

* ``digits-N``: N scikit-learn digits (8x8, 16 grey levels) upscaled to 28x28, 10 classes;
* ``textures-N``: N synthetic colour textures at 32x32, 10 classes (5 stripe orientations x
  2 dominant colours) with random phase, stripe period, colour jitter and noise. They stand
  in for natural images offline (no download): their classes need features that are not
  linear in the pixels, unlike the digits'; they are not photographs.

Then, side by side in this one process and on the same folders:

* ``cleanse.py`` with its defaults (run as a user runs it, the real script);
* ``cleanse.py --method final`` (the paper's storage-efficient SGD-influence, cross-validated
  the same way), on sets of at most ``--influence-max`` images;
* confident learning as the issue measured it: cleanlab's label quality (self-confidence) of
  5-fold cross-validated scikit-learn logistic-regression probabilities on the pixels (grey
  for the digits, RGB for the textures).

Printed per set and method: precision at k (k = the number of planted errors: the share of
the k most harmful images that are planted errors), the share of planted errors in the most
helpful 10 %, for cleanse.py the agreement of its repeats (of the images some repeat puts
in its most harmful 10 %, the share that every repeat puts there: 100 % = the flagged images
do not depend on the seed), and the wall time, with each method's time relative to
cleanlab's.
"""
import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from common.cli import Bounded, NonNegativeInt, Parser, PositiveInt
from common.errors import UserError
from common.fileio import check_output_location

HERE = Path(__file__).resolve().parent
CLEANSE = HERE.parent / "cleanse.py"
SETS = ("digits-300", "digits-1200", "digits-1797", "textures-600", "textures-2400")
FRACTION = Bounded(float, 0.01, 0.5)


def digits(n, rng):
    from PIL import Image
    from sklearn.datasets import load_digits
    d = load_digits()
    if n > len(d.target):
        raise UserError(f"--sets: scikit-learn has {len(d.target)} digits, not {n}")
    idx = rng.choice(len(d.target), n, replace=False)
    images = [Image.fromarray((d.images[i] * (255 / 16)).astype(np.uint8)).resize(
        (28, 28), Image.BILINEAR) for i in idx]
    return images, d.target[idx], [str(c) for c in range(10)]


def texture(cls, rng, size=32):
    """Stripes at one of 5 orientations, red- or blue-dominant (class = 2 * orientation +
    colour), with random phase, period, colour jitter, blur-free pixel noise."""
    from PIL import Image
    orientation, colour = divmod(cls, 2)
    angle = orientation * np.pi / 5 + rng.normal(0, 0.08)
    yy, xx = np.mgrid[:size, :size]
    period = rng.uniform(4, 8)
    wave = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period
                  + rng.uniform(0, 2 * np.pi))
    base = np.array([170, 90, 80] if colour == 0 else [80, 100, 170], float)
    base = base + rng.normal(0, 25, 3)
    img = base + wave[..., None] * rng.uniform(25, 60) + rng.normal(0, 20, (size, size, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def textures(n, rng):
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    return [texture(int(c), rng) for c in labels], labels, [
        f"{o}-{c}" for o in ("0deg", "36deg", "72deg", "108deg", "144deg")
        for c in ("red", "blue")]


def build_set(name, folder, flip, seed):
    """Write the class folders with planted errors; (paths, noisy labels, planted paths,
    pixel matrix for the logistic regression: grey for the digits, RGB for the textures)."""
    kind, n = name.split("-")
    rng = np.random.default_rng(seed)
    images, labels, classes = {"digits": digits, "textures": textures}[kind](int(n), rng)
    planted = np.sort(rng.choice(len(labels), int(round(flip * len(labels))), replace=False))
    noisy = labels.copy()
    noisy[planted] = (labels[planted] + rng.integers(1, len(classes), len(planted))) % len(
        classes)
    shutil.rmtree(folder, ignore_errors=True)
    paths = []
    for i, (img, y) in enumerate(zip(images, noisy)):
        path = folder / classes[y] / f"img{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path)
        paths.append(str(path.resolve()))
    pixels = np.stack([np.asarray(img, np.float32).ravel() / 255 for img in images])
    return paths, noisy, {paths[i] for i in planted}, pixels


def cleanse_order(folder, out, extra):
    """The paths of cleanse.py's CSV, most harmful first, its wall time and the agreement of
    its repeats (of the images some repeat flags, the share every repeat flags)."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, str(CLEANSE), "--root", str(folder), "--output", str(out),
                    *extra], check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "NNABLA_RESEARCH_NO_PROGRESS": "1"})
    seconds = time.perf_counter() - start
    with open(out / "cleanse.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    votes = [row["flagged_by"].split("/") for row in rows]
    agreement = sum(a == b for a, b in votes) / sum(a != "0" for a, _ in votes)
    return [row["path"] for row in rows], seconds, agreement


def cleanlab_order(paths, noisy, pixels):
    """Confident learning on 5-fold cross-validated logistic regression of the pixels."""
    from cleanlab.rank import get_label_quality_scores
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict
    from threadpoolctl import threadpool_limits
    start = time.perf_counter()
    # one BLAS thread: with other jobs on the 2 cores, more make each solver step ~100x slower
    with threadpool_limits(1):
        probs = cross_val_predict(LogisticRegression(max_iter=1000), pixels, noisy, cv=5,
                                  method="predict_proba")
    quality = get_label_quality_scores(noisy, probs, method="self_confidence")
    order = np.argsort(quality, kind="stable")
    return [paths[i] for i in order], time.perf_counter() - start, None


def measures(order, planted):
    k, tenth = len(planted), max(1, round(0.1 * len(order)))
    return (len(set(order[:k]) & planted) / k, len(set(order[-tenth:]) & planted) / k)


def main(argv=None):
    p = Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", default="runs/dc-bench-cleanse", help="folder of the sets and runs")
    p.add_argument("--sets", nargs="+", default=list(SETS), metavar="KIND-N",
                   help=f"sets to build (default {' '.join(SETS)})")
    p.add_argument("--flip", type=FRACTION, default=0.1,
                   help="share of images given a wrong label (default 0.1)")
    p.add_argument("--influence-max", type=PositiveInt, default=1200,
                   help="run --method final on sets of at most this many images (default 1200)")
    p.add_argument("--seed", type=NonNegativeInt, default=1, help="seed of the sets and errors")
    args = p.parse_args(argv)
    for name in args.sets:
        kind, _, n = name.partition("-")
        if kind not in ("digits", "textures") or not n.isdigit() or int(n) < 50:
            p.error(f"--sets: {name!r} is not digits-N or textures-N with N >= 50")
    out = Path(args.out_dir)
    check_output_location(out, "--out-dir")
    rows = []
    for name in args.sets:
        folder = out / name / "images"
        paths, noisy, planted, pixels = build_set(name, folder, args.flip, args.seed)
        results = {"confident learning (cleanlab, logreg CV)": cleanlab_order(paths, noisy,
                                                                              pixels),
                   "cleanse.py (default)": cleanse_order(folder, out / name / "default", [])}
        if len(paths) <= args.influence_max:
            results["cleanse.py --method final"] = cleanse_order(
                folder, out / name / "final", ["--method", "final"])
        base = results["confident learning (cleanlab, logreg CV)"][1]
        for method, (order, seconds, agreement) in results.items():
            assert sorted(order) == sorted(paths), "every image is ranked"
            precision, helpful = measures(order, planted)
            rows.append((name, len(paths), len(planted), method, precision, helpful,
                         "-" if agreement is None else f"{agreement:.0%}", seconds,
                         seconds / base))
            print(f"{name}: {method}: precision@{len(planted)} {precision:.0%}", flush=True)
    print()
    print("| set | images | planted | method | precision@k | planted in most helpful 10 % "
          "| repeat agreement | time (s) | time / cleanlab's |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, n, k, method, precision, helpful, agreement, seconds, ratio in rows:
        print(f"| {name} | {n} | {k} | {method} | {precision:.0%} | {helpful:.0%} | "
              f"{agreement} | {seconds:.0f} | {ratio:.1f} |")
    return 0


if __name__ == "__main__":
    from common.cli import run_cli
    run_cli(main)
