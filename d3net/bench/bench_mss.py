"""D3Net music source separation benchmark: the official separation flow vs ``separate.py``'s
defaults (``--backend auto``), the official OpenVINO route, and the peak RSS of a long song.

Run (from the repository root)::

    .venv/bin/python d3net/bench/bench_mss.py                          # vocals, 20 s input
    .venv/bin/python d3net/bench/bench_mss.py --targets all --duration 10
    .venv/bin/python d3net/bench/bench_mss.py --targets all --variants song   # 5-minute song

Networks: every target's full official config. Weights (``--weights``): ``fixture`` (default)
takes the parity fixtures ``$FIXTURES_DIR/d3net-mss/<target>.h5`` where they exist (vocals,
bass; random values with the official names and shapes) and random values of the official
shapes for the other targets; ``random`` uses random values for all; or a folder of
``<target>.h5`` files. The input is a synthetic stereo 44.1 kHz mixture. Every variant runs in
its own child process (``--variant NAME --workdir DIR``, the harness of
:mod:`common.dev.bench`), so its peak RSS is its own:

``official``   the official ``separate.py`` flow written with nnabla and ``d3net_mss.model``:
               per target the parameters are loaded, then for *every patch* a new network
               object and graph are built and run on the patch and its channel-swapped copy;
               overlap-add; mixture phase; the official Wiener filter; inverse STFT.
``auto``       ``separate.py``'s defaults: ``d3net_mss.cli.make_separator`` with
               ``--backend auto`` (channel-flip averaging, Wiener filter), a fresh ONNX
               cache, so the one-time export and compile count as setup.
``nnabla``     the same with ``--backend nnabla`` (the reference path; graph built once).
``onnx``       the same with ``--backend onnx`` (onnxruntime).
``openvino-official``  the official ``separate_with_openvino.py`` route: per target the ONNX
               file (this repository's export of the same weights, made in the prepare step)
               is read and compiled with OpenVINO's defaults and only the thread count set
               (the official ``CPU_THREADS_NUM``), then run patch by patch as the official
               script does. The official script itself needs the pre-2024 OpenVINO API
               (``openvino.inference_engine``), which the installed OpenVINO no longer has.
``song``       ``separate.py`` itself (``d3net_mss.cli.separate_main``, every default:
               ``--backend auto``, 30 s chunks) on a ``--song-duration`` (300 s) WAV file:
               wall time and peak RSS.

With a single target the Wiener filter would return (almost) the mixture: ``separate.py``
skips it, and so do all variants then. Outputs compared (on the ``--duration`` input): the
magnitude estimates and the separated audio of each variant against ``official`` (the nnabla
path: ``nnabla`` equals it bit for bit), with the strict bound (max abs diff <= 1e-3 x max)
and the fixture README's float32-sensitivity criterion (>= 99.9 % of the elements within
1e-4 x max and all within 5e-3 x max).
"""
import functools
import os
import shutil
import sys
import time

import numpy as np

from common.cli import NonNegativeInt, PositiveFloat, run_cli
from common.dev import bench
from common.errors import UserError

README = "d3net/bench/README.md"
WORKDIR_PREFIX = "d3net-mss-bench-"
SAMPLE_RATE = 44100
ALL_TARGETS = ("vocals", "drums", "bass", "other")  # the official order
VARIANTS = ("official", "auto", "nnabla", "onnx", "openvino-official", "song")
DEFAULT_VARIANTS = ("official", "auto", "openvino-official")
GOAL = 0.15  # auto total <= GOAL x official total (issue 13; aim 0.1)
RSS_GOAL_MB = 2048  # peak RSS of separate.py on a 5-minute song


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


def agreement(a, b):
    """``(max abs diff / max|b|, fraction of elements within 1e-4 x max|b|)`` of ``a`` vs the
    reference ``b``."""
    scale = max(float(np.abs(b).max()), 1e-30)
    rel = np.abs(a.astype(np.float64) - b.astype(np.float64)) / scale
    return float(rel.max()), float((rel <= 1e-4).mean())


