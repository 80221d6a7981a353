"""D3Net semantic segmentation benchmark: images per second on the CPU with the nnabla and
the ONNX backend (network exported with nnabla's own ONNX converter, run by onnxruntime).

Run (from the repository root)::

    .venv/bin/python d3net/bench/bench_seg.py                    # D3Net-S, 1024x2048
    .venv/bin/python d3net/bench/bench_seg.py --images 3 --json runs/bench_seg.json

Weights: the parity fixture ``$FIXTURES_DIR/d3net-seg/D3Net_S.h5`` if present (random
values, official names and shapes), else random weights of the official D3Net-S shapes
(``--weights random``), or a ``.h5`` given with ``--weights PATH`` (``--network-config``
names its network config, default ``D3Net_S``). Inputs: synthetic street-like images (fixed
seed).

Each backend runs in its own child process (``bench_seg.py --variant NAME --workdir DIR``,
peak RSS per variant, the harness of :mod:`common.dev.bench`): ``Segmenter(weights,
backend=...)`` is built
(``setup``; for ONNX this includes the one-time export of the 1024x2048 graph into a fresh
cache folder), one warm-up image is segmented (``first image``: nnabla builds its graph,
onnxruntime allocates its buffers), then ``--images`` images are timed; images per second
= images / their total time (logits, softmax and labels, as ``Segmenter.segment``).
The logits of every timed image are compared between the backends.
"""
import functools
import os
import sys
import time

import numpy as np

from common.cli import PositiveInt
from common.dev import bench
from common.cli import run_cli

README = "d3net/bench/README.md"
WORKDIR_PREFIX = "d3net-seg-bench-"
VARIANTS = ("nnabla", "onnx")


