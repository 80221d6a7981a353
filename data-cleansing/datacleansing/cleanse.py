"""Data cleansing of a user's own class-folder image set.

``python data-cleansing/cleanse.py --root DIR [--output OUT]`` scores *every* image of
``DIR/<class>/<image>`` by cross-validation: the images are dealt into ``--folds``
class-stratified folds, one model is trained per fold with that fold held out, and this is
repeated ``--repeats`` times with new folds and initializations. Each image thus gets
out-of-fold predictions (from models that never saw it) and, for the influence methods,
scores from the models that trained on it (with the held-out fold as validation set).

``--method`` (lower score = more harmful in every case):

* ``confident-learning`` (default): confident learning's label quality (cleanlab,
  self-confidence) of the out-of-fold predicted probabilities, averaged over the repeats;
* ``final``: the paper's storage-efficient SGD-influence (every traced step at the final
  parameters) on the held-out fold's loss; ``hara``: SGD-influence with the parameters of
  every traced step (Hara et al.); ``influence-functions``: Koh & Liang's influence
  functions. Influence scores become percentile ranks per fold, then are averaged.

Written into the run folder OUT:

* ``cleanse.csv``: ``rank, path, given_label, predicted_label, score, flagged_by`` for
  every image, most harmful first (``flagged_by``: how many repeats put the image in
  their own most harmful 10 %);
* ``report.html``: one self-contained page with the most harmful and most helpful images
  as embedded thumbnails beside their given and predicted labels, what the score means,
  the out-of-fold accuracy and how well the repeats agree;
* the run itself: ``config.yaml`` (the options and a digest of the image list), and one
  training run per repeat and fold under ``folds/`` (its checkpoints and parameters while it
  trains and is scored, then only its ``result.npz``: held-out probabilities and scores).

OUT is a run folder (:class:`common.train.run.TrainingRun`): one that holds a run is never
replaced; ``--resume`` continues it with the same options and images: finished folds are
reused, the fold in progress continues from its last checkpoint (every epoch end, and the
step in progress at Ctrl-C). Nothing is written into DIR, and nothing at all before DIR
was read.
"""
import argparse
import base64
import csv
import hashlib
import html
import io
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

from common.cli import Bounded, NonNegativeInt, Parser, PositiveFloat, PositiveInt
from common.context import add_context_args, context_from_args
from common.errors import UserError
from common.fileio import atomic_write, write_npz
from common.terminal import interrupt_message
from common.train.run import TrainingRun, holds_run
from datacleansing import ranking
from datacleansing.data import folder_images
from datacleansing.options import IMAGE_SIZE, MODEL_NAMES, refuse_multi_process

METHODS = ("confident-learning", "final", "hara", "influence-functions")
DEFAULT_METHOD = "confident-learning"
THUMB_SIZE = 96
CSV_NAME = "cleanse.csv"
HTML_NAME = "report.html"
FOLDS_DIR = "folds"
RESULT_NAME = "result.npz"
# Options that only change the report or the terminal output, and the image digest (checked
# after reading DIR).
RESUME_FREE = {"top", "quiet", "images"}
FOLDS = Bounded(int, 2, 20)


def build_parser():
    p = Parser(
        description="Rank every image of a class-folder image set DIR/<class>/<image> from "
                    "the most harmful (likely mislabelled) to the most helpful, by "
                    "cross-validation.")
    p.add_argument("--root", "--data", required=True, metavar="DIR",
                   help="image folder with one sub-folder per class")
    p.add_argument("--output", default=None, metavar="OUT",
                   help="run folder for the run, cleanse.csv and report.html (default "
                        "runs/data-cleansing/<name of DIR>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in OUT (same options and images): finished folds "
                        "are kept, the fold in progress continues from its last checkpoint")
    p.add_argument("--method", default=DEFAULT_METHOD, choices=METHODS,
                   help="how images are scored (default confident-learning: cleanlab's label "
                        "quality of the out-of-fold predictions; final, hara: the paper's "
                        "SGD-influence on the held-out fold; influence-functions)")
    p.add_argument("--model", default="mlp", choices=MODEL_NAMES,
                   help="classifier trained per fold (default mlp)")
    p.add_argument("--folds", type=FOLDS, default=5,
                   help="cross-validation folds: each model trains on all but one (default 5)")
    p.add_argument("--repeats", type=PositiveInt, default=3,
                   help="cross-validations with new folds and initializations, averaged "
                        "(default 3)")
    p.add_argument("--epochs", type=PositiveInt, default=20, help="training epochs (default 20)")
    p.add_argument("--trace-epochs", type=PositiveInt, default=1,
                   help="last epochs whose steps SGD-influence walks back (default 1)")
    p.add_argument("--batch-size", type=PositiveInt, default=32,
                   help="SGD batch size (default 32)")
    p.add_argument("--lr", type=PositiveFloat, default=0.05,
                   help="SGD learning rate (default 0.05)")
    p.add_argument("--image-size", type=IMAGE_SIZE, default=32,
                   help="images are resized to SIZE x SIZE (default 32)")
    p.add_argument("--top", type=PositiveInt, default=10, metavar="K",
                   help="harmful and helpful images shown in the report (default 10)")
    p.add_argument("--seed", type=NonNegativeInt, default=0,
                   help="seed of the first repeat's folds, initialization and order")
    p.add_argument("--quiet", action="store_true",
                   help="print only the result: no progress bars, no line per fold")
    add_context_args(p)
    p.add_alias("--data-dir", "root")
    # the official NNC plugin's spellings (sgd_influence_utils/args.py)
    for alias, dest in (("-e", "epochs"), ("--n_epochs", "epochs"), ("-bs", "batch_size"),
                        ("--batch_size", "batch_size"), ("-m", "model"), ("-di", "device_id")):
        p.add_alias(alias, dest)
    return p


