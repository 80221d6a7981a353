"""Semantic-segmentation metrics from a confusion matrix accumulated over a whole data set.

The Cityscapes benchmark (and the D3Net paper's numbers) score a split as follows, which
:class:`ConfusionMatrix` implements:

* pixels whose ground truth is the ignore label (255) are not counted at all, whatever was
  predicted there;
* for every class ``c`` the intersection ``TP_c`` and union ``TP_c + FP_c + FN_c`` are
  **summed over every pixel of every image** of the split, and ``IoU_c = TP_c / union_c`` is
  computed once at the end. This is *not* the mean of per-image (or per-batch) IoUs: an image
  where a class is tiny would otherwise weigh as much as one where it fills the frame
  (``test_metrics.py`` has a crafted example where the two differ);
* ``mIoU`` is the mean of ``IoU_c`` over the classes. A class that occurs neither in the
  ground truth nor in the prediction of the whole set has union 0: its IoU is reported as
  **NaN and left out of the mean** (on the full Cityscapes val split all 19 classes occur, so
  this only matters for subsets). A class that is predicted but absent from the ground truth
  has IoU 0 and *does* count;
* pixel accuracy is ``sum_c TP_c / (number of non-ignored pixels)``; mean class accuracy
  averages the per-class recall ``TP_c / (TP_c + FN_c)`` over the classes present in the
  ground truth (NaN for absent ones, left out of the mean).

The matrix is ``(num_classes, num_classes)`` int64, rows = ground truth, columns =
prediction, filled with one ``np.bincount`` per update.
"""
import csv
import io
import json
import math
import warnings
from pathlib import Path

import numpy as np

from common.data.cityscapes import IGNORE_INDEX, NUM_CLASSES, TRAIN_CLASSES
from common.fileio import atomic_write
from common.report import markdown_table

__all__ = ["confusion_matrix", "ConfusionMatrix", "iou_rows", "format_markdown",
           "save_iou_table"]


def confusion_matrix(pred, target, num_classes=NUM_CLASSES, ignore_index=IGNORE_INDEX):
    """``(num_classes, num_classes)`` int64 counts of (ground truth, prediction) pairs.

    ``pred`` and ``target`` are integer arrays of the same shape (any shape: one image,
    a batch, ...). Target pixels equal to ``ignore_index`` are skipped. Any other value
    outside ``0..num_classes-1`` in either array is an error (ValueError), so a label
    image with unexpected ids cannot silently distort the score.
    """
    pred = np.asarray(pred)
    target = np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from label shape "
                         f"{target.shape}")
    for name, arr in (("prediction", pred), ("label", target)):
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name} must hold integer class ids, got {arr.dtype}")
    keep = target != ignore_index
    t = target[keep].astype(np.int64, copy=False)
    p = pred[keep].astype(np.int64, copy=False)
    for name, arr in (("label", t), ("prediction", p)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            bad = arr[(arr < 0) | (arr >= num_classes)][0]
            raise ValueError(f"{name} holds class id {bad}; expected 0..{num_classes - 1}"
                             + (f" or {ignore_index} (ignore)" if name == "label" else ""))
    counts = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64, copy=False)


def _ratio(num, den):
    """``num / den`` elementwise, NaN where ``den == 0`` (no warning)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nanmean(values):
    values = np.asarray(values, dtype=np.float64)
    if np.all(np.isnan(values)):
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(values))


class ConfusionMatrix:
    """Accumulates a confusion matrix over a data set; IoU and accuracies from the totals.

    >>> cm = ConfusionMatrix()            # 19 Cityscapes train classes, 255 ignored
    >>> for pred, label in pairs:         # integer arrays of equal shape
    ...     cm.update(pred, label)
    >>> cm.miou(), cm.iou(), cm.pixel_accuracy()
    """

    def __init__(self, num_classes=NUM_CLASSES, ignore_index=IGNORE_INDEX):
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, pred, target):
        """Add one prediction/label pair (or a batch of them); returns ``self``."""
        self.matrix += confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        return self

    def merge(self, other):
        """Add another accumulator's counts (e.g. from another process)."""
        other = other.matrix if isinstance(other, ConfusionMatrix) else np.asarray(other)
        if other.shape != self.matrix.shape:
            raise ValueError(f"cannot merge a {other.shape} matrix into {self.matrix.shape}")
        self.matrix += other.astype(np.int64)
        return self

    def reset(self):
        self.matrix[...] = 0

    @property
    def total(self):
        """Number of counted (non-ignored) pixels."""
        return int(self.matrix.sum())

    def intersection_union(self):
        """``(intersection, union)`` per class, int64, summed over everything seen."""
        tp = np.diag(self.matrix)
        union = self.matrix.sum(axis=0) + self.matrix.sum(axis=1) - tp
        return tp.copy(), union

    def iou(self):
        """Per-class IoU (float64); NaN where the class is in neither GT nor prediction."""
        inter, union = self.intersection_union()
        return _ratio(inter, union)

    def miou(self):
        """Mean of :meth:`iou` over the classes that occur (NaN ones left out)."""
        return _nanmean(self.iou())

    def pixel_accuracy(self):
        """Correct pixels / counted pixels (NaN when nothing was counted)."""
        return float(_ratio(np.trace(self.matrix), self.total))

    def class_accuracy(self):
        """Per-class recall ``TP / (TP + FN)``; NaN for classes absent from the ground truth."""
        return _ratio(np.diag(self.matrix), self.matrix.sum(axis=1))

    def mean_class_accuracy(self):
        return _nanmean(self.class_accuracy())

    def summary(self):
        """JSON-able dict of every metric (NaN as None)."""
        def clean(x):
            return None if x is None or (isinstance(x, float) and math.isnan(x)) else x

        inter, union = self.intersection_union()
        return {"mIoU": clean(self.miou()), "pixel_accuracy": clean(self.pixel_accuracy()),
                "mean_class_accuracy": clean(self.mean_class_accuracy()),
                "pixels": self.total,
                "iou": [clean(float(v)) for v in self.iou()],
                "intersection": inter.tolist(), "union": union.tolist()}