def meets_sensitivity_criterion(max_rel, within_1e4):
    """The fixture README's float32-sensitivity tolerance for D3Net MSS magnitudes."""
    return within_1e4 >= 0.999 and max_rel <= 5e-3


# ----------------------------------------------------------------------------- children

def _random_weights(path, target, seed):
    """Random parameters of the official ``target`` shapes (the fixture recipe), saved as an
    official-style ``<target>.h5`` (names prefixed ``<target>/``)."""
    from d3net_mss.model import D3NetMSS, load_config

    model = D3NetMSS(load_config(target))
    bench.randomize_parameters(model.create_parameters(), np.random.default_rng(seed),
                               weight_gain=3.0, named={"in_offset": (0, 1), "in_scale": (2, 8),
                                                       "decode_scale": (0.5, 1.5),
                                                       "decode_bias": (0, 1)})
    model.save_parameters(path)


def _configs(args):
    from d3net_mss import weights as wmod

    _, configs = wmod.load(_weights_dir(args), targets=args.targets)
    out = {}
    for t, cfg in configs.items():
        cfg = dict(cfg)
        if args.patch_len:  # smoke runs only: shorter patches, same network
            cfg.update(test_patch_len=args.patch_len, out_shift=args.patch_len // 2)
        out[t] = cfg
    return out


def _weights_dir(args):
    return bench.work_path(args, "weights")


def child_prepare(args):
    """The input, one ``<target>.h5`` per target in ``<workdir>/weights``, the ONNX files of
    the official OpenVINO route and, for ``song``, the long WAV file."""
    from common.mss.audio import write_wav

    np.save(bench.work_path(args, "audio.npy"), synth_audio(args.duration, args.seed))
    folder = _weights_dir(args)
    os.makedirs(folder, exist_ok=True)
    sources = {}
    for i, t in enumerate(args.targets):
        dest = os.path.join(folder, f"{t}.h5")
        if args.weights not in ("fixture", "random"):
            shutil.copyfile(os.path.join(args.weights, f"{t}.h5"), dest)
            sources[t] = os.path.join(args.weights, f"{t}.h5")
            continue
        if args.weights == "fixture":
            try:
                shutil.copyfile(bench.fixture_weights(f"d3net-mss/{t}.h5"), dest)
                sources[t] = "fixture"
                continue
            except UserError:
                pass
        _random_weights(dest, t, args.seed + i)
        sources[t] = "random (official shapes)"
    from d3net_mss import weights as wmod

    params, _ = wmod.load(folder, targets=args.targets)
    configs = _configs(args)
    if "openvino-official" in args.variants:
        _export_onnx_files(args, params, configs)
    if "song" in args.variants:
        write_wav(bench.work_path(args, "song.wav"), synth_audio(args.song_duration,
                                                                 args.seed + 1), SAMPLE_RATE)
    keys = ("test_patch_len", "out_shift", "fft_size", "hop_size")
    return {"weights": sources,
            "nb_params": {t: int(sum(v.size for v in p.values())) for t, p in params.items()},
            "config": {t: {k: c[k] for k in keys} for t, c in configs.items()}}


def _export_onnx_files(args, params, configs):
    """``<workdir>/onnx/<target>.onnx``: each target's network for ``(2, test_patch_len)``
    patches, exported by this repository (what the official route gets as files)."""
    from d3net_mss.onnx_backend import build_onnx_runner

    for t in args.targets:
        runner = build_onnx_runner(params[t], configs[t],
                                   cache_dir=bench.work_path(args, "prepare-cache"))
        runner.save(bench.work_path(args, os.path.join("onnx", f"{t}.onnx")), 2,
                    configs[t]["test_patch_len"])


def _finish(args, variant, X, mags, audio_len, hop):
    """Mixture phase, the official Wiener filter for more than one target, inverse STFT; the
    magnitudes and the estimates are saved for the comparison."""
    from d3net_mss import spectral
    from d3net_mss.separator import source_stfts

    import warnings

    with warnings.catch_warnings():  # single target: "Wiener filter skipped"
        warnings.simplefilter("ignore")
        stfts = source_stfts(X, mags, mwf=True)
    est = {t: spectral.istft(s, hop, length=audio_len).astype(np.float32)
           for t, s in stfts.items()}
    np.savez(bench.work_path(args, f"out_{variant}.npz"),
             **{f"mag_{t}": m for t, m in mags.items()}, **{f"est_{t}": e for t, e in est.items()})


def _official_patches(mag, cfg, run_patch):
    """The official ``calc_output_overlap_add`` loop with channel-flip averaging;
    ``run_patch(x)`` runs one ``(2, patch, 2, bins)`` batch."""
    from d3net_mss.separator import patch_layout

    P, S = cfg["test_patch_len"], cfg["out_shift"]
    n = mag.shape[0]
    front, back, n_patches, scale = patch_layout(n, P, S)
    rest = mag.shape[1:]
    padded = np.concatenate([np.zeros((front,) + rest, np.float32), mag,
                             np.zeros((back,) + rest, np.float32)], axis=0)
    output = np.zeros((n_patches * S + 2 * front,) + rest, np.float32)
    for k in range(n_patches):
        x = padded[k * S:k * S + P][None]
        x = np.concatenate([x, x[:, :, ::-1, :]], axis=0)
        y = run_patch(x)
        y = (y[0] + y[1, :, ::-1]) * 0.5
        output[k * S:(k + scale) * S] += y[:S * scale]
    return output[front:front + n] / scale, n_patches


def child_official(args):
    """Official flow: per target ``nn.load_parameters`` of its file, a new network object
    and graph per patch, ``forward(clear_buffer=True)``."""
    import nnabla as nn

    from d3net_mss import spectral
    from d3net_mss.model import D3NetMSS

    audio = np.load(bench.work_path(args, "audio.npy"))
    configs = _configs(args)
    hop = next(iter(configs.values()))["hop_size"]
    t0 = time.perf_counter()
    X = spectral.stft(audio, next(iter(configs.values()))["fft_size"], hop)
    mag_in = np.abs(X)
    mags, per_target, patches = {}, {}, 0
    for t, cfg in configs.items():
        ta = time.perf_counter()
        nn.clear_parameters()
        nn.load_parameters(os.path.join(_weights_dir(args), f"{t}.h5"))

        def run_patch(x, cfg=cfg, t=t):
            with nn.parameter_scope(t):  # as officially: a new model + graph per patch
                model = D3NetMSS(cfg, param_scope=nn.parameter.get_current_parameter_scope())
                out = model.network(nn.Variable.from_numpy_array(x), test=True)
            out.forward(clear_buffer=True)
            return out.d.copy()

        mags[t], n = _official_patches(mag_in, cfg, run_patch)
        patches += n
        per_target[t] = time.perf_counter() - ta
    _finish(args, "official", X, mags, audio.shape[0], hop)
    total = time.perf_counter() - t0
    return {"setup_s": 0.0, "separate_s": total, "total_s": total, "patches": patches,
            "graph_builds": patches, "frames": int(X.shape[0]), "per_target_s": per_target}


class TimedRunner(bench.TimedCalls):
    """A separator's runner, timed; ``items`` counts the network inputs (two per patch: the
    patch and its channel-swapped copy, in one call or two) and ``release`` is passed on."""

    def __init__(self, runner):
        super().__init__(runner)
        self.items = 0

    def __call__(self, x):
        self.items += len(x)
        return super().__call__(x)

    def release(self):
        if hasattr(self.fn, "release"):
            self.fn.release()


def child_ours(args, backend):
    """``separate.py``'s separator (``make_separator`` with its defaults but ``backend``) on
    the input; setup = building it (loading, exporting, compiling)."""
    from d3net_mss.cli import make_separator

    audio = np.load(bench.work_path(args, "audio.npy"))
    configs = _configs(args)
    os.environ["NNABLA_RESEARCH_CACHE"] = bench.work_path(args, f"cache-{backend}")
    t0 = time.perf_counter()
    if args.patch_len:
        from d3net_mss import weights as wmod
        from d3net_mss.separator import Separator

        params, _ = wmod.load(_weights_dir(args), targets=args.targets)
        sep = Separator.from_params(params, configs, backend=backend)
    else:
        sep = make_separator(_weights_dir(args), targets=args.targets, backend=backend)
    if len(sep.runners) == 1:  # export / compile now, not in the first patch
        for t, runner in sep.runners.items():
            if hasattr(runner, "prepare"):  # the flip pair runs as two batch-1 calls
                runner.prepare(1, configs[t]["test_patch_len"])
    # With several targets the separator compiles each target before its patches and releases
    # it after them (one compiled model in memory at a time): export and compile then count
    # in "separate".
    t_setup = time.perf_counter() - t0
    rss_ready = bench.rss_mb()
    timed = {t: TimedRunner(r) for t, r in sep.runners.items()}
    sep.runners.update(timed)  # looked up per call
    t1 = time.perf_counter()
    X, mags = sep.analyze(audio)
    _finish(args, backend, X, mags, audio.shape[0], sep.n_hop)
    t_sep = time.perf_counter() - t1
    return {"setup_s": t_setup, "separate_s": t_sep, "total_s": t_setup + t_sep,
            "network_s": sum(c.seconds for c in timed.values()),
            "patches": sum(c.items for c in timed.values()) // 2, "frames": int(X.shape[0]),
            "backend": sep.backend, "graph_builds": sep.graph_builds, "rss_ready_mb": rss_ready}


def child_openvino_official(args):
    """The official OpenVINO route on the exported files: per target read + compile with
    the defaults and the thread count, then the official patch loop, one ``infer`` per
    patch."""
    import openvino as ov

    from common.runtime.backends import available_cores
    from d3net_mss import spectral

    audio = np.load(bench.work_path(args, "audio.npy"))
    configs = _configs(args)
    hop = next(iter(configs.values()))["hop_size"]
    core = ov.Core()
    t0 = time.perf_counter()
    X = spectral.stft(audio, next(iter(configs.values()))["fft_size"], hop)
    mag_in = np.abs(X)
    mags, compile_s, precision, patches = {}, 0.0, set(), 0
    for t, cfg in configs.items():
        tc = time.perf_counter()
        model = core.read_model(bench.work_path(args, os.path.join("onnx", f"{t}.onnx")))
        compiled = core.compile_model(model, "CPU",
                                      {"INFERENCE_NUM_THREADS": available_cores()})
        compile_s += time.perf_counter() - tc
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")  # an ov.Type
        precision.add(hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint))
        name, out = compiled.inputs[0].any_name, compiled.outputs[0]
        mags[t], n = _official_patches(
            mag_in, cfg, lambda x, c=compiled, i=name, o=out: c({i: x})[o].copy())
        patches += n
    _finish(args, "openvino-official", X, mags, audio.shape[0], hop)
    total = time.perf_counter() - t0
    return {"setup_s": compile_s, "separate_s": total - compile_s, "total_s": total,
            "patches": patches, "frames": int(X.shape[0]), "precision": sorted(precision),
            "openvino": ov.__version__}


