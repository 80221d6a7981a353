"""Influence-scoring benchmark: per-sample loop (the reference's minibatch of one) vs batched.

Run (from the repository root)::

    .venv/bin/python data-cleansing/bench/bench_scoring.py                   # CNN, mnist5k
    .venv/bin/python data-cleansing/bench/bench_scoring.py --model mlp --lr 0.02

Trains one run on the bundled MNIST subset (``mnist5k``: 3,500 training images; a
stratified ``--n-train`` subset if given) with every traced step's parameters cached,
unless ``OUT/run/summary.json`` already exists (an interrupted training continues), then
scores every training sample of the traced epoch(s) once per implementation of
``--impls`` (default ``loop`` then ``batched``), all in this one process. ``impl="loop"``
takes each sample's gradient through a minibatch of one, as the reference does;
``impl="batched"`` gets every per-sample dot product of a step from one pass over the
whole batch.

For each implementation the table gives the wall and CPU time (this process; other jobs
on the machine disturb it less) of the whole scoring, split into the per-sample dot
products (``influence.step_dots``), the Hessian-vector products
(``influence.hessian_vector``, identical work for every implementation) and the rest
(parameter loading, validation gradient, graph construction); then the time ratio to
the first implementation, and the largest score difference. The cache sizes compare
what each method reads: ``final`` the final parameters only, ``hara`` the parameters of
every traced step. The timers wrap the module functions, so the scores are unchanged.
"""
import json
import time
from pathlib import Path

import numpy as np

from common.cli import Parser
from common.fileio import check_output_location


class Timers:
    """Wall and CPU seconds spent inside wrapped module functions."""

    def __init__(self):
        self.wall, self.cpu = {}, {}

    def wrap(self, module, name, label):
        original = getattr(module, name)

        def timed(*args, **kwargs):
            w, c = time.perf_counter(), time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                self.wall[label] = self.wall.get(label, 0.0) + time.perf_counter() - w
                self.cpu[label] = self.cpu.get(label, 0.0) + time.process_time() - c

        setattr(module, name, timed)
        return original

    def reset(self):
        self.wall.clear()
        self.cpu.clear()


def main(argv=None):
    from datacleansing.influence import HESSIANS, IMPLS
    from datacleansing.options import add_experiment_args, refuse_multi_process

    p = Parser(description=__doc__.splitlines()[0])
    add_experiment_args(p, epochs=1, out_dir="runs/dc-bench")
    p.add_argument("--method", default="final", choices=["final", "hara"])
    p.add_argument("--hessian", default="reference", choices=HESSIANS)
    p.add_argument("--impls", nargs="+", choices=IMPLS, default=["loop", "batched"])
    args = p.parse_args(argv)
    refuse_multi_process()
    check_output_location(args.out_dir, "--out-dir")

    from common.report import markdown_table
    from datacleansing import data as D
    from datacleansing import influence as I
    from datacleansing import trace as T

    splits = D.stratified_subset(D.load("mnist5k"), args.n_train or None, 0)
    cfg = T.TrainConfig(model=args.model, epochs=args.epochs, batch_size=args.batch_size,
                        lr=args.lr, trace_epochs=args.trace_epochs, cache="all", seed=0)
    run = Path(args.out_dir) / "run"
    if not T.is_finished(run, cfg):
        t = time.time()
        T.train(cfg, splits, run, resume=True, quiet=args.quiet)
        print(f"trained {args.model} ({args.epochs} epochs) in {time.time() - t:.0f}s", flush=True)
    summary = json.loads((run / "summary.json").read_text())
    sizes = T.cache_sizes(run)
    steps = T.read_trace(run / "trace.npz")
    n_scored = sum(len(s.batch) for s in steps)

    timers = Timers()
    timers.wrap(I, "step_dots", "dots")
    timers.wrap(I, "hessian_vector", "hvp")
    results = {}
    for impl in args.impls:
        timers.reset()
        w, c = time.perf_counter(), time.process_time()
        scores = I.compute_influence(run, splits, args.model, method=args.method, impl=impl,
                                     hessian=args.hessian, cfg=cfg, quiet=args.quiet)
        wall, cpu = time.perf_counter() - w, time.process_time() - c
        results[impl] = {"scores": scores, "wall": wall, "cpu": cpu, "dots_wall":
                         timers.wall.get("dots", 0.0), "dots_cpu": timers.cpu.get("dots", 0.0),
                         "hvp_wall": timers.wall.get("hvp", 0.0),
                         "hvp_cpu": timers.cpu.get("hvp", 0.0)}
        print(f"{impl}: {wall:.1f}s wall, {cpu:.1f}s CPU", flush=True)

    base = args.impls[0]
    ref = results[base]["scores"]
    scale = float(np.max(np.abs(ref)))
    rows = []
    for impl, r in results.items():
        diff = float(np.max(np.abs(r["scores"] - ref)))
        rows.append([impl, f"{r['wall']:.1f}", f"{r['cpu']:.1f}",
                     f"{r['dots_wall']:.1f} / {r['dots_cpu']:.1f}",
                     f"{r['hvp_wall']:.1f} / {r['hvp_cpu']:.1f}",
                     f"{r['wall'] - r['dots_wall'] - r['hvp_wall']:.1f}",
                     f"{r['wall'] / results[base]['wall']:.3f}",
                     f"{r['cpu'] / results[base]['cpu']:.3f}",
                     f"{diff:.2e} ({diff / scale:.1e})"])
    table = markdown_table(
        ["impl", "wall s", "CPU s", "dots wall/CPU s", "HVP wall/CPU s", "other wall s",
         f"wall / {base}", f"CPU / {base}", f"max |score - {base}| (rel. to max |score|)"],
        rows)
    cache = markdown_table(
        ["cache", "files", "bytes", "MB"],
        [["final (Suzuki et al.)", 1, sizes["final_bytes"], f"{sizes['final_bytes'] / 1e6:.3f}"],
         ["all traced steps (Hara et al.)", sizes["all_steps_files"], sizes["all_steps_bytes"],
          f"{sizes['all_steps_bytes'] / 1e6:.1f}"]])
    print(f"\n{args.model} on mnist5k: {len(splits.y_train)} training samples, {len(steps)} "
          f"traced steps ({n_scored} per-sample scores), batch {args.batch_size}, method "
          f"{args.method}, hessian {args.hessian}; trained test accuracy "
          f"{summary['test_accuracy']:.4f}\n")
    print(table)
    print()
    print(cache)
    print(f"\ncache ratio all/final: {sizes['all_steps_bytes'] / sizes['final_bytes']:.0f}x")
    return 0


if __name__ == "__main__":
    from common.cli import run_cli
    run_cli(main)
