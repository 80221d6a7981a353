"""D3Net semantic segmentation benchmark: images per second on the CPU of ``infer.py``'s
defaults (``--backend auto``), of the nnabla path and of the official ``infer.py`` flow.

Run (from the repository root)::

    .venv/bin/python d3net/bench/bench_seg.py                    # D3Net-S, 1024x2048
    .venv/bin/python d3net/bench/bench_seg.py --images 3 --json runs/bench_seg.json

Weights: the parity fixture ``$FIXTURES_DIR/d3net-seg/D3Net_S.h5`` if present (random
values, official names and shapes), else random weights of the official D3Net-S shapes
(``--weights random``), or a ``.h5`` given with ``--weights PATH`` (``--network-config``
names its network config, default ``D3Net_S``; ``infer.py``'s default model is D3Net-L, for
which no fixture exists: ``--network-config D3Net_L --weights random``). Inputs: synthetic
street-like images (fixed seed).

Each variant runs in its own child process (``bench_seg.py --variant NAME --workdir DIR``,
peak RSS per variant, the harness of :mod:`common.dev.bench`):

``official``  the official ``infer.py`` flow, which segments one image per run: for every
              image the parameters are loaded and a new nnabla graph of the image's size is
              built and run (written with this repository's nnabla network; the process
              start and imports of each official run are not counted).
``nnabla``    ``Segmenter(weights, backend='nnabla')``: parameters loaded and the graph built
              once; one warm-up image, then the timed images.
``auto``      ``Segmenter(weights)`` with ``infer.py``'s default ``--backend auto`` (a fresh
              ONNX cache, so the one-time export and compile are in ``setup``); one warm-up
              image, then the timed images.
``onnx``, ``openvino``  the same with that backend.

Images per second = timed images / their total time (logits, softmax and labels, as
``Segmenter.segment``; for ``official`` also the loading and graph building of each image).
The logits of every timed image are compared with ``nnabla``'s (or ``official``'s).
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
VARIANTS = ("official", "nnabla", "auto", "onnx", "openvino")
DEFAULT_VARIANTS = ("official", "nnabla", "auto")


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


def _weights(args):
    with open(bench.work_path(args, "weights.txt")) as fh:
        return fh.read().strip()


def _save(args, variant, i, out):
    np.save(bench.work_path(args, f"logits_{variant}_{i}.npy"), out.logits)
    np.save(bench.work_path(args, f"labels_{variant}_{i}.npy"), out.labels)


def child_official(args):
    """One image at a time as the official ``infer.py``: load the parameters, build the
    graph of the image, segment."""
    from d3net_seg.inference import Segmenter

    times = []
    for i in range(1, args.images + 1):
        image = np.load(bench.work_path(args, f"image{i}.npy"))
        ta = time.perf_counter()
        seg = Segmenter(_weights(args), args.network_config, backend="nnabla")
        out = seg.segment(image)
        times.append(time.perf_counter() - ta)
        _save(args, "official", i, out)
        del seg
    return {"setup_s": 0.0, "first_image_s": None, "image_s": times,
            "images_per_s": len(times) / sum(times), "backend": "nnabla"}


def child_run(args, backend):
    from d3net_seg.inference import Segmenter
    from d3net_seg.weights import load_weights

    os.environ["NNABLA_RESEARCH_CACHE"] = bench.work_path(args, f"cache-{backend}")
    t0 = time.perf_counter()
    params, config = load_weights(_weights(args), args.network_config)
    seg = Segmenter(params, config, backend=backend)
    if hasattr(seg._runner, "prepare"):  # export + compile now, not in the warm-up image
        seg._runner.prepare(1, args.height, args.width)
    t_setup = time.perf_counter() - t0
    t1 = time.perf_counter()
    seg.segment(np.load(bench.work_path(args, "image0.npy")))
    t_first = time.perf_counter() - t1
    times = []
    for i in range(1, args.images + 1):
        image = np.load(bench.work_path(args, f"image{i}.npy"))
        ta = time.perf_counter()
        out = seg.segment(image)
        times.append(time.perf_counter() - ta)
        _save(args, backend, i, out)
    return {"setup_s": t_setup, "first_image_s": t_first, "image_s": times,
            "images_per_s": len(times) / sum(times), "backend": seg.backend}


CHILDREN = {"prepare": child_prepare, "official": child_official,
            **{backend: functools.partial(child_run, backend=backend)
               for backend in ("nnabla", "auto", "onnx", "openvino")}}


# ----------------------------------------------------------------------------- parent

def child_args(args):
    return ["--images", str(args.images), "--height", str(args.height), "--width",
            str(args.width), "--weights", args.weights, "--network-config",
            args.network_config]


def describe(r):
    return f"{r['images_per_s']:.4f} images/s, peak RSS {r['peak_rss_mb']:.0f} MB"


def report(args, prep, results):
    """The markdown report and the throughput ratios for the JSON file."""
    out = []
    p = out.append
    p("# D3Net segmentation benchmark\n")
    p(f"- model: {args.network_config}, {prep['nb_params'] / 1e6:.2f} M parameters; weights: "
      f"{prep['weights']}")
    p(f"- input: {args.images} synthetic RGB images of {args.height}x{args.width} timed per "
      "variant (after one warm-up image, except official: every image is a fresh run), "
      "batch 1, CPU")
    p(bench.machine_line(args))
    p("| variant | runtime | setup s | warm-up image s | s / image (timed) | images / s "
      "| x official | peak RSS MB |")
    p("|---|---|---:|---:|---|---:|---:|---:|")
    base = results.get("official")
    for v, r in bench.in_order(results, VARIANTS):
        first = "-" if r["first_image_s"] is None else f"{r['first_image_s']:.2f}"
        ratio = "-" if base is None or v == "official" else \
            f"{r['images_per_s'] / base['images_per_s']:.2f}"
        p(f"| {v} | {r['backend']} | {r['setup_s']:.2f} | {first} "
          f"| {', '.join(f'{t:.2f}' for t in r['image_s'])} | {r['images_per_s']:.4f} "
          f"| {ratio} | {r['peak_rss_mb']:.0f} |")
    ref = "nnabla" if "nnabla" in results else "official"
    extra = {"agreement": {}}
    lines = []
    for v, _ in bench.in_order(results, VARIANTS):
        if v == ref or ref not in results:
            continue
        rels, agree = [], []
        for i in range(1, args.images + 1):
            a = np.load(bench.work_path(args, f"logits_{v}_{i}.npy"))
            b = np.load(bench.work_path(args, f"logits_{ref}_{i}.npy"))
            rels.append(float(np.abs(a.astype(np.float64) - b).max() / np.abs(b).max()))
            la = np.load(bench.work_path(args, f"labels_{v}_{i}.npy"))
            lb = np.load(bench.work_path(args, f"labels_{ref}_{i}.npy"))
            agree.append(float((la == lb).mean()))
        extra["agreement"][v] = {"logits_rel": max(rels), "labels_equal": min(agree)}
        lines.append(f"- logits {v} vs {ref}: max abs diff {max(rels):.3g} x max|logits| "
                     f"(fixture tolerance 1e-4: {'OK' if max(rels) <= 1e-4 else 'FAIL'}); "
                     f"labels equal on {100 * min(agree):.4f} % of the pixels (worst image)")
    p("\n## Summary\n")
    for v in ("auto", "nnabla"):
        if v in results and base:
            r = results[v]
            p(f"- throughput: {v} ({r['backend']}) {r['images_per_s']:.4f} images/s vs the "
              f"official infer.py flow {base['images_per_s']:.4f} images/s -> "
              f"{r['images_per_s'] / base['images_per_s']:.2f}x")
    if "auto" in results and "nnabla" in results:
        p(f"- throughput: auto vs nnabla path -> "
          f"{results['auto']['images_per_s'] / results['nnabla']['images_per_s']:.2f}x")
    out.extend(lines)
    return "\n".join(out), extra


def add_arguments(ap):
    ap.add_argument("--images", type=PositiveInt, default=2,
                    help="timed images per variant (2)")
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
