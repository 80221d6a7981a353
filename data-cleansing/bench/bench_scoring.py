"""Influence-scoring benchmark: the default implementation against the one-sample loop, per model.

Run (from the repository root; about 20 minutes on a 2-core CPU, most of it the CNN)::

    .venv/bin/python data-cleansing/bench/bench_scoring.py --out-dir runs/dc-bench

For every model of ``--models`` (default: the reference CNN, the MLP and logistic
regression) a run is trained on the bundled MNIST subset (``mnist5k``: 3,500 training
images; a stratified ``--n-train`` subset if given) with the settings of ``TRAINING``, every
traced step's parameters cached, unless ``OUT/<model>/summary.json`` already exists (an
interrupted training continues). Then every training sample of the traced epoch is scored
by the default implementation (``influence.DEFAULT_IMPL``, what ``score.py``, ``sweep.py``
and ``cleanse.py`` use), by ``impl="loop"`` (each sample's gradient through a minibatch of
one, as the reference) and by any ``--impls`` given, all in this one process. With
``--rounds R`` every implementation scores R times, in alternating order, and its fastest
round counts (other jobs on the machine only ever slow a round down).

Printed: per model the CPU and wall time of the whole scoring for each implementation, its
ratio to the loop, and its largest score difference to the loop (relative to the largest
loop score); where the default's CPU time goes, per model (the parts are the module
functions the scoring calls, timed by wrapping them, so the scores are unchanged); and
the parameter caches each method reads.
"""
import json
import time
from pathlib import Path

import numpy as np

from common.cli import NonNegativeInt, Parser, PositiveInt
from common.fileio import check_output_location

MODELS = ("cnn", "mlp", "logreg")
# Training of the benchmarked runs: 1 traced epoch of 55 steps of 64 on all 3,500 images.
TRAINING = {"cnn": {"epochs": 1, "lr": 0.05}, "mlp": {"epochs": 5, "lr": 0.02},
            "logreg": {"epochs": 5, "lr": 0.05}}
# The timed parts of the scoring, in report order: (label, the functions timed, whether the
# part lies inside the one before it).
PARTS = (("Hessian-vector products", ("influence.hessian_vector",), False),
         ("per-sample dot products", ("influence.step_dots",), False),
         ("of which the per-sample contraction (reverse)", ("models.LayerProbe.dots",), True),
         ("validation gradient", ("influence.validation_gradient",), False),
         ("parameters (read, load)", ("influence.read_params", "influence.load_snapshot"),
          False),
         ("data (batch gather, augmentation)", ("influence.step_batch",), False))
TIMING_HEADERS = ["model", "impl", "CPU s", "wall s", "CPU / loop", "wall / loop",
                  "max abs(score - loop) / max abs(loop score)"]


class Timers:
    """CPU seconds spent inside wrapped functions, per label."""

    def __init__(self):
        self.cpu = {}

    def wrap(self, owner, name, label):
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            start = time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                self.cpu[label] = self.cpu.get(label, 0.0) + time.process_time() - start

        setattr(owner, name, timed)

    def reset(self):
        self.cpu = {}


def wrap_parts(timers):
    from datacleansing import influence, models
    owners = {"influence": influence, "models": models}
    for label, paths, _ in PARTS:
        for path in paths:
            *owner_path, name = path.split(".")
            owner = owners[owner_path[0]]
            for attr in owner_path[1:]:
                owner = getattr(owner, attr)
            timers.wrap(owner, name, label)


def score_once(run, splits, model, impl, cfg, args, timers):
    from datacleansing import influence as I
    timers.reset()
    wall, cpu = time.perf_counter(), time.process_time()
    scores = I.compute_influence(run, splits, model, method=args.method, impl=impl,
                                 hessian=args.hessian, cfg=cfg, quiet=args.quiet)
    return {"scores": scores, "wall": time.perf_counter() - wall,
            "cpu": time.process_time() - cpu, "parts": dict(timers.cpu)}


def bench_model(model, args, timers):
    """Train (or reuse) the model's run and score it with every implementation."""
    from datacleansing import data as D
    from datacleansing import influence as I
    from datacleansing import trace as T

    splits = D.stratified_subset(D.load("mnist5k"), args.n_train or None, 0)
    cfg = T.TrainConfig(model=model, batch_size=64, trace_epochs=1, cache="all", seed=0,
                        **TRAINING[model])
    run = Path(args.out_dir) / model
    if not T.is_finished(run, cfg):
        start = time.time()
        T.train(cfg, splits, run, resume=True, quiet=args.quiet)
        print(f"trained {model} in {time.time() - start:.0f} s", flush=True)
    impls = list(dict.fromkeys([I.DEFAULT_IMPL, "loop"] + args.impls))
    best = {}
    for round_ in range(args.rounds):
        for impl in impls if round_ % 2 == 0 else impls[::-1]:
            result = score_once(run, splits, model, impl, cfg, args, timers)
            print(f"{model} {impl} (round {round_ + 1}): {result['cpu']:.1f} s CPU, "
                  f"{result['wall']:.1f} s wall", flush=True)
            if impl not in best or result["cpu"] < best[impl]["cpu"]:
                best[impl] = result
    summary = json.loads((run / "summary.json").read_text())
    steps = T.read_trace(run / "trace.npz")
    return {"results": best, "impls": impls, "cache": T.cache_sizes(run), "steps": len(steps),
            "scored": sum(len(s.batch) for s in steps), "accuracy": summary["test_accuracy"]}


