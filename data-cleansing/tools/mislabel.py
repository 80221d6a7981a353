"""Mislabel experiment: do the most harmful samples find flipped labels, and does removing
them help?

On the bundled MNIST images (``mnist5k``, optionally a stratified training subset), a
fraction of the training labels (default 10 %) is flipped to another random class. The
network (default: the reference CNN) is trained on the noisy labels with every traced
step's parameters cached (``cache="all"``), then scored with ``final`` (Suzuki et al.,
final parameters only), ``hara`` (SGD-influence, per-step parameters) and ``random``.

Reported per seed and method:

* detection: how many flipped samples are among the ``--top`` fraction (default 10 %)
  of most harmful (lowest) scores; chance is the flip fraction;
* cleansing: test accuracy after replaying the traced epochs without the k most
  harmful samples (``retrain.retrain(mode="replay")``) for every k of ``--counts``,
  next to k = 0 (the plain replay) and to removing exactly the flipped samples (oracle);
  ``--random-trials`` more random removal orders show how much the replay's accuracy
  moves by chance.

Every result is stored as it is made (``OUT/seed<s>/``: the run, ``scores_<method>.npz``,
``retrain.json``), so an interrupted experiment continues where it stopped (a run with
other training options in the same folder is refused). The tables go to
``OUT/mislabel.md`` and ``OUT/mislabel.json``. ``--hessian textbook`` scores the same runs
again (``scores_<method>-textbook.npz``, ``OUT/mislabel_textbook.md``); ``--no-retrain``
reports the detection only.

    .venv/bin/python data-cleansing/tools/mislabel.py --out-dir runs/dc-mislabel --seeds 0 1
"""
import json
import time
from pathlib import Path

import numpy as np

from common.cli import Bounded, NonNegativeInt, Parser, PositiveInt
from common.fileio import atomic_write, check_output_location, write_npz

PAPER_METHODS = ("final", "hara", "random")    # the default; any of influence.METHODS


def _load_json(path, default):
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else default


def _save_json(path, obj):
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2)


def detection(scores, flipped, top):
    """(number of flipped samples among the ``top`` fraction lowest scores, that count)."""
    k = int(round(top * len(scores)))
    worst = np.argsort(scores, kind="stable")[:k]
    return int(np.isin(worst, flipped).sum()), k