def iou_rows(cm, class_names=TRAIN_CLASSES):
    """``[(train id, name, IoU, class accuracy, intersection, union), ...]`` per class."""
    if len(class_names) != cm.num_classes:
        raise ValueError(f"{len(class_names)} class names for {cm.num_classes} classes")
    inter, union = cm.intersection_union()
    iou, acc = cm.iou(), cm.class_accuracy()
    return [(c, class_names[c], float(iou[c]), float(acc[c]), int(inter[c]), int(union[c]))
            for c in range(cm.num_classes)]


def _pct(value):
    return "n/a" if math.isnan(value) else f"{100 * value:.2f}"


def format_markdown(cm, class_names=TRAIN_CLASSES):
    """Per-class table (IoU and accuracy in %) followed by the mIoU / accuracy lines."""
    rows = [(c, name, _pct(iou), _pct(acc), inter, union)
            for c, name, iou, acc, inter, union in iou_rows(cm, class_names)]
    table = markdown_table(["trainId", "class", "IoU %", "acc %", "intersection", "union"],
                           rows)
    n_valid = int(np.sum(~np.isnan(cm.iou())))
    return (f"{table}\n\n"
            f"**mIoU {_pct(cm.miou())} %** (mean over the {n_valid} of {cm.num_classes} "
            f"classes present in ground truth or prediction; n/a = absent from both, not "
            f"averaged); pixel accuracy {_pct(cm.pixel_accuracy())} %; mean class accuracy "
            f"{_pct(cm.mean_class_accuracy())} %; {cm.total} labelled pixels.\n")