def timing_rows(model, bench):
    """Rows of TIMING_HEADERS: every implementation against the loop."""
    from datacleansing.influence import DEFAULT_IMPL
    results = bench["results"]
    loop = results["loop"]
    scale = float(np.max(np.abs(loop["scores"])))
    rows = []
    for impl in bench["impls"]:
        r = results[impl]
        diff = float(np.max(np.abs(r["scores"] - loop["scores"])))
        name = f"{impl} (default)" if impl == DEFAULT_IMPL else impl
        rows.append([model, name, f"{r['cpu']:.1f}", f"{r['wall']:.1f}",
                     f"**{r['cpu'] / loop['cpu']:.3f}**" if impl == DEFAULT_IMPL
                     else f"{r['cpu'] / loop['cpu']:.3f}",
                     f"{r['wall'] / loop['wall']:.3f}", f"{diff / scale:.1e}"])
    return rows


def breakdown_table(benches):
    """Where the default implementation's CPU time goes, per model."""
    from common.report import markdown_table
    from datacleansing.influence import DEFAULT_IMPL
    models = list(benches)
    rows = []
    for label, _, nested in PARTS:
        rows.append([f"- {label}" if nested else label]
                    + [_share(benches[m]["results"][DEFAULT_IMPL], label) for m in models])
    rest = []
    for m in models:
        r = benches[m]["results"][DEFAULT_IMPL]
        timed = sum(r["parts"].get(label, 0.0) for label, _, nested in PARTS if not nested)
        rest.append(_format_share(r["cpu"] - timed, r["cpu"]))
    rows.append(["rest (graph construction, parameter update, progress)"] + rest)
    rows.append(["total"] + [f"{benches[m]['results'][DEFAULT_IMPL]['cpu']:.1f}"
                             for m in models])
    return markdown_table([f"{DEFAULT_IMPL} (default): CPU s (share)"] + models, rows)


def _share(result, label):
    return _format_share(result["parts"].get(label, 0.0), result["cpu"])


def _format_share(seconds, total):
    return f"{seconds:.2f} ({seconds / total:.0%})"


def main(argv=None):
    from datacleansing.influence import HESSIANS, IMPLS
    from datacleansing.options import refuse_multi_process

    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--impls", nargs="+", choices=IMPLS, default=[],
                   help="further implementations to time (the default and loop always run)")
    p.add_argument("--rounds", type=PositiveInt, default=1,
                   help="scorings per implementation, in alternating order; the fastest counts")
    p.add_argument("--n-train", type=NonNegativeInt, default=0,
                   help="stratified training subset (0 = all 3,500)")
    p.add_argument("--method", default="final", choices=["final", "hara"])
    p.add_argument("--hessian", default="reference", choices=HESSIANS)
    p.add_argument("--out-dir", default="runs/dc-bench", help="folder of the trained runs")
    p.add_alias("--out", "out_dir")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    refuse_multi_process()
    check_output_location(args.out_dir, "--out-dir")

    from common.report import markdown_table

    timers = Timers()
    wrap_parts(timers)
    benches = {m: bench_model(m, args, timers) for m in dict.fromkeys(args.models)}

    print(f"\nmethod {args.method}, hessian {args.hessian}, batch 64, fastest of {args.rounds} "
          f"round(s); CPU time of this process, wall time also counts waiting for other jobs\n")
    print(markdown_table(TIMING_HEADERS, [row for model, bench in benches.items()
                                          for row in timing_rows(model, bench)]))
    print()
    for model, bench in benches.items():
        print(f"{model}: {bench['scored']} per-sample scores over {bench['steps']} traced steps; "
              f"trained test accuracy {bench['accuracy']:.4f}")
    print()
    print(breakdown_table(benches))
    print()
    print(markdown_table(
        ["model", "final parameters (Suzuki et al.)", "every traced step (Hara et al.)",
         "ratio"],
        [[m, f"{b['cache']['final_bytes'] / 1e6:.3f} MB ({b['cache']['final_bytes']:,} B)",
          f"{b['cache']['all_steps_bytes'] / 1e6:.1f} MB in {b['cache']['all_steps_files']} "
          f"files", f"{b['cache']['all_steps_bytes'] / b['cache']['final_bytes']:.0f}x"]
         for m, b in benches.items()]))
    return 0


if __name__ == "__main__":
    from common.cli import run_cli
    run_cli(main)
