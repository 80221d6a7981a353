"""D3Net semantic segmentation benchmark: images per second on the CPU with the nnabla and
the ONNX backend (network exported with nnabla's own ONNX converter, run by onnxruntime).

Run (from the repository root)::

    .venv/bin/python d3net/bench/bench_seg.py                    # D3Net-S, 1024x2048
    .venv/bin/python d3net/bench/bench_seg.py --images 3 --json runs/bench_seg.json

Weights: the parity fixture ``$FIXTURES_DIR/d3net-seg/D3Net_S.h5`` if present (random
values, official names and shapes), else random weights of the official D3Net-S shapes
(``--weights random``), or a ``.h5`` given with ``--weights PATH`` (``--config`` names its
config, default ``D3Net_S``). Inputs: synthetic street-like images (fixed seed).

Each backend runs in its own child process (``bench_seg.py --variant NAME --workdir DIR``,
peak RSS per variant, :mod:`common.dev.bench`): ``Segmenter(weights, backend=...)`` is built
(``setup``; for ONNX this includes the one-time export of the 1024x2048 graph into a fresh
cache folder), one warm-up image is segmented (``first image``: nnabla builds its graph,
onnxruntime allocates its buffers), then ``--images`` images are timed; images per second
= images / their total time (logits, softmax and labels, as ``Segmenter.segment``).
The logits of every timed image are compared between the backends.
"""
import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from common.dev.bench import pin_threads, rss_mb, spawn_child, write_child_result

REPO_ROOT = Path(__file__).resolve().parents[2]
VARIANTS = ("nnabla", "onnx")


def fixtures_root():
    root = Path(os.environ.get("FIXTURES_DIR") or Path("..") / "shared" / "fixtures")
    return root if root.is_absolute() else (REPO_ROOT / root).resolve()


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


def _work(args, name):
    return os.path.join(args.workdir, name)


# ----------------------------------------------------------------------------- children

def child_prepare(args):
    from d3net_seg.model import D3NetSegmentation, load_config

    config = load_config(args.config)
    weights = args.weights
    if weights == "fixture":
        weights = str(fixtures_root() / "d3net-seg" / f"{config.get('name', args.config)}.h5")
        if not os.path.isfile(weights):
            raise SystemExit(f"fixture weights {weights} not found; use --weights random")
        source = f"fixture {weights}"
    elif weights == "random":
        model = D3NetSegmentation(config)
        rng = np.random.default_rng(args.seed)
        for name, var in model.create_parameters().items():
            shape = var.shape
            if name.endswith("/mean"):
                var.d = rng.uniform(-0.2, 0.2, shape)
            elif name.endswith("/var"):
                var.d = rng.uniform(0.5, 2.0, shape)
            elif name.endswith("/gamma"):
                var.d = rng.uniform(0.8, 1.2, shape)
            elif name.endswith("/beta"):
                var.d = rng.uniform(-0.1, 0.1, shape)
            elif name.endswith("/W"):
                bound = np.sqrt(6.0 / np.prod(shape[1:]))
                var.d = rng.uniform(-bound, bound, shape)
            elif name.endswith("/b"):
                var.d = rng.uniform(-1, 1, shape) / np.sqrt(shape[0])
        weights = _work(args, "weights.h5")
        model.save_parameters(weights)
        source = f"random ({args.config} shapes)"
    else:
        source = weights
    with open(_work(args, "weights.txt"), "w") as fh:
        fh.write(weights)
    for i in range(args.images + 1):
        np.save(_work(args, f"image{i}.npy"), synth_image(args.height, args.width, args.seed + i))
    from d3net_seg.weights import load_weights

    params, _ = load_weights(weights, args.config)
    return {"weights": source, "nb_params": int(sum(v.size for v in params.values()))}


def child_run(args, backend):
    from d3net_seg.inference import Segmenter
    from d3net_seg.weights import load_weights

    if backend == "onnx":  # a fresh cache: the one-time export is part of the setup time
        os.environ["NNABLA_RESEARCH_CACHE"] = _work(args, "cache")
    with open(_work(args, "weights.txt")) as fh:
        weights = fh.read().strip()
    t0 = time.perf_counter()
    params, config = load_weights(weights, args.config)
    seg = Segmenter(params, config, backend=backend)
    export_s = None
    if backend == "onnx":
        te = time.perf_counter()
        seg._runner.prepare(1, args.height, args.width)
        export_s = time.perf_counter() - te
    t_setup = time.perf_counter() - t0
    rss_ready = rss_mb()

    t1 = time.perf_counter()
    seg.segment(np.load(_work(args, "image0.npy")))
    t_first = time.perf_counter() - t1
    times = []
    for i in range(1, args.images + 1):
        image = np.load(_work(args, f"image{i}.npy"))
        ta = time.perf_counter()
        out = seg.segment(image)
        times.append(time.perf_counter() - ta)
        np.save(_work(args, f"logits_{backend}_{i}.npy"), out.logits)
        np.save(_work(args, f"labels_{backend}_{i}.npy"), out.labels)
    result = {"setup_s": t_setup, "first_image_s": t_first, "image_s": times,
              "images_per_s": len(times) / sum(times), "rss_ready_mb": rss_ready,
              "graph_builds": seg.graph_builds}
    if backend == "onnx":
        runner = seg._runner
        result.update(export_s=export_s, exports=runner.exports,
                      onnx_bytes=os.path.getsize(runner.last_export.path))
    return result