def save_iou_table(cm, out_dir, class_names=TRAIN_CLASSES, stem="iou", extra=None):
    """Write ``<stem>.csv`` (one row per class plus a ``mean`` row), ``<stem>.md`` and
    ``<stem>.json`` (every metric and the confusion matrix) to ``out_dir``, atomically.
    ``extra``: JSON-able dict merged into the JSON (e.g. model and data paths).
    Returns the three paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["train_id", "class", "iou", "accuracy", "intersection", "union"])

    def num(x):
        return "nan" if math.isnan(x) else f"{x:.6f}"

    for c, name, iou, acc, inter, union in iou_rows(cm, class_names):
        writer.writerow([c, name, num(iou), num(acc), inter, union])
    writer.writerow(["", "mean", num(cm.miou()), num(cm.mean_class_accuracy()), "", ""])
    paths = out / f"{stem}.csv", out / f"{stem}.md", out / f"{stem}.json"
    with atomic_write(paths[0], "w") as f:
        f.write(buf.getvalue())
    with atomic_write(paths[1], "w") as f:
        f.write(format_markdown(cm, class_names))
    data = {**cm.summary(), "classes": list(class_names), "ignore_index": cm.ignore_index,
            "confusion_matrix": cm.matrix.tolist(), **(extra or {})}
    with atomic_write(paths[2], "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    return paths


# ---------------------------------------------------------------------------- eval.py
def evaluate(segmenter, root, split="val", limit=0, predictions_dir=None, show_progress=True):
    """Score ``segmenter`` (a :class:`d3net_seg.inference.Segmenter`) on a Cityscapes-layout
    split: every image at full resolution, single scale, one at a time; the prediction is the
    argmax of the logits. Returns the :class:`ConfusionMatrix` summed over the split.
    ``predictions_dir``: also write ``<dir>/<city>/<name>_labels.png`` (trainId palette PNGs).
    """
    from common.data.cityscapes import Cityscapes
    from common.terminal import progress

    from . import palette as _palette

    dataset = Cityscapes(root, split)
    n = len(dataset) if not limit else min(int(limit), len(dataset))
    cm = ConfusionMatrix(segmenter.num_classes)
    for i in progress(range(n), desc=f"eval {split}", unit="img", disable=not show_progress):
        image, label = dataset[i]
        image = image.transpose(1, 2, 0)
        logits = segmenter.forward(segmenter.preprocess(image))[0]
        pred = np.argmax(logits, axis=0).astype(np.uint8)
        cm.update(pred, label)
        if predictions_dir is not None:
            img_path = dataset.pairs[i][0]
            name = img_path.name[:-len("_leftImg8bit.png")]
            _palette.save_labels(Path(predictions_dir) / img_path.parent.name
                                 / f"{name}_labels.png", pred, segmenter.palette)
    return cm


def build_eval_parser():
    from common.cli import NonNegativeInt, Parser
    from common.context import add_context_args
    from common.pretrained import add_list_models_flag
    from common.runtime.backends import add_backend_args

    from .weights import PRETRAINED

    p = Parser(
        description="mIoU of a D3Net segmentation model on a Cityscapes split (19 train "
                    "classes, label 255 ignored, intersections and unions summed over the "
                    "split, single scale at full resolution). Prints the per-class table and "
                    "writes it to <out-dir>/iou.{csv,md,json}; <out-dir>/evaluation.json "
                    "records which model and settings produced them.")
    p.add_argument("--model", "-m", required=True, metavar="{d3net-s,d3net-l,PATH.h5}",
                   help="published Cityscapes weights by name (downloaded once) or an nnabla "
                        ".h5 parameter file (e.g. a training run's final.h5)")
    p.add_argument("--network-config", default=None, metavar="{D3Net_S,D3Net_L,PATH.yaml}",
                   help="network config (our configs/D3Net_*.yaml layout or the official flat "
                        "one); default: the one of the named model, else the "
                        "network_config.yaml beside the .h5 (training runs write it), else "
                        "the bundled config the parameter shapes match")
    p.add_argument("--root", required=True, help="Cityscapes root (leftImg8bit/, gtFine/)")
    p.add_alias("--data-dir", "root")
    p.add_argument("--split", default="val", choices=["train", "val"])
    p.add_argument("--out-dir", "-o", required=True,
                   help="folder for the tables; it may only hold results of the same model "
                        "and settings")
    p.add_argument("--limit", type=NonNegativeInt, default=0,
                   help="score only the first N images (0 = all)")
    p.add_argument("--save-predictions", action="store_true",
                   help="also write <out-dir>/predictions/<city>/<name>_labels.png")
    add_backend_args(p)
    add_context_args(p)
    add_list_models_flag(p, PRETRAINED)
    return p


def eval_main(argv=None):
    """Entry point of ``eval.py`` (run it through :func:`common.cli.run_cli`)."""
    import os
    import time

    from common.data.cityscapes import list_pairs
    from common.runtime.backends import announce_on_stderr, choose_backend
    from common.fileio import check_output_location
    from common.results import RECORD_NAME, claim_results_folder, fingerprint

    from .inference import AUTO_ORDER, make_segmenter, network_config_for
    from .weights import load_weights, resolve_model

    args = build_eval_parser().parse_args(argv)
    check_output_location(args.out_dir, "--out-dir")
    list_pairs(args.root, args.split)  # a missing / empty split fails before any loading
    weights_path, config_name = resolve_model(args.model)
    params, config = load_weights(weights_path, network_config_for(weights_path, config_name,
                                                                   args.network_config))
    args.backend = choose_backend(args.backend, args.context, AUTO_ORDER,
                                  what="D3Net segmentation", announce=announce_on_stderr)
    # Everything that changes the scores (the context only moves the last float bits; the
    # runtime is the one auto chose).
    settings = {"model": fingerprint(weights_path), "network": config["model"],
                "preprocess": config["preprocess"], "root": os.path.abspath(args.root),
                "split": args.split, "limit": args.limit, "backend": args.backend}
    fresh = not (Path(args.out_dir) / RECORD_NAME).exists()
    out = claim_results_folder(args.out_dir, settings, "iou.*")
    segmenter = make_segmenter(args, params, config)
    start = time.time()
    preds = out / "predictions" if args.save_predictions else None
    try:
        cm = evaluate(segmenter, args.root, args.split, args.limit, preds)
    except BaseException:
        if fresh:  # no scores came of it: the folder claims none
            _unclaim(out, RECORD_NAME)
        raise
    elapsed = time.time() - start
    names = TRAIN_CLASSES if cm.num_classes == NUM_CLASSES else tuple(
        f"class {c}" for c in range(cm.num_classes))
    save_iou_table(cm, out, names, extra={
        "model": os.fspath(weights_path), "config": config.get("name"),
        "root": os.fspath(args.root), "split": args.split, "seconds": round(elapsed, 2)})
    print(format_markdown(cm, names))
    print(f"mIoU {100 * cm.miou():.2f} % on {args.split} of {args.root} "
          f"({elapsed:.1f} s); tables in {out}/iou.{{csv,md,json}}")
    return 0


def _unclaim(out, record_name):
    """Remove the record this call wrote (and the folder if nothing else is in it)."""
    (out / record_name).unlink(missing_ok=True)
    try:
        out.rmdir()
    except OSError:  # predictions were written: keep them
        pass