def check_args(args):
    """(image folder, run folder) once the options that the flag types cannot check are
    valid; reads and writes nothing."""
    if args.trace_epochs > args.epochs:
        raise UserError(f"--trace-epochs must be in 1..{args.epochs}, not {args.trace_epochs}")
    data = Path(args.root)
    if not data.is_dir():
        raise UserError(f"image folder {data} does not exist" if not data.exists()
                        else f"{data} is not a folder")
    out = Path(args.output) if args.output else Path("runs") / "data-cleansing" / (
        data.resolve().name or "data")
    if out.resolve().is_relative_to(data.resolve()):
        raise UserError(f"--output {out} lies inside --root {data}; it would be read as a "
                        "class folder next time: choose a folder outside it")
    if data.resolve().is_relative_to(out.resolve()):
        raise UserError(f"--root {data} lies inside --output {out}: choose an --output "
                        "outside the image folder")
    return data, out


def load_folder(root, image_size):
    """(images float32 NCHW in [-1, 1], labels, absolute paths, class names) of every image
    of the class folders, resized to ``image_size`` squares (RGB)."""
    images, labels, paths, classes = folder_images(
        root, image_size, 2, "one is held out while the others train")
    x = images.astype(np.float32) * (2.0 / 255.0) - 1.0
    return x, labels, [os.path.abspath(p) for p in paths], classes


# ---------------------------------------------------------------- files


def write_csv(path, order, table, class_names, repeats):
    with atomic_write(path, "w") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["rank", "path", "given_label", "predicted_label", "score", "flagged_by"])
        for r, i in enumerate(order, 1):
            w.writerow([r, table["paths"][i], class_names[table["labels"][i]],
                        class_names[table["predicted"][i]], f"{table['scores'][i]:.8g}",
                        f"{table['votes'][i]}/{repeats}"])


def thumbnail_uri(path, fallback=None, size=THUMB_SIZE):
    """``data:image/png;base64,...`` of the image file (longest side ``size``); when the file
    cannot be read any more, of ``fallback`` (a float CHW array in [-1, 1])."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            img = im.convert("RGB")
    except (OSError, ValueError):
        if fallback is None:
            return ""
        arr = np.clip((np.asarray(fallback).transpose(1, 2, 0) + 1) * 127.5, 0, 255)
        img = Image.fromarray(arr.round().astype(np.uint8))
    scale = size / max(img.size)
    new = (max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale)))
    img = img.resize(new, Image.NEAREST if scale > 1 else Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def split_top(n, k):
    """How many images the report shows as harmful and as helpful (no image twice)."""
    harmful = min(k, (n + 1) // 2)
    return harmful, min(k, n - harmful)


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{margin-top:1.6em}
table.info{border-collapse:collapse}table.info td,table.info th{border:1px solid #ccc;
padding:.25em .6em;text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:.8em}
.card{border:1px solid #ccc;border-radius:6px;padding:.5em;width:150px;font-size:.85em;
overflow-wrap:anywhere}
.card img{display:block;margin:0 auto .4em;image-rendering:pixelated;max-width:96px}
.harmful .card{border-color:#c33}.helpful .card{border-color:#3a3}
.differs{color:#c33}
.score{font-family:monospace}.path{color:#666}
"""