def child_song(args):
    """``separate.py`` with every default on the long WAV file (in this process, so its
    peak RSS is this child's)."""
    from d3net_mss.cli import separate_main

    os.environ["NNABLA_RESEARCH_CACHE"] = bench.work_path(args, "cache-song")
    out = bench.work_path(args, "song-separated")
    t0 = time.perf_counter()
    separate_main([bench.work_path(args, "song.wav"), "--model", _weights_dir(args),
                   "--targets", *args.targets, "--out-dir", out, "--no-progress"])
    return {"total_s": time.perf_counter() - t0, "song_s": args.song_duration,
            "outputs": sorted(os.listdir(os.path.join(out, "song")))}


CHILDREN = {"prepare": child_prepare, "official": child_official,
            "auto": functools.partial(child_ours, backend="auto"),
            "nnabla": functools.partial(child_ours, backend="nnabla"),
            "onnx": functools.partial(child_ours, backend="onnx"),
            "openvino-official": child_openvino_official, "song": child_song}


# ----------------------------------------------------------------------------- parent

def child_args(args):
    weights = args.weights
    return ["--duration", repr(args.duration), "--song-duration", repr(args.song_duration),
            "--weights", weights, "--patch-len", str(args.patch_len), "--targets",
            *args.targets, "--variants", ",".join(args.variants)]