def synth_image(height, width, seed):
    """A street-like RGB uint8 image: sky / building / road bands, a few discs and bars,
    smooth gradients and noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.zeros((height, width, 3), np.float32)
    horizon = height * rng.uniform(0.35, 0.5)
    img[y < horizon] = (110, 160, 230)
    img[(y >= horizon) & (y < height * 0.65)] = (120, 110, 100)
    img[y >= height * 0.65] = (90, 90, 95)
    for _ in range(12):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        r = rng.uniform(0.02, 0.1) * height
        img[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    for _ in range(8):
        cx, w = rng.uniform(0, width), rng.uniform(0.005, 0.03) * width
        img[(np.abs(x - cx) < w) & (y > horizon * 0.5)] = rng.uniform(0, 255, 3)
    img += 30 * np.sin(x / width * 7 + rng.uniform(0, 6))[..., None]
    img += rng.uniform(-15, 15, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- children

def child_prepare(args):
    from d3net_seg.model import D3NetSegmentation, load_config

    config = load_config(args.network_config)
    weights = args.weights
    if weights == "fixture":
        weights = bench.fixture_weights(f"d3net-seg/{config.get('name', args.network_config)}.h5")
        source = f"fixture {weights}"
    elif weights == "random":
        model = D3NetSegmentation(config)
        bench.randomize_parameters(model.create_parameters(), np.random.default_rng(args.seed))
        weights = bench.work_path(args, "weights.h5")
        model.save_parameters(weights)
        source = f"random ({args.network_config} shapes)"
    else:
        source = weights
    with open(bench.work_path(args, "weights.txt"), "w") as fh:
        fh.write(weights)
    for i in range(args.images + 1):
        np.save(bench.work_path(args, f"image{i}.npy"),
                synth_image(args.height, args.width, args.seed + i))
    from d3net_seg.weights import load_weights

    params, _ = load_weights(weights, args.network_config)
    return {"weights": source, "nb_params": int(sum(v.size for v in params.values()))}


def child_run(args, backend):
    from d3net_seg.inference import Segmenter
    from d3net_seg.weights import load_weights

    if backend == "onnx":  # a fresh cache: the one-time export is part of the setup time
        os.environ["NNABLA_RESEARCH_CACHE"] = bench.work_path(args, "cache")
    with open(bench.work_path(args, "weights.txt")) as fh:
        weights = fh.read().strip()
    t0 = time.perf_counter()
    params, config = load_weights(weights, args.network_config)
    seg = Segmenter(params, config, backend=backend)
    export_s = None
    if backend == "onnx":
        te = time.perf_counter()
        seg._runner.prepare(1, args.height, args.width)
        export_s = time.perf_counter() - te
    t_setup = time.perf_counter() - t0
    rss_ready = bench.rss_mb()

    t1 = time.perf_counter()
    seg.segment(np.load(bench.work_path(args, "image0.npy")))
    t_first = time.perf_counter() - t1
    times = []
    for i in range(1, args.images + 1):
        image = np.load(bench.work_path(args, f"image{i}.npy"))
        ta = time.perf_counter()
        out = seg.segment(image)
        times.append(time.perf_counter() - ta)
        np.save(bench.work_path(args, f"logits_{backend}_{i}.npy"), out.logits)
        np.save(bench.work_path(args, f"labels_{backend}_{i}.npy"), out.labels)
    result = {"setup_s": t_setup, "first_image_s": t_first, "image_s": times,
              "images_per_s": len(times) / sum(times), "rss_ready_mb": rss_ready,
              "graph_builds": seg.graph_builds}
    if backend == "onnx":
        runner = seg._runner
        result.update(export_s=export_s, exports=runner.exports,
                      onnx_bytes=os.path.getsize(runner.last_export.path))
    return result


CHILDREN = {"prepare": child_prepare,
            **{backend: functools.partial(child_run, backend=backend) for backend in VARIANTS}}


# ----------------------------------------------------------------------------- parent

def child_args(args):
    return ["--images", str(args.images), "--height", str(args.height), "--width",
            str(args.width), "--weights", args.weights, "--network-config",
            args.network_config]


def describe(r):
    return (f"setup {r['setup_s']:.1f} s, first image {r['first_image_s']:.1f} s, "
            f"{r['images_per_s']:.4f} images/s, peak RSS {r['peak_rss_mb']:.0f} MB")


def report(args, prep, results):
    """The markdown report and (no) extra JSON entries."""
    out = []
    p = out.append
    p("# D3Net segmentation benchmark\n")
    p(f"- model: {args.network_config}, {prep['nb_params'] / 1e6:.2f} M parameters; weights: "
      f"{prep['weights']}")
    p(f"- input: {args.images} synthetic RGB images of {args.height}x{args.width} (+1 warm-up), "
      f"batch 1, CPU")
    p(bench.machine_line(args))
    p("| backend | setup s | first image s | s / image (timed) | images / s | process s "
      "| RSS after setup MB | peak RSS MB |")
    p("|---|---:|---:|---|---:|---:|---:|---:|")
    for v, r in bench.in_order(results, VARIANTS):
        p(f"| {v} | {r['setup_s']:.2f} | {r['first_image_s']:.2f} "
          f"| {', '.join(f'{t:.2f}' for t in r['image_s'])} | {r['images_per_s']:.4f} "
          f"| {r['process_s']:.1f} | {r['rss_ready_mb']:.0f} | {r['peak_rss_mb']:.0f} |")
    o = results.get("onnx")
    if o:
        p(f"\nonnx setup includes the one-time export of the {args.height}x{args.width} graph "
          f"(.nnp -> nnabla-converter -> .onnx, {o['onnx_bytes'] / 1e6:.1f} MB, then the "
          f"onnxruntime session): {o['export_s']:.2f} s; later runs (and images of the same "
          f"size) reuse the cached file (exports this run: {o['exports']}).")
    if all(v in results for v in VARIANTS):
        diffs, rels, agree = [], [], []
        for i in range(1, args.images + 1):
            a = np.load(bench.work_path(args, f"logits_onnx_{i}.npy"))
            b = np.load(bench.work_path(args, f"logits_nnabla_{i}.npy"))
            d = float(np.abs(a.astype(np.float64) - b).max())
            diffs.append(d)
            rels.append(d / float(np.abs(b).max()))
            la = np.load(bench.work_path(args, f"labels_onnx_{i}.npy"))
            lb = np.load(bench.work_path(args, f"labels_nnabla_{i}.npy"))
            agree.append(float((la == lb).mean()))
        speed = o["images_per_s"] / results["nnabla"]["images_per_s"]
        p("\n## Summary\n")
        p(f"- throughput: onnx {o['images_per_s']:.4f} images/s vs nnabla "
          f"{results['nnabla']['images_per_s']:.4f} images/s -> {speed:.2f}x")
        p(f"- logits max abs diff onnx vs nnabla: {max(diffs):.3g} "
          f"({max(rels):.3g} x max|logits|; goal <= 1e-3: "
          f"{'OK' if max(rels) <= 1e-3 else 'FAIL'}); labels equal on "
          f"{100 * min(agree):.4f} % of the pixels (worst image)")
    return "\n".join(out), {}


def add_arguments(ap):
    ap.add_argument("--images", type=PositiveInt, default=2,
                    help="timed images per backend (2)")
    ap.add_argument("--height", type=PositiveInt, default=1024)
    ap.add_argument("--width", type=PositiveInt, default=2048)
    ap.add_argument("--network-config", default="D3Net_S",
                    help="network config (D3Net_S)")
    ap.add_argument("--weights", default="fixture",
                    help="'fixture' ($FIXTURES_DIR/d3net-seg/<config>.h5, default), 'random' "
                         "(official shapes) or an .h5 path")


def check_args(args):
    if args.weights not in ("fixture", "random"):
        args.weights = os.path.abspath(args.weights)


if __name__ == "__main__":
    run_cli(lambda argv: bench.benchmark_main(sys.modules[__name__], argv))