SCORE_MEANING = {
    "confident-learning": (
        "the probability that models which never saw the image give to its <b>given</b> "
        "label (confident learning's label quality, cleanlab), averaged over the repeats: "
        "near 0 means models trained on the rest of the folder are sure it belongs to "
        "another class"),
    "influence": (
        "how much removing the image from training would change the loss on the held-out "
        "fold ({method}), as a percentile rank within each fold (0 = the most harmful of "
        "that fold, 1 = the most helpful), averaged over the folds that trained on it and "
        "the repeats"),
}


def _cards(entries):
    cards = []
    for e in entries:
        name = os.path.basename(e["path"])
        differs = e["predicted"] != e["given"]
        cards.append(
            '<div class="card">'
            f'<img src="{e["uri"]}" alt="{html.escape(name)}">'
            f'<div><b>#{e["rank"]}</b> &middot; score <span class="score">'
            f'{e["score"]:.3g}</span></div>'
            f'<div>given <b>{html.escape(e["given"])}</b></div>'
            f'<div{" class=differs" if differs else ""}>predicted '
            f'<b>{html.escape(e["predicted"])}</b></div>'
            f'<div>flagged by {e["flagged_by"]}</div>'
            f'<div class="path" title="{html.escape(e["path"])}">{html.escape(name)}</div>'
            '</div>')
    return "\n".join(cards)


def render_html(harmful, helpful, info, class_rows, meaning):
    """The report page. ``harmful`` / ``helpful``: dicts with rank, path, given, predicted,
    score, flagged_by, uri; ``info``: (label, value) pairs of the run; ``class_rows``:
    (class, images, flagged) per class; ``meaning``: what the score is (HTML)."""
    esc = html.escape
    info_rows = "\n".join(f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>"
                          for k, v in info)
    class_table = "\n".join(f"<tr><td>{esc(c)}</td><td>{a}</td><td>{b}</td></tr>"
                            for c, a, b in class_rows)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Data cleansing report</title>
<style>{_CSS}</style>
</head>
<body>
<h1>Data cleansing report</h1>
<p>Every image of the folder was held out once per repeat while a model trained on the
others, so every image is scored. Its <b>score</b> is {meaning}.</p>
<ul>
<li><b>Low</b> score: the image is <b>harmful</b>. Look at these first: they are often
mislabelled, ambiguous, corrupted or unlike the rest of their class. <i>Predicted</i> is
the class that models which never saw the image chose; red when it is not the given
label.</li>
<li><b>High</b> score: the image <b>helps</b>; these are typical, clean examples of their
class.</li>
</ul>
<p><i>Flagged by</i> says how many repeats (new folds and initializations) put the image in
their own most harmful 10 %: an image flagged by every repeat does not depend on the seed.
Treat the ranking as a list of what to inspect, not as a verdict; the full list is in
<code>{CSV_NAME}</code>.</p>
<h2>Run</h2>
<table class="info">
{info_rows}
</table>
<h2>Classes</h2>
<table class="info">
<tr><th>class</th><th>images</th><th>flagged (most harmful 10 %)</th></tr>
{class_table}
</table>
<h2>Most harmful images ({len(harmful)})</h2>
<div class="grid harmful">
{_cards(harmful)}
</div>
<h2>Most helpful images ({len(helpful)})</h2>
<div class="grid helpful">
{_cards(helpful)}
</div>
</body>
</html>
"""


def write_report(path, order, table, x, class_names, info, k, meaning, repeats):
    n = len(order)
    k_harm, k_help = split_top(n, k)

    def entry(position):
        i = order[position]
        return {"rank": position + 1, "path": table["paths"][i],
                "given": class_names[table["labels"][i]],
                "predicted": class_names[table["predicted"][i]],
                "score": float(table["scores"][i]), "flagged_by": f"{table['votes'][i]}/{repeats}",
                "uri": thumbnail_uri(table["paths"][i], x[i])}

    harmful = [entry(p) for p in range(k_harm)]
    helpful = [entry(p) for p in range(n - 1, n - 1 - k_help, -1)]
    flagged = np.zeros(n, bool)
    flagged[order[:ranking.flagged_count(n)]] = True
    class_rows = [(c, int(np.sum(table["labels"] == j)),
                   int(np.sum(flagged & (table["labels"] == j))))
                  for j, c in enumerate(class_names)]
    with atomic_write(path, "w") as f:
        f.write(render_html(harmful, helpful, info, class_rows, meaning))


# ---------------------------------------------------------------- the run


def _fingerprint(paths, labels):
    h = hashlib.sha256()
    for p, y in zip(paths, labels):
        h.update(f"{p}\t{int(y)}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def predict_proba(run_dir, model, x, n_classes, batch=256):
    """Softmax probabilities of the test-mode network with the run's final parameters."""
    import nnabla as nn

    from datacleansing.models import build
    from datacleansing.trace import load_snapshot, read_params
    nn.clear_parameters()
    out = np.empty((len(x), n_classes))
    graphs = {}
    for start in range(0, len(x), batch):
        xb = x[start:start + batch]
        if len(xb) not in graphs:
            xv = nn.Variable(xb.shape)
            graphs[len(xb)] = (xv, build(model, xv, n_classes, bn="test"))
            if len(graphs) == 1:
                load_snapshot(read_params(Path(run_dir) / "params" / "final.h5"))
        xv, logits = graphs[len(xb)]
        xv.d = xb
        logits.forward(clear_buffer=True)
        z = logits.d - logits.d.max(axis=1, keepdims=True)
        e = np.exp(z)
        out[start:start + len(xb)] = e / e.sum(axis=1, keepdims=True)
    return out


