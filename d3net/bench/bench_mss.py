"""D3Net music source separation benchmark: official per-patch flow vs our Separator on
nnabla and on onnxruntime (network exported with nnabla's own ONNX converter).

Run (from the repository root)::

    .venv/bin/python d3net/bench/bench_mss.py                  # 30 s input, full config
    .venv/bin/python d3net/bench/bench_mss.py --duration 10 --json runs/bench_mss.json

One source (``vocals``, full official config: test_patch_len 256, out_shift 128,
channel-flip averaging) is separated from a synthetic stereo 44.1 kHz mixture. Weights:
the parity fixture ``$FIXTURES_DIR/d3net-mss/vocals.h5`` if present (random values, official
names and shapes), else random weights of the official shapes (``--weights random``), or
any ``vocals.h5`` given with ``--weights PATH``. Every variant runs in its own child process
(``bench_mss.py --variant NAME --workdir DIR``) so its peak RSS is its own (the harness
of :mod:`common.dev.bench`):

``baseline``  the official ``separate.py`` / ``util.calc_output_overlap_add`` flow written
              with nnabla and ``d3net_mss.model``: parameters loaded once, then for *every
              patch* a new ``D3NetMSS`` object and graph are built (as officially) and run
              on the patch and its channel-swapped copy; overlap-add; mixture phase;
              inverse STFT.
``nnabla``    our ``Separator(backend='nnabla')``: one graph, built once, reused for all
              patches.
``onnx``      our ``Separator(backend='onnx')``: the network exported once with
              nnabla-converter (into a fresh cache folder, so the export is timed in
              "setup") and run with onnxruntime.

With a single target the official multichannel Wiener filter would hand back (almost) the
mixture, so all variants skip it (``mwf=False``): magnitude estimate x mixture phase, then
the inverse STFT. Outputs compared: the magnitude estimates and the separated audio (max
abs diff, also relative to the peak). Timing: setup (reading weights, building the
separator / exporting) and separation, each variant once; ratios to the baseline.
"""
import functools
import os
import sys
import time

import numpy as np

from common.cli import NonNegativeInt, PositiveFloat
from common.dev import bench
from common.errors import UserError
from common.cli import run_cli

README = "d3net/bench/README.md"
WORKDIR_PREFIX = "d3net-mss-bench-"
SAMPLE_RATE = 44100
TARGET = "vocals"
VARIANTS = ("baseline", "nnabla", "onnx")
GOAL = 0.1  # onnx total <= GOAL x baseline total