def run_seed(seed, args, splits, out):
    from datacleansing import data as D
    from datacleansing import influence as I
    from datacleansing import retrain as R
    from datacleansing import trace as T

    noisy, flipped = D.flip_labels(splits.y_train, args.flip, splits.n_classes, seed)
    cfg = T.TrainConfig(model=args.model, epochs=args.epochs, batch_size=args.batch_size,
                        lr=args.lr, trace_epochs=args.trace_epochs, cache="all", seed=seed)
    run = out / "run"
    timing = _load_json(out / "timing.json", {})
    if not T.is_finished(run, cfg):
        t = time.time()
        T.train(cfg, splits, run, labels=noisy, resume=True, quiet=args.quiet)
        timing["train_s"] = time.time() - t
        _save_json(out / "timing.json", timing)
    summary = json.loads((run / "summary.json").read_text())
    print(f"seed {seed}: trained on {len(flipped)} flipped labels of {len(noisy)}: test acc "
          f"{summary['test_accuracy']:.4f}", flush=True)

    scores = {}
    for method, label in zip(args.methods, args.labels):
        path = out / f"scores_{label}.npz"
        if not path.is_file():
            t = time.time()
            s = I.compute_influence(run, splits, args.model, method=method, impl=args.impl,
                                    hessian=args.hessian, labels=noisy, cfg=cfg, seed=seed,
                                    quiet=args.quiet, dataset="mnist5k")
            timing[f"influence_{label}_s"] = time.time() - t
            _save_json(out / "timing.json", timing)
            with atomic_write(path, "wb") as f:
                write_npz(f, {"scores": s})
        with np.load(path) as z:
            scores[label] = z["scores"]

    done = _load_json(out / "retrain.json", {})
    jobs = [("none", 0, [])]
    jobs += [("oracle", len(flipped), flipped)]
    for label in args.labels:
        order = R.removal_order(scores[label])
        jobs += [(label, k, order[:k]) for k in args.counts]
    if "random" in args.methods:          # further random removals: the replay's spread
        for t in range(1, args.random_trials):
            order = R.removal_order(I.compute_influence(run, splits, args.model, method="random",
                                                        seed=seed + 1000 * t))
            jobs += [(f"random{t}", k, order[:k]) for k in args.counts]
    for method, k, removed in ([] if args.no_retrain else jobs):
        key = f"{method}/{k}"
        if key in done:
            continue
        t = time.time()
        loss, acc = R.retrain(run, cfg, splits, removed, mode="replay", labels=noisy)
        done[key] = {"method": method, "removed": int(k), "test_loss": loss, "test_accuracy": acc,
                     "flipped_removed": int(np.isin(removed, flipped).sum()),
                     "seconds": time.time() - t}
        _save_json(out / "retrain.json", done)
        print(f"seed {seed}: replay without {key}: test acc {acc:.4f} "
              f"({time.time() - t:.0f}s)", flush=True)

    det = {m: detection(scores[m], flipped, args.top) for m in args.labels}
    agreement = None
    final, hara = (args.labels[args.methods.index(m)] if m in args.methods else None
                   for m in ("final", "hara"))
    if final and hara:
        from scipy import stats
        a, b = scores[final], scores[hara]
        k = int(round(args.top * len(a)))
        agreement = {"pearson": float(stats.pearsonr(a, b)[0]),
                     "spearman": float(stats.spearmanr(a, b)[0]),
                     "top_overlap": int(len(np.intersect1d(np.argsort(a, kind="stable")[:k],
                                                           np.argsort(b, kind="stable")[:k]))),
                     "top_k": k}
    return {"agreement": agreement, "seed": seed, "n_train": len(noisy),
            "n_flipped": int(len(flipped)),
            "trained_test_accuracy": summary["test_accuracy"], "cache": {
                k: summary[k] for k in ("final_bytes", "all_steps_bytes")},
            "detection": {m: {"found": f, "top_k": k, "fraction_of_flipped": f / len(flipped)}
                          for m, (f, k) in det.items()},
            "retrain": list(done.values()), "timing": timing}


def tables(results, args):
    from common.report import markdown_table
    seeds = [r["seed"] for r in results]
    det_rows = []
    for m in args.labels:
        found = [r["detection"][m]["found"] for r in results]
        fr = [r["detection"][m]["fraction_of_flipped"] for r in results]
        det_rows.append([m] + [f"{f} / {r['n_flipped']}" for f, r in zip(found, results)]
                        + [f"{100 * np.mean(fr):.1f} %"])
    det_rows.append(["chance"] + [f"{args.top * r['n_flipped']:.0f} / {r['n_flipped']}"
                                  for r in results] + [f"{100 * args.top:.1f} %"])
    det = markdown_table(["method"] + [f"seed {s}" for s in seeds] + ["mean found"], det_rows)
    if all(r.get("agreement") for r in results):
        det += "\n\nfinal vs hara scores: " + "; ".join(
            f"seed {r['seed']}: Pearson {r['agreement']['pearson']:.3f}, Spearman "
            f"{r['agreement']['spearman']:.3f}, {r['agreement']['top_overlap']} of the "
            f"{r['agreement']['top_k']} most harmful in common" for r in results)

    def acc(r, method, k):
        for row in r["retrain"]:
            if row["method"] == method and row["removed"] == k:
                return row["test_accuracy"]
        return float("nan")

    def flipped(r, method, k):
        for row in r["retrain"]:
            if row["method"] == method and row["removed"] == k:
                return row["flipped_removed"]
        return "?"

    rows = [["none (plain replay)", 0] + [f"{100 * acc(r, 'none', 0):.2f}" for r in results]
            + [f"{100 * np.mean([acc(r, 'none', 0) for r in results]):.2f}"]]
    for k in args.counts:
        for m in args.labels:
            a = [acc(r, m, k) for r in results]
            rows.append([m, k] + [f"{100 * x:.2f} ({flipped(r, m, k)})" for x, r in zip(a, results)]
                        + [f"{100 * np.mean(a):.2f}"])
    if "random" in args.methods and args.random_trials > 1:
        names = ["random"] + [f"random{t}" for t in range(1, args.random_trials)]
        for k in args.counts:
            per_seed = [[acc(r, m, k) for m in names] for r in results]
            rows.append([f"random, mean +- std of {args.random_trials} draws", k]
                        + [f"{100 * np.mean(a):.2f} +- {100 * np.std(a):.2f}" for a in per_seed]
                        + [f"{100 * np.mean(per_seed):.2f}"])
    a = [acc(r, "oracle", r["n_flipped"]) for r in results]
    rows.append(["oracle (all flipped)", "/".join(str(r["n_flipped"]) for r in results)]
                + [f"{100 * x:.2f}" for x in a] + [f"{100 * np.mean(a):.2f}"])
    ret = markdown_table(["removed", "k"] + [f"seed {s} acc % (flipped among removed)"
                                             for s in seeds] + ["mean %"], rows)
    return det, ret