def run_fold(args, fold_dir, splits, x_held, seed):
    """Train one fold's model (resumable), then (held-out probabilities, influence scores of
    its training images or None), cached in ``fold_dir/result.npz``."""
    from datacleansing import influence, trace

    result = fold_dir / RESULT_NAME
    if result.is_file():
        with np.load(result) as z:
            return z["probs"], (z["scores"] if "scores" in z.files else None)
    cfg = trace.TrainConfig(model=args.model, epochs=args.epochs, batch_size=args.batch_size,
                            lr=args.lr, trace_epochs=args.trace_epochs,
                            cache="all" if args.method == "hara" else "final", seed=seed)
    if not (fold_dir / "summary.json").is_file():
        fold_run = TrainingRun(fold_dir, asdict(cfg), resume=holds_run(fold_dir), keep_last=1,
                               hint=trace.OTHER_RUN_HINT).open()
        fold_run.begin()
        trace.train(cfg, splits, fold_dir, run=fold_run, quiet=args.quiet,
                    announce=not args.quiet)
    probs = predict_proba(fold_dir, args.model, x_held, splits.n_classes)
    arrays = {"probs": probs}
    if args.method != "confident-learning":
        with interrupt_message(lambda: f"interrupted while scoring {fold_dir}; continue with "
                                       "--resume (finished folds are kept)"):
            arrays["scores"] = influence.compute_influence(
                fold_dir, splits, args.model, method=args.method, cfg=cfg, quiet=True)
    with atomic_write(result, "wb") as f:
        write_npz(f, arrays)
    # a scored fold is never trained or scored again: its model files only took disk space
    for name in ("checkpoints", "params"):
        shutil.rmtree(fold_dir / name, ignore_errors=True)
    (fold_dir / "trace.npz").unlink(missing_ok=True)
    return probs, arrays.get("scores")


def cross_validate(args, out, x, labels, paths, class_names):
    """Every repeat's out-of-fold probabilities (R, N, C) and, for the influence methods,
    per-image scores (R, N) averaged over the folds that trained on each image. ``args``: the
    options of :func:`build_parser` that set the training and the folds (or
    :func:`default_settings`)."""
    from datacleansing.data import Splits

    n, n_classes = len(labels), len(class_names)
    all_probs, all_scores = [], []
    done = sum((out / FOLDS_DIR / f"r{r}-f{f}" / RESULT_NAME).is_file()
               for r in range(args.repeats) for f in range(args.folds))
    if done and not args.quiet:
        print(f"resuming: {done} of {args.repeats * args.folds} folds already scored",
              flush=True)
    for r in range(args.repeats):
        seed = args.seed + r
        fold = ranking.fold_assignment(labels, args.folds, seed)
        probs = np.zeros((n, n_classes))
        score_sum, score_count = np.zeros(n), np.zeros(n)
        for f in range(args.folds):
            held, train = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
            splits = Splits(x[train], labels[train], x[held], labels[held], x[held],
                            labels[held], n_classes, [paths[i] for i in train], class_names)
            if not args.quiet:
                print(f"repeat {r + 1}/{args.repeats}, fold {f + 1}/{args.folds}: "
                      f"{len(train)} training, {len(held)} held out", flush=True)
            p, s = run_fold(args, out / FOLDS_DIR / f"r{r}-f{f}", splits, x[held],
                            seed * args.folds + f)
            probs[held] = p
            if s is not None:
                score_sum[train] += ranking.percentiles(s)
                score_count[train] += 1
        all_probs.append(probs)
        if args.method != "confident-learning":
            all_scores.append(score_sum / np.maximum(score_count, 1))
    return np.stack(all_probs), (np.stack(all_scores) if all_scores else None)