def describe(r):
    if "song_s" in r:
        return f"{r['song_s']:g} s song in {r['total_s']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB"
    return (f"total {r['total_s']:.1f} s (setup {r['setup_s']:.1f}, separate "
            f"{r['separate_s']:.1f}), peak RSS {r['peak_rss_mb']:.0f} MB")


def _label(variant, r):
    if variant == "auto":
        return f"auto (chose {r['backend']})"
    if variant == "openvino-official":
        return f"openvino-official ({'/'.join(r['precision'])})"
    return variant


def report(args, prep, results):
    """The markdown report and the agreement numbers for the JSON file."""
    out = []
    p = out.append
    base = results.get("official")
    p("# D3Net MSS separation benchmark\n")
    cfgs = prep["config"]
    official = "full official configs" if not args.patch_len else (
        "official networks, patch length overridden (smoke run)")
    p(f"- targets: {', '.join(args.targets)}; {official} ("
      + "; ".join(f"{t}: patch {c['test_patch_len']}, shift {c['out_shift']}, "
                  f"{prep['nb_params'][t] / 1e6:.2f} M parameters, {prep['weights'][t]} weights"
                  for t, c in cfgs.items())
      + "); channel-flip averaging, n_fft 4096, hop 1024")
    timed = [(v, r) for v, r in bench.in_order(results, VARIANTS) if v != "song"]
    if timed:
        r0 = timed[0][1]
        p(f"- input: synthetic stereo {SAMPLE_RATE} Hz, {args.duration:g} s = {r0['frames']} "
          f"STFT frames, {r0['patches']} patches in all (each run with its channel-swapped "
          "copy: official and nnabla as a batch of 2, onnxruntime / OpenVINO as two batch-1 "
          "calls); "
          + ("official Wiener filter (four-target rule of separate.py: more than one target)"
             if len(args.targets) > 1 else "no Wiener filter (single target)"))
    p(bench.machine_line(args))
    extra = {"agreement": {}}
    if timed:
        p("| variant | setup s | separate s | total s | x official (total) | patches | "
          "peak RSS MB |")
        p("|---|---:|---:|---:|---:|---:|---:|")
        for v, r in timed:
            ratio = r["total_s"] / base["total_s"] if base and v != "official" else None
            p(f"| {_label(v, r)} | {r['setup_s']:.2f} | {r['separate_s']:.2f} "
              f"| {r['total_s']:.2f} | {'-' if ratio is None else f'{ratio:.3f}'} "
              f"| {r['patches']} | {r['peak_rss_mb']:.0f} |")
        if base and "per_target_s" in base and len(base["per_target_s"]) > 1:
            p("\nofficial flow per target (s): " + ", ".join(
                f"{t} {s:.1f}" for t, s in base["per_target_s"].items()))
    if base:
        ref = np.load(bench.work_path(args, "out_official.npz"))
        rows = []
        for v, _ in timed:
            if v == "official":
                continue
            got = np.load(bench.work_path(args, f"out_{v}.npz"))
            for t in args.targets:
                mr, within = agreement(got[f"mag_{t}"], ref[f"mag_{t}"])
                ar, _ = agreement(got[f"est_{t}"], ref[f"est_{t}"])
                rows.append((v, t, mr, within, ar))
                extra["agreement"][f"{v}/{t}"] = {"magnitude_rel": mr, "within_1e-4": within,
                                                  "audio_rel": ar}
        if rows:
            p("\n| vs official (nnabla path) | target | magnitudes max diff x max | within "
              "1e-4 x max | <= 1e-3 x max | float32-sensitivity criterion | audio max diff "
              "x peak |")
            p("|---|---|---:|---:|---|---|---:|")
            for v, t, mr, within, ar in rows:
                p(f"| {v} | {t} | {mr:.3g} | {100 * within:.4f} % "
                  f"| {'yes' if mr <= 1e-3 else 'no'} "
                  f"| {'OK' if meets_sensitivity_criterion(mr, within) else 'FAIL'} "
                  f"| {ar:.3g} |")
    p("\n## Summary\n")
    auto = results.get("auto")
    if base and auto:
        ratio = auto["total_s"] / base["total_s"]
        p(f"- speed: separate.py defaults (auto -> {auto['backend']}) {auto['total_s']:.1f} s "
          f"(setup {auto['setup_s']:.1f} s) vs the official flow {base['total_s']:.1f} s -> "
          f"{ratio:.3f}x (goal <= {GOAL:g}x: {'OK' if ratio <= GOAL else 'NOT MET'})")
    ovo = results.get("openvino-official")
    if base and ovo:
        p(f"- the official OpenVINO route ({'/'.join(ovo['precision'])}, OpenVINO "
          f"{ovo['openvino'].split('-')[0]}): {ovo['total_s']:.1f} s -> "
          f"{ovo['total_s'] / base['total_s']:.3f}x the official flow"
          + (f", {ovo['total_s'] / auto['total_s']:.2f}x the defaults" if auto else ""))
    for v, t, mr, within, ar in (rows if base else []):
        p(f"- agreement {v} {t}: magnitudes {mr:.3g} x max (float32-sensitivity criterion "
          f"{'OK' if meets_sensitivity_criterion(mr, within) else 'FAIL'}), audio {ar:.3g} "
          "x peak")
    song = results.get("song")
    if song:
        p(f"- separate.py (defaults) on a {song['song_s']:g} s song, {len(args.targets)} "
          f"target(s): {song['total_s']:.0f} s, peak RSS {song['peak_rss_mb']:.0f} MB (goal "
          f"<= {RSS_GOAL_MB} MB: {'OK' if song['peak_rss_mb'] <= RSS_GOAL_MB else 'NOT MET'})")
    return "\n".join(out), extra


