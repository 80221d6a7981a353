"""Data cleansing of a user's own class-folder image set.

``python data-cleansing/cleanse.py --root DIR [--output OUT]`` trains a classifier on
``DIR/<class>/<image>`` (with the trace and only the final parameters cached), scores
every training image with the storage-efficient influence (every traced step evaluated
at the final parameters) and writes, into the run folder OUT:

* ``influence.csv``: ``rank, path, label, influence``, most harmful first;
* ``report.html``: one self-contained page with the most harmful and the most helpful
  images as embedded thumbnails, what the score means, the split sizes and the accuracy
  of the trained model;
* the run itself: ``config.yaml`` (the options and a digest of the image list),
  ``checkpoints/``, the trace and parameters, ``summary.json`` and ``scores.npy``.

OUT is a run folder (:class:`common.train.run.TrainingRun`): one that holds a run is never
replaced; ``--resume`` continues it with the same options and images: the training from
its last checkpoint (every epoch end, and the step in progress at Ctrl-C), then the
scoring (from its start, unless ``scores.npy`` was written), then the CSV and the report.
Nothing is written into DIR, and nothing is written at all before DIR was read.

A score estimates how the validation loss would change if the image were left out of
training: negative means removing it lowers the loss (the image is harmful, often
mislabelled or atypical), positive means the image helps.
"""
import base64
import csv
import hashlib
import html
import io
import json
import os
from pathlib import Path

import numpy as np

from common.cli import NonNegativeInt, Parser, PositiveFloat, PositiveInt
from common.context import add_context_args, context_from_args
from common.errors import UserError
from common.fileio import atomic_write
from common.terminal import interrupt_message
from common.train.run import TrainingRun
from datacleansing.options import IMAGE_SIZE, MODEL_NAMES, refuse_multi_process

THUMB_SIZE = 96
CSV_NAME = "influence.csv"
HTML_NAME = "report.html"
SCORES_NAME = "scores.npy"
# Options that only change the report, and the image digest (checked after reading DIR).
RESUME_FREE = {"top", "images"}


def build_parser():
    p = Parser(
        prog="cleanse.py",
        description="Find the training images that hurt (or help) a classifier trained on "
                    "a class-folder image set DIR/<class>/<image>.")
    p.add_argument("--root", "--data", required=True, metavar="DIR",
                   help="image folder with one sub-folder per class")
    p.add_argument("--output", default=None, metavar="OUT",
                   help="run folder for the run, influence.csv and report.html (default "
                        "runs/data-cleansing/<name of DIR>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in OUT (same options and images): training from "
                        "its last checkpoint, then scoring, CSV and report")
    p.add_argument("--model", default="cnn", choices=MODEL_NAMES,
                   help="classifier to train (default cnn)")
    p.add_argument("--epochs", type=PositiveInt, default=10, help="training epochs (default 10)")
    p.add_argument("--trace-epochs", type=PositiveInt, default=1,
                   help="last epochs whose steps the influence walks back (default 1)")
    p.add_argument("--batch-size", type=PositiveInt, default=32,
                   help="SGD batch size (default 32)")
    p.add_argument("--lr", type=PositiveFloat, default=0.05,
                   help="SGD learning rate (default 0.05)")
    p.add_argument("--image-size", type=IMAGE_SIZE, default=32,
                   help="images are resized to SIZE x SIZE (default 32)")
    p.add_argument("--top", type=PositiveInt, default=10, metavar="K",
                   help="harmful and helpful images shown in the report (default 10)")
    p.add_argument("--seed", type=NonNegativeInt, default=0,
                   help="seed of split, initialization, order")
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


# ---------------------------------------------------------------- ranking and files


def rank(scores):
    """Training indices ordered from the most harmful (lowest score) to the most helpful;
    ties keep the training order."""
    return np.argsort(np.asarray(scores), kind="stable")