def default_settings(model="mlp", seed=0):
    """cleanse.py's default cross-validation and training options (confident-learning
    scoring), for scoring outside a cleanse.py run (the registry's ``cross-validated``)."""
    defaults = build_parser().parse_args(["--root", "."])
    return argparse.Namespace(**{k: getattr(defaults, k) for k in (
        "method", "folds", "repeats", "epochs", "trace_epochs", "batch_size", "lr", "quiet")},
        model=model, seed=seed)


def label_quality_scores(args, out, x, labels, paths, class_names):
    """(out-of-fold probabilities (R, N, C), per-repeat label quality (R, N), score (N)):
    cleanse.py's default scoring, the label quality of the repeats' mean out-of-fold
    probabilities (low = probably mislabelled = harmful)."""
    probs, _ = cross_validate(args, out, x, labels, paths, class_names)
    per_repeat = np.stack([ranking.label_quality(labels, p) for p in probs])
    return probs, per_repeat, ranking.label_quality(labels, probs.mean(axis=0))


def run(args):
    """Cross-validate, score, write the CSV and the report; returns what was written."""
    data_dir, out = check_args(args)
    options = dict(vars(args), root=os.path.abspath(data_dir), output=str(out))
    options.pop("config", None)
    lifecycle = TrainingRun(out, options, resume=args.resume, free=RESUME_FREE, keep_last=1,
                            hint="use the same options, or drop --resume and choose a new "
                                 "--output").open()
    x, labels, paths, class_names = load_folder(str(data_dir), args.image_size)
    ranking.fold_assignment(labels, args.folds, args.seed)     # enough images for the folds
    images = _fingerprint(paths, labels)
    saved = lifecycle.saved_options() if lifecycle.resuming else None
    if saved is not None and saved.get("images") != images:
        raise UserError(f"cannot --resume {out}: the images in {data_dir} changed since the "
                        "run started; drop --resume and choose a new --output")
    lifecycle.options["images"] = images
    context_from_args(args)    # nnabla once the input is known good
    lifecycle.begin()
    if args.method == "confident-learning":
        probs, per_repeat, scores = label_quality_scores(args, out, x, labels, paths,
                                                         class_names)
        meaning = SCORE_MEANING["confident-learning"]
    else:
        probs, per_repeat = cross_validate(args, out, x, labels, paths, class_names)
        scores = per_repeat.mean(axis=0)
        meaning = SCORE_MEANING["influence"].format(method=args.method)
    mean_probs = probs.mean(axis=0)
    predicted = np.argmax(mean_probs, axis=1)
    table = {"paths": paths, "labels": labels, "predicted": predicted, "scores": scores,
             "votes": ranking.seed_votes(per_repeat)}
    order = ranking.rank(scores)
    summary = {"images": len(labels), "accuracy": float(np.mean(predicted == labels)),
               "agreement": ranking.agreement(per_repeat),
               "disagree": int(np.sum(predicted != labels))}
    info = [
        ("image folder", options["root"]),
        ("images", f"{len(labels)} in {len(class_names)} classes, all scored"),
        ("method", args.method),
        ("model", f"{args.model}, {args.epochs} epochs, batch {args.batch_size}, lr {args.lr}, "
                  f"images {args.image_size}x{args.image_size}"),
        ("cross-validation", f"{args.folds} folds x {args.repeats} repeats "
                             f"(seeds {args.seed}..{args.seed + args.repeats - 1})"),
        ("out-of-fold accuracy (given labels)", f"{summary['accuracy']:.1%}"),
        ("predicted label differs from the given one", f"{summary['disagree']} images"),
        ("repeat agreement (most harmful 10 % flagged by every repeat)",
         f"{summary['agreement']:.0%}"),
    ]
    csv_path, html_path = out / CSV_NAME, out / HTML_NAME
    write_csv(csv_path, order, table, class_names, args.repeats)
    write_report(html_path, order, table, x, class_names, info, args.top, meaning, args.repeats)
    return {"csv": csv_path, "html": html_path, "summary": summary, "order": order,
            "scores": scores, "paths": paths}


def main(argv=None):
    args = build_parser().parse_args(argv)
    refuse_multi_process()
    result = run(args)
    s = result["summary"]
    print(f"out-of-fold accuracy {s['accuracy']:.1%}; {s['disagree']} of {s['images']} images "
          f"predicted as another class; repeat agreement {s['agreement']:.0%}")
    first = result["order"][0]
    print(f"most harmful: {result['paths'][first]} (score {result['scores'][first]:.3g})")
    print(f"wrote {result['csv']} and {result['html']}")
    return 0