def run_child(args):
    warnings.filterwarnings("ignore")
    pin_threads(args.threads)
    result = child_prepare(args) if args.variant == "prepare" else child_run(args, args.variant)
    write_child_result(_work(args, f"result_{args.variant}.json"), result)


# ----------------------------------------------------------------------------- parent

def spawn(args, variant):
    cmd = [sys.executable, os.path.abspath(__file__), "--variant", variant, "--workdir",
           args.workdir, "--images", str(args.images), "--height", str(args.height),
           "--width", str(args.width), "--weights", args.weights, "--config", args.config,
           "--seed", str(args.seed), "--threads", str(args.threads)]
    return spawn_child(cmd, _work(args, f"result_{variant}.json"), threads=args.threads,
                       name=variant)


def report(args, prep, results, t_all):
    out = []
    p = out.append
    p("# D3Net segmentation benchmark\n")
    p(f"- model: {args.config}, {prep['nb_params'] / 1e6:.2f} M parameters; weights: "
      f"{prep['weights']}")
    p(f"- input: {args.images} synthetic RGB images of {args.height}x{args.width} (+1 warm-up), "
      f"batch 1, CPU")
    p(f"- machine: {os.cpu_count()} CPUs, load average before the run {args.load_before}"
      + (f", children pinned to {args.threads} core(s)" if args.threads else "")
      + f"; python {sys.version.split()[0]}\n")
    p("| backend | setup s | first image s | s / image (timed) | images / s | process s "
      "| RSS after setup MB | peak RSS MB |")
    p("|---|---:|---:|---|---:|---:|---:|---:|")
    for v in VARIANTS:
        r = results.get(v)
        if r is None:
            continue
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
            a = np.load(_work(args, f"logits_onnx_{i}.npy"))
            b = np.load(_work(args, f"logits_nnabla_{i}.npy"))
            d = float(np.abs(a.astype(np.float64) - b).max())
            diffs.append(d)
            rels.append(d / float(np.abs(b).max()))
            la = np.load(_work(args, f"labels_onnx_{i}.npy"))
            lb = np.load(_work(args, f"labels_nnabla_{i}.npy"))
            agree.append(float((la == lb).mean()))
        speed = o["images_per_s"] / results["nnabla"]["images_per_s"]
        p("\n## Summary\n")
        p(f"- throughput: onnx {o['images_per_s']:.4f} images/s vs nnabla "
          f"{results['nnabla']['images_per_s']:.4f} images/s -> {speed:.2f}x")
        p(f"- logits max abs diff onnx vs nnabla: {max(diffs):.3g} "
          f"({max(rels):.3g} x max|logits|; goal <= 1e-3: "
          f"{'OK' if max(rels) <= 1e-3 else 'FAIL'}); labels equal on "
          f"{100 * min(agree):.4f} % of the pixels (worst image)")
    p(f"- benchmark wall time: {t_all:.0f} s")
    return "\n".join(out)


def run_parent(args):
    t_all = time.perf_counter()
    own = args.workdir is None
    if own:
        args.workdir = tempfile.mkdtemp(prefix="d3net-seg-bench-")
    os.makedirs(args.workdir, exist_ok=True)
    try:
        args.load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        args.load_before = "?"
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    try:
        log(f"[bench] work dir {args.workdir}; preparing weights and images ...")
        prep = spawn(args, "prepare")
        results = {}
        for v in args.variants:
            log(f"[bench] {v} ...")
            r = results[v] = spawn(args, v)
            log(f"[bench] {v}: setup {r['setup_s']:.1f} s, first image {r['first_image_s']:.1f} "
                f"s, {r['images_per_s']:.4f} images/s, peak RSS {r['peak_rss_mb']:.0f} MB")
        text = report(args, prep, results, time.perf_counter() - t_all)
        print(text)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            with open(args.json, "w") as fh:
                json.dump({"args": {k: v for k, v in vars(args).items() if k != "workdir"},
                           "prepare": prep, "results": results, "report_markdown": text},
                          fh, indent=2)
    finally:
        if own and not args.keep:
            import shutil

            shutil.rmtree(args.workdir, ignore_errors=True)
        elif own:
            log(f"[bench] kept {args.workdir}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="See d3net/bench/README.md.")
    ap.add_argument("--images", type=int, default=2, help="timed images per backend (2)")
    ap.add_argument("--height", type=int, default=1024)
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--config", default="D3Net_S", help="network config (D3Net_S)")
    ap.add_argument("--weights", default="fixture",
                    help="'fixture' ($FIXTURES_DIR/d3net-seg/<config>.h5, default), 'random' "
                         "(official shapes) or an .h5 path")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help="comma-separated subset of " + ", ".join(VARIANTS))
    ap.add_argument("--threads", type=int, default=0,
                    help="pin each child to this many cores (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--workdir", help="work directory (default: a temporary one, removed)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary work directory")
    ap.add_argument("--variant", help=argparse.SUPPRESS)  # child mode
    args = ap.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    if args.images < 1:
        ap.error("--images must be >= 1")
    if args.weights not in ("fixture", "random"):
        args.weights = os.path.abspath(args.weights)
    if args.variant:
        if not args.workdir:
            ap.error("--variant needs --workdir")
        run_child(args)
    else:
        run_parent(args)


if __name__ == "__main__":
    main()