def add_arguments(ap):
    ap.add_argument("--targets", nargs="+", default=["vocals"], choices=ALL_TARGETS + ("all",),
                    help="targets to separate (default: vocals); 'all' = the four")
    ap.add_argument("--duration", type=PositiveFloat, default=20.0,
                    help="input seconds of the timed comparison (20)")
    ap.add_argument("--song-duration", type=PositiveFloat, default=300.0,
                    help="seconds of the 'song' variant's WAV file (300)")
    ap.add_argument("--weights", default="fixture",
                    help="'fixture' (the parity fixtures where they exist, else random; "
                         "default), 'random' (official shapes) or a folder of <target>.h5")
    ap.add_argument("--patch-len", type=NonNegativeInt, default=0,
                    help="override test_patch_len (out_shift = half of it) for quick smoke "
                         "runs of the timed variants; default (0): the official configs")


def check_args(args):
    if "all" in args.targets:
        args.targets = list(ALL_TARGETS)
    else:
        args.targets = [t for t in ALL_TARGETS if t in args.targets]
    if args.patch_len % 2:
        raise UserError("--patch-len must be even (its half is the shift)")
    if args.patch_len and "song" in args.variants:
        raise UserError("--patch-len cannot be combined with the 'song' variant (separate.py "
                        "runs the official configs)")
    if args.weights not in ("fixture", "random"):
        args.weights = os.path.abspath(args.weights)
        missing = [t for t in args.targets
                   if not os.path.isfile(os.path.join(args.weights, f"{t}.h5"))]
        if missing:
            raise UserError(f"--weights {args.weights}: no {', '.join(missing)}.h5 there")


if __name__ == "__main__":
    run_cli(lambda argv: bench.benchmark_main(sys.modules[__name__], argv))