def write_csv(path, order, scores, paths, labels, class_names):
    with atomic_write(path, "w") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["rank", "path", "label", "influence"])
        for r, i in enumerate(order, 1):
            w.writerow([r, paths[i], class_names[labels[i]], f"{scores[i]:.8g}"])


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
.score{font-family:monospace}.path{color:#666}
"""


def _cards(entries):
    cards = []
    for e in entries:
        name = os.path.basename(e["path"])
        cards.append(
            '<div class="card">'
            f'<img src="{e["uri"]}" alt="{html.escape(name)}">'
            f'<div><b>#{e["rank"]}</b> &middot; class <b>{html.escape(e["label"])}</b></div>'
            f'<div>influence <span class="score">{e["influence"]:+.3e}</span></div>'
            f'<div class="path" title="{html.escape(e["path"])}">{html.escape(name)}</div>'
            '</div>')
    return "\n".join(cards)


def render_html(harmful, helpful, info, class_rows):
    """The report page. ``harmful`` / ``helpful``: dicts with rank, path, label, influence,
    uri; ``info``: (label, value) pairs of the run; ``class_rows``: (class, train, val,
    test) per class."""
    esc = html.escape
    info_rows = "\n".join(f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>"
                          for k, v in info)
    class_table = "\n".join(
        f"<tr><td>{esc(c)}</td><td>{a}</td><td>{b}</td><td>{t}</td></tr>"
        for c, a, b, t in class_rows)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Data cleansing report</title>
<style>{_CSS}</style>
</head>
<body>
<h1>Data cleansing report</h1>
<p>Every training image has an <b>influence</b> score: an estimate of how much the
validation loss would change if that image were removed from the training set and the
model trained again. It follows the image's effect through the recorded SGD steps of the
last training epoch(s) (SGD-influence), evaluated at the final parameters only, so just one
copy of the parameters needs to be stored.</p>
<ul>
<li><b>Negative</b> score: removing the image would <i>lower</i> the validation loss, i.e.
the image is <b>harmful</b>. Look at these first: they are often mislabelled, ambiguous,
corrupted or unlike the rest of their class.</li>
<li><b>Positive</b> score: the image <b>helps</b> the model; these are typical, clean
examples of their class.</li>
</ul>
<p>Scores are comparable within one run only. They are estimates from one training run
and a small validation split, so treat them as a ranking of what to inspect, not as a
verdict; the full list is in <code>influence.csv</code>.</p>
<h2>Run</h2>
<table class="info">
{info_rows}
</table>
<h2>Classes</h2>
<table class="info">
<tr><th>class</th><th>train</th><th>validation</th><th>test</th></tr>
{class_table}
</table>
<h2>Most harmful training images ({len(harmful)})</h2>
<div class="grid harmful">
{_cards(harmful)}
</div>
<h2>Most helpful training images ({len(helpful)})</h2>
<div class="grid helpful">
{_cards(helpful)}
</div>
</body>
</html>
"""


def write_report(path, order, scores, splits, paths, summary, setup, k):
    n = len(order)
    k_harm, k_help = split_top(n, k)
    labels, names = splits.y_train, splits.class_names

    def entry(position):
        i = order[position]
        return {"rank": position + 1, "path": paths[i], "label": names[labels[i]],
                "influence": float(scores[i]),
                "uri": thumbnail_uri(paths[i], splits.x_train[i])}

    harmful = [entry(p) for p in range(k_harm)]
    helpful = [entry(p) for p in range(n - 1, n - 1 - k_help, -1)]
    n_val, n_test = len(splits.y_val), len(splits.y_test)
    info = [
        ("image folder", setup["root"]),
        ("images", f"{n + n_val + n_test} in {splits.n_classes} classes"),
        ("split", f"{n} train / {n_val} validation / {n_test} test"),
        ("model", f"{setup['model']}, {setup['epochs']} epochs, batch {setup['batch_size']}, "
                  f"lr {setup['lr']}, images {setup['image_size']}x{setup['image_size']}"),
        ("validation accuracy", f"{summary['val_accuracy']:.1%}"),
        ("test accuracy", f"{summary['test_accuracy']:.1%}"),
        ("harmful (negative score)", f"{int(np.sum(np.asarray(scores) < 0))} of {n}"),
    ]
    counts = [np.bincount(y, minlength=splits.n_classes)
              for y in (splits.y_train, splits.y_val, splits.y_test)]
    class_rows = [(c, int(counts[0][j]), int(counts[1][j]), int(counts[2][j]))
                  for j, c in enumerate(names)]
    with atomic_write(path, "w") as f:
        f.write(render_html(harmful, helpful, info, class_rows))


# ---------------------------------------------------------------- the run


def _fingerprint(paths, labels):
    h = hashlib.sha256()
    for p, y in zip(paths, labels):
        h.update(f"{p}\t{int(y)}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def run(args):
    """Train, score, write the CSV and the report; returns a dict of what was written."""
    from datacleansing import data as D

    data_dir, out = check_args(args)
    options = dict(vars(args), root=os.path.abspath(data_dir), output=str(out))
    options.pop("config", None)
    lifecycle = TrainingRun(out, options, resume=args.resume, free=RESUME_FREE, keep_last=1,
                            hint="use the same options, or drop --resume and choose a new "
                                 "--output").open()
    splits = D.load("folder", str(data_dir), seed=args.seed, image_size=args.image_size)
    paths = [os.path.abspath(p) for p in splits.paths]
    images = _fingerprint(paths, splits.y_train)
    saved = lifecycle.saved_options() if lifecycle.resuming else None
    if saved is not None and saved.get("images") != images:
        raise UserError(f"cannot --resume {out}: the images in {data_dir} changed since the "
                        "run started; drop --resume and choose a new --output")
    lifecycle.options["images"] = images
    from datacleansing import influence, trace  # nnabla once the input is known good
    context_from_args(args)
    cfg = trace.TrainConfig(model=args.model, epochs=args.epochs, batch_size=args.batch_size,
                            lr=args.lr, trace_epochs=args.trace_epochs, cache="final",
                            seed=args.seed)
    trained = lifecycle.resuming and (out / "summary.json").is_file()
    lifecycle.begin()
    scores_path = out / SCORES_NAME
    if trained:
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        print(f"resuming: training in {out} already finished", flush=True)
    else:
        summary = trace.train(cfg, splits, out, run=lifecycle)
    if trained and scores_path.is_file():
        scores = np.load(scores_path)
        print("resuming: influence scores already computed", flush=True)
    else:
        with interrupt_message(lambda: f"interrupted while scoring; the trained run in {out} "
                                       "is kept: continue with --resume (scoring starts "
                                       "again)"):
            scores = influence.compute_influence(out, splits, args.model, method="final",
                                                 impl="batched", cfg=cfg)
        with atomic_write(scores_path, "wb") as f:
            np.save(f, scores)
    order = rank(scores)
    csv_path, html_path = out / CSV_NAME, out / HTML_NAME
    write_csv(csv_path, order, scores, paths, splits.y_train, splits.class_names)
    write_report(html_path, order, scores, splits, paths, summary, options, args.top)
    return {"csv": csv_path, "html": html_path, "summary": summary, "order": order,
            "scores": scores, "paths": paths}


def main(argv=None):
    args = build_parser().parse_args(argv)
    refuse_multi_process()
    result = run(args)
    s = result["summary"]
    print(f"validation accuracy {s['val_accuracy']:.1%}, test accuracy {s['test_accuracy']:.1%}")
    first = result["order"][0]
    print(f"most harmful: {result['paths'][first]} (influence {result['scores'][first]:+.3e})")
    print(f"wrote {result['csv']} and {result['html']}")
    return 0