def main(argv=None):
    from datacleansing.influence import DEFAULT_IMPL, HESSIANS, IMPLS, METHODS, SGD_METHODS
    from datacleansing.options import add_experiment_args, refuse_multi_process

    p = Parser(description=__doc__.splitlines()[0])
    add_experiment_args(p, epochs=3, out_dir="runs/dc-mislabel")
    p.add_argument("--flip", type=Bounded(float, 0, 1, low_open=True), default=0.1,
                   help="fraction of labels flipped (< 1)")
    p.add_argument("--top", type=Bounded(float, 0, 1, low_open=True), default=0.1,
                   help="detection: most harmful fraction")
    p.add_argument("--counts", type=NonNegativeInt, nargs="+", default=[35, 175, 350],
                   help="numbers of most harmful samples removed before the replay")
    p.add_argument("--methods", nargs="+", default=list(PAPER_METHODS), choices=METHODS)
    p.add_argument("--impl", default=DEFAULT_IMPL, choices=IMPLS)
    p.add_argument("--hessian", default="reference", choices=HESSIANS)
    p.add_argument("--random-trials", type=PositiveInt, default=1,
                   help="random removal orders per seed and count (the first is 'random')")
    p.add_argument("--seeds", type=NonNegativeInt, nargs="+", default=[0, 1])
    p.add_argument("--no-retrain", action="store_true", help="detection only")
    args = p.parse_args(argv)
    refuse_multi_process()
    if args.flip >= 1:
        p.error("--flip must be below 1")
    out = check_output_location(args.out_dir, "--out-dir")
    # score / result names: the method, tagged with a non-default Hessian scaling
    args.labels = [m if m not in SGD_METHODS or args.hessian == "reference"
                   else f"{m}-{args.hessian}" for m in args.methods]

    from datacleansing import data as D

    splits = D.stratified_subset(D.load("mnist5k"), args.n_train or None, 0)
    results = [run_seed(s, args, splits, out / f"seed{s}") for s in args.seeds]
    det, ret = tables(results, args)
    text = f"Flipped labels found among the {100 * args.top:.0f} % most harmful samples\n\n{det}\n"
    if not args.no_retrain:
        text += (f"\nTest accuracy after replaying the traced epoch(s) without the k most "
                 f"harmful samples\n\n{ret}\n")
    print(text)
    tag = "" if args.hessian == "reference" else f"_{args.hessian}"
    with atomic_write(out / f"mislabel{tag}.md", "w") as f:
        f.write(text)
    _save_json(out / f"mislabel{tag}.json", {"args": vars(args), "results": results})
    return 0


if __name__ == "__main__":
    from common.cli import run_cli
    run_cli(main)