def synth_audio(duration, seed=0):
    """Stereo mixture ``(samples, 2)`` float32: a few panned, amplitude-modulated sines, a
    decaying click train and white noise (fixed seed), peak below 1."""
    rng = np.random.default_rng(seed)
    n = int(round(duration * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    out = np.zeros((n, 2))
    for freq, amp, pan in ((98.0, 0.2, 0.5), (246.9, 0.12, 0.3), (440.0, 0.1, 0.7),
                           (1318.5, 0.05, 0.6), (3520.0, 0.03, 0.4)):
        env = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.05, 0.5) * t + rng.uniform(0, 6))
        s = amp * env * np.sin(2 * np.pi * freq * t + rng.uniform(0, 6))
        out[:, 0] += 2 * (1 - pan) * s
        out[:, 1] += 2 * pan * s
    clicks = np.zeros(n)
    clicks[::SAMPLE_RATE // 2] = 1.0
    kernel = np.exp(-np.arange(int(0.03 * SAMPLE_RATE)) / (0.005 * SAMPLE_RATE))
    out += (np.convolve(clicks, kernel)[:n] * rng.standard_normal(n) * 0.2)[:, None]
    out += 0.02 * rng.standard_normal((n, 2))
    return (out / max(1.0, np.abs(out).max() / 0.9)).astype(np.float32)


# ----------------------------------------------------------------------------- children

def _random_weights(path, seed):
    """Random parameters of the official vocals shapes (the fixture recipe), saved as an
    official-style ``vocals.h5`` (names prefixed ``vocals/``)."""
    from d3net_mss.model import D3NetMSS, load_config

    model = D3NetMSS(load_config(TARGET))
    bench.randomize_parameters(model.create_parameters(), np.random.default_rng(seed),
                         weight_gain=3.0, named={"in_offset": (0, 1), "in_scale": (2, 8),
                                                 "decode_scale": (0.5, 1.5),
                                                 "decode_bias": (0, 1)})
    model.save_parameters(path)


def child_prepare(args):
    np.save(bench.work_path(args, "audio.npy"), synth_audio(args.duration, args.seed))
    weights = args.weights
    if weights == "fixture":
        weights = bench.fixture_weights(f"d3net-mss/{TARGET}.h5")
        source = f"fixture {weights}"
    elif weights == "random":
        weights = bench.work_path(args, f"{TARGET}.h5")
        _random_weights(weights, args.seed)
        source = "random (official shapes)"
    else:
        source = weights
    with open(bench.work_path(args, "weights.txt"), "w") as fh:
        fh.write(weights)
    _, params, cfg = _load(args)
    return {"weights": source, "nb_params": int(sum(v.size for v in params.values())),
            "config": {k: cfg[k] for k in ("test_patch_len", "out_shift", "fft_size",
                                           "hop_size", "valid_signal_idx")}}


def _load(args):
    from d3net_mss import weights as wmod

    with open(bench.work_path(args, "weights.txt")) as fh:
        path = fh.read().strip()
    params, configs = wmod.load(path, targets=[TARGET])
    cfg = dict(configs[TARGET])
    if args.patch_len:  # quick runs only: shorter patches, same network
        cfg.update(test_patch_len=args.patch_len, out_shift=args.patch_len // 2)
    return path, params[TARGET], cfg


def child_baseline(args):
    """Official flow: global parameters loaded once (``nn.load_parameters``), a new network
    object and graph per patch, ``forward(clear_buffer=True)``."""
    import nnabla as nn

    from d3net_mss import spectral
    from d3net_mss.model import D3NetMSS
    from d3net_mss.separator import patch_layout

    audio = np.load(bench.work_path(args, "audio.npy"))
    t0 = time.perf_counter()
    path, _, cfg = _load(args)
    nn.clear_parameters()
    nn.load_parameters(path)
    t_setup = time.perf_counter() - t0
    rss_ready = bench.rss_mb()

    t1 = time.perf_counter()
    X = spectral.stft(audio, cfg["fft_size"], cfg["hop_size"])
    inp = np.abs(X)
    P, S = cfg["test_patch_len"], cfg["out_shift"]
    n = inp.shape[0]
    front, back, n_patches, scale = patch_layout(n, P, S)
    padded = np.concatenate([np.zeros((front,) + inp.shape[1:], np.float32), inp,
                             np.zeros((back,) + inp.shape[1:], np.float32)], axis=0)
    output = np.zeros((n_patches * S + 2 * front,) + inp.shape[1:], np.float32)
    t_net = 0.0
    for k in range(n_patches):
        x = padded[k * S:k * S + P][None]
        x = np.concatenate([x, x[:, :, ::-1, :]], axis=0)  # ch_flip_average
        ta = time.perf_counter()
        with nn.parameter_scope(TARGET):  # as officially: a new model + graph per patch
            model = D3NetMSS(cfg, param_scope=nn.parameter.get_current_parameter_scope())
            out = model.network(nn.Variable.from_numpy_array(x), test=True)
        out.forward(clear_buffer=True)
        y = out.d
        t_net += time.perf_counter() - ta
        y = (y[0] + y[1, :, ::-1]) * 0.5
        output[k * S:(k + scale) * S] += y[:S * scale]
        del model, out
    mag = output[front:front + n] / scale
    est = spectral.istft(mag * np.exp(1j * np.angle(X)), cfg["hop_size"],
                         length=audio.shape[0]).astype(np.float32)
    t_sep = time.perf_counter() - t1
    np.save(bench.work_path(args, "mag_baseline.npy"), mag)
    np.save(bench.work_path(args, "est_baseline.npy"), est)
    return {"setup_s": t_setup, "separate_s": t_sep, "total_s": t_setup + t_sep,
            "network_s": t_net, "patches": n_patches, "graph_builds": n_patches,
            "frames": n, "rss_ready_mb": rss_ready}


def child_ours(args, backend):
    from d3net_mss.separator import Separator

    audio = np.load(bench.work_path(args, "audio.npy"))
    if backend == "onnx":  # a fresh cache: the one-time export is part of the setup time
        os.environ["NNABLA_RESEARCH_CACHE"] = bench.work_path(args, "cache")
    t0 = time.perf_counter()
    _, params, cfg = _load(args)
    sep = Separator.from_params({TARGET: params}, {TARGET: cfg}, backend=backend, mwf=False,
                                ch_flip_average=True)
    runner = sep.runners[TARGET]
    if backend == "onnx" and args.low_memory:  # same runner, memory arena off
        from d3net_mss.onnx_backend import build_onnx_runner

        runner = sep.runners[TARGET] = build_onnx_runner(params, cfg, low_memory=True)
    export_s = None
    if backend == "onnx":  # export + session now (otherwise it happens in the first patch)
        te = time.perf_counter()
        runner.prepare(2, cfg["test_patch_len"])
        export_s = time.perf_counter() - te
    t_setup = time.perf_counter() - t0
    rss_ready = bench.rss_mb()

    timed = sep.runners[TARGET] = bench.TimedCalls(runner)  # looked up per call
    t1 = time.perf_counter()
    X = sep.stft(audio)
    mag = sep.estimate_magnitudes(X)[TARGET]
    from d3net_mss import spectral

    est = spectral.istft(sep.filter(X, {TARGET: mag})[TARGET], sep.n_hop,
                         length=audio.shape[0]).astype(np.float32)
    t_sep = time.perf_counter() - t1
    np.save(bench.work_path(args, f"mag_{backend}.npy"), mag)
    np.save(bench.work_path(args, f"est_{backend}.npy"), est)
    result = {"setup_s": t_setup, "separate_s": t_sep, "total_s": t_setup + t_sep,
              "network_s": timed.seconds, "patches": timed.calls, "frames": int(X.shape[0]),
              "graph_builds": getattr(runner, "graph_builds", None), "rss_ready_mb": rss_ready}
    if backend == "onnx":
        result.update(export_s=export_s, exports=runner.exports,
                      onnx_bytes=os.path.getsize(runner.last_export.path))
    return result


CHILDREN = {"prepare": child_prepare, "baseline": child_baseline,
            "nnabla": functools.partial(child_ours, backend="nnabla"),
            "onnx": functools.partial(child_ours, backend="onnx")}


# ----------------------------------------------------------------------------- parent

def child_args(args):
    return (["--duration", repr(args.duration), "--weights", args.weights, "--patch-len",
             str(args.patch_len)] + (["--low-memory"] if args.low_memory else []))


def describe(r):
    return (f"total {r['total_s']:.1f} s (setup {r['setup_s']:.1f}, separate "
            f"{r['separate_s']:.1f}, network {r['network_s']:.1f}), peak RSS "
            f"{r['peak_rss_mb']:.0f} MB")


def _diff(a, b):
    d = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())
    return d, d / max(float(np.abs(b).max()), 1e-30)


def report(args, prep, results):
    """The markdown report and (no) extra JSON entries."""
    out = []
    p = out.append
    base = results.get("baseline")
    p("# D3Net MSS separation benchmark\n")
    official = "full official config" if not args.patch_len else (
        "official network, patch length overridden (smoke run)")
    p(f"- target: {TARGET}, {official} (patch {prep['config']['test_patch_len']}, "
      f"shift {prep['config']['out_shift']}, channel-flip averaging, n_fft "
      f"{prep['config']['fft_size']}, hop {prep['config']['hop_size']}), "
      f"{prep['nb_params'] / 1e6:.2f} M parameters; weights: {prep['weights']}")
    any_r = next(iter(results.values()))
    p(f"- input: synthetic stereo {SAMPLE_RATE} Hz, {args.duration:g} s = {any_r['frames']} "
      f"STFT frames = {any_r['patches']} patches (each a batch of 2 x "
      f"{prep['config']['test_patch_len']} frames); no Wiener filter (single target)"
      + ("; onnx with --low-memory (onnxruntime memory arena off)" if args.low_memory else ""))
    p(bench.machine_line(args))
    p("| variant | setup s | separate s | total s | network s | s / patch | x baseline "
      "(total) | x baseline (separate) | graphs built | process s | RSS after setup MB "
      "| peak RSS MB |")
    p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for v, r in bench.in_order(results, VARIANTS):
        rt = r["total_s"] / base["total_s"] if base and v != "baseline" else None
        rs = r["separate_s"] / base["separate_s"] if base and v != "baseline" else None
        p(f"| {v} | {r['setup_s']:.2f} | {r['separate_s']:.2f} | {r['total_s']:.2f} "
          f"| {r['network_s']:.2f} | {r['network_s'] / max(r['patches'], 1):.2f} "
          f"| {'-' if rt is None else f'{rt:.3f}'} | {'-' if rs is None else f'{rs:.3f}'} "
          f"| {r.get('graph_builds')} | {r['process_s']:.1f} "
          f"| {r['rss_ready_mb']:.0f} | {r['peak_rss_mb']:.0f} |")
    o = results.get("onnx")
    if o:
        p(f"\nonnx setup includes the one-time export (nnabla graph -> .nnp -> nnabla-converter "
          f"-> .onnx, {o['onnx_bytes'] / 1e6:.1f} MB, then the onnxruntime session): "
          f"{o['export_s']:.2f} s; later runs find the file in the cache "
          f"(exports this run: {o['exports']}).")
    p("\n| comparison | magnitude max abs diff | rel. to max | elements > 1e-4 x max "
      "| elements > 1e-3 x max | audio max abs diff | rel. to peak |")
    p("|---|---:|---:|---:|---:|---:|---:|")
    arrays = {}
    for v in results:
        arrays[v] = (np.load(bench.work_path(args, f"mag_{v}.npy")),
                     np.load(bench.work_path(args, f"est_{v}.npy")))
    rows = []
    for a, b in (("nnabla", "baseline"), ("onnx", "nnabla"), ("onnx", "baseline")):
        if a in arrays and b in arrays:
            dm, rm = _diff(arrays[a][0], arrays[b][0])
            de, re_ = _diff(arrays[a][1], arrays[b][1])
            rel = np.abs(arrays[a][0] - arrays[b][0]) / max(float(np.abs(arrays[b][0]).max()),
                                                            1e-30)
            n4, n3 = int((rel > 1e-4).sum()), int((rel > 1e-3).sum())
            rows.append((a, b, rm, re_, n4 / rel.size))
            p(f"| {a} vs {b} | {dm:.3g} | {rm:.3g} | {n4} of {rel.size} | {n3} | {de:.3g} "
              f"| {re_:.3g} |")
    p("\n## Summary\n")
    if base and o:
        r1 = o["total_s"] / base["total_s"]
        r2 = o["separate_s"] / base["separate_s"]
        p(f"- speed: onnx {o['total_s']:.1f} s total ({o['separate_s']:.1f} s separation) vs "
          f"baseline {base['total_s']:.1f} s -> {r1:.3f}x total, {r2:.3f}x separation only "
          f"(goal <= {GOAL:g}x: {'OK' if r1 <= GOAL else 'NOT MET'})")
    if base and "nnabla" in results:
        r = results["nnabla"]
        p(f"- speed: nnabla (graph built once) {r['total_s']:.1f} s -> "
          f"{r['total_s'] / base['total_s']:.3f}x baseline")
    for a, b, rm, re_, frac4 in rows:
        ok = "OK" if rm <= 1e-3 else "FAIL"
        ok2 = "OK" if (frac4 <= 1e-3 and rm <= 5e-3) else "FAIL"
        p(f"- agreement {a} vs {b}: magnitudes {rm:.3g} x max (goal <= 1e-3 x max: {ok}; "
          f"fixture README's float32-sensitivity criterion, >= 99.9 % within 1e-4 x max and "
          f"all within 5e-3 x max: {ok2}), audio {re_:.3g} x peak")
    return "\n".join(out), {}


def add_arguments(ap):
    ap.add_argument("--duration", type=PositiveFloat, default=30.0, help="input seconds (30)")
    ap.add_argument("--weights", default="fixture",
                    help="'fixture' ($FIXTURES_DIR/d3net-mss/vocals.h5, default), 'random' "
                         "(official shapes) or a vocals .h5 path")
    ap.add_argument("--low-memory", action="store_true",
                    help="onnx variant: onnxruntime memory arena off (lower peak RSS)")
    ap.add_argument("--patch-len", type=NonNegativeInt, default=0,
                    help="override test_patch_len (out_shift = half of it) for quick smoke "
                         "runs; default (0): the official 256 / 128")


def check_args(args):
    if args.patch_len == 1:
        raise UserError("--patch-len must be at least 2 (its half is the shift)")
    if args.weights not in ("fixture", "random"):
        args.weights = os.path.abspath(args.weights)


if __name__ == "__main__":
    run_cli(lambda argv: bench.benchmark_main(sys.modules[__name__], argv))
