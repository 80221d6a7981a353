"""Wall time of the real ``x-umx/eval.py`` with ``--jobs 1`` against ``--jobs N`` (default 2).

Run (from the repository root)::

    .venv/bin/python x-umx/bench/bench_eval_jobs.py

Nothing is downloaded. The four MUSDB18 tracks (WAV layout, ``--is-wav``) are made from the
bundled sample track (6 s, four stems): track ``k`` is every file of it rotated by ``k``
quarters of its length, so the tracks differ and a score written under the wrong track name
would show. The model has random weights of the official X-UMX shapes (hidden size 512,
3-layer BLSTM, n_fft 4096, hop 1024, bandwidth 16 kHz), created with ``xumx.model.CrossNet``
and saved as an ``.h5``. Both runs use eval.py's default ``--backend`` (``auto``) unless
``--backend`` is given, and a fresh cache folder (``NNABLA_RESEARCH_CACHE``) that a warm-up run
on one track fills first, so that neither timed run exports the ONNX model. Each run has its
own output folder; their per-track JSON scores must be byte for byte the same.
"""
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common.cli import NonNegativeInt, Parser, PositiveInt, run_cli
from common.dev.bench import ChildFailed

REPO = Path(__file__).resolve().parents[2]
EVAL_SCRIPT = REPO / "x-umx" / "eval.py"
GOAL_RATIO = 0.6


def make_tracks(root, count):
    """``count`` WAV-layout test tracks at ``root`` from the bundled sample (16-bit PCM, as
    MUSDB18-HQ): track ``k`` is the sample rotated by ``k / count`` of its length."""
    import soundfile as sf

    from common.data.bundled import MUSDB_SAMPLE_TRACK, bundled_musdb_root

    sample = bundled_musdb_root(is_wav=True) / "test" / MUSDB_SAMPLE_TRACK
    files = {f.name: sf.read(f, dtype="int16") for f in sorted(sample.glob("*.wav"))}
    names = []
    for k in range(count):
        name = f"Bench {k + 1} - {MUSDB_SAMPLE_TRACK.split(' - ')[-1]}"
        folder = Path(root) / "test" / name
        folder.mkdir(parents=True)
        for file_name, (audio, rate) in files.items():
            shift = k * len(audio) // count
            sf.write(folder / file_name, np.roll(audio, shift, axis=0), rate, subtype="PCM_16")
        names.append(name)
    (Path(root) / "train").mkdir()
    return names


def make_weights(path, mixture, hidden_size, seed):
    """Random X-UMX weights of the official shapes (``hidden_size`` 512 is the official
    one) at ``path``; the input normalisation comes from ``mixture``'s magnitudes and the
    batch-norm statistics and output scaling are non-trivial, as in bench_separation.py."""
    import nnabla as nn

    from xumx import spectral
    from xumx.model import CrossNet, bandwidth_to_max_bin

    n_fft, n_hop, rate = 4096, 1024, 44100
    mag = np.abs(spectral.stft_numpy(mixture.T, n_fft, n_hop))
    mag = mag.transpose(0, 2, 1).reshape(-1, mag.shape[1])  # (frames * channels, bins)
    np.random.seed(seed)
    nn.random.prng = np.random.RandomState(seed)  # the initialisers' generator
    model = CrossNet(hidden_size=hidden_size, n_fft=n_fft, n_hop=n_hop,
                     max_bin=bandwidth_to_max_bin(rate, n_fft, 16000), nb_channels=2,
                     nb_layers=3, bidirectional=True, input_mean=mag.mean(0),
                     input_scale=mag.std(0) + 1e-3)
    rng = np.random.default_rng(seed + 1)
    for name, var in model.create_parameters().items():
        if name.endswith(("/bn/mean", "/bn/beta")):
            var.d = rng.normal(0.0, 0.2, var.shape)
        elif name.endswith(("/bn/var", "/bn/gamma")) or name.startswith(
                ("output_scale", "output_mean")):
            var.d = rng.uniform(0.5, 1.5, var.shape)
    model.save_parameters(str(path))


def children_cpu_seconds():
    """User + system CPU time of the finished child processes (and their children)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_eval(jobs, weights, root, out_dir, cache, backend=None, tracks=()):
    """Run ``eval.py`` once; return its wall and CPU seconds and the backend it announced."""
    cmd = [sys.executable, str(EVAL_SCRIPT), "--model", str(weights), "--root", str(root),
           "--is-wav", "--jobs", str(jobs), "--out-dir", str(out_dir), "--no-progress"]
    if backend:
        cmd += ["--backend", backend]
    if tracks:
        cmd += ["--tracks", *tracks]
    cpu = children_cpu_seconds()
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "NNABLA_RESEARCH_CACHE": str(cache)})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-20:])
        raise ChildFailed(f"eval.py --jobs {jobs} failed (exit {proc.returncode}):\n{tail}")
    announced = [line.split(":", 1)[1].strip() for line in proc.stderr.splitlines()
                 if line.startswith("backend:")]
    return {"wall_s": wall, "cpu_s": children_cpu_seconds() - cpu,
            "backend": announced[0] if announced else backend or "eval.py's default"}


def compare_scores(out_a, out_b, names):
    """Track names whose JSON scores differ between two output folders."""
    return [name for name in names
            if (Path(out_a) / "test" / f"{name}.json").read_bytes()
            != (Path(out_b) / "test" / f"{name}.json").read_bytes()]


def load_line():
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv=None):
    parser = Parser(description=__doc__.split("\n")[0],
                    epilog="See x-umx/bench/README.md.")
    parser.add_argument("--jobs", type=PositiveInt, default=2,
                        help="the --jobs compared with --jobs 1 (default: 2)")
    parser.add_argument("--tracks", type=PositiveInt, default=4,
                        help="number of MUSDB18 tracks made from the sample (default: 4)")
    parser.add_argument("--hidden-size", type=PositiveInt, default=512,
                        help="X-UMX hidden size (default: 512, the official one)")
    parser.add_argument("--backend", default=None,
                        help="eval.py --backend (default: not given, i.e. eval.py's default)")
    parser.add_argument("--repeats", type=PositiveInt, default=1,
                        help="time each setting this many times, in ABBA order; the ratio "
                             "is that of the median wall times (default: 1)")
    parser.add_argument("--seed", type=NonNegativeInt, default=0)
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary folder (tracks, weights, scores)")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="xumx-eval-jobs-"))
    t_all = time.perf_counter()
    try:
        root, weights = work / "musdb", work / "xumx.h5"
        names = make_tracks(root, args.tracks)
        import soundfile as sf

        mixture, _ = sf.read(root / "test" / names[0] / "mixture.wav", dtype="float32")
        make_weights(weights, mixture, args.hidden_size, args.seed)
        common = dict(weights=weights, root=root, cache=work / "cache", backend=args.backend)
        print("[bench] warm-up: eval.py --jobs 1 on one track ...", file=sys.stderr, flush=True)
        warmup = run_eval(1, out_dir=work / "warmup", tracks=names[:1], **common)
        load_before = load_line()
        runs = {1: [], args.jobs: []}
        for repeat in range(args.repeats):
            # ABBA order over the repeats, so that a drift in the machine's load falls on
            # both sides alike
            for jobs in (1, args.jobs) if repeat % 2 == 0 else (args.jobs, 1):
                out_dir = work / f"jobs{jobs}-{repeat + 1}"
                print(f"[bench] eval.py --jobs {jobs} ({repeat + 1}/{args.repeats}) ...",
                      file=sys.stderr, flush=True)
                run = run_eval(jobs, out_dir=out_dir, **common)
                run["differing_tracks"] = compare_scores(work / "jobs1-1", out_dir, names)
                runs[jobs].append(run)
                print(f"[bench] --jobs {jobs}: {run['wall_s']:.1f} s", file=sys.stderr,
                      flush=True)
        wall = {jobs: float(np.median([r["wall_s"] for r in rs])) for jobs, rs in runs.items()}
        ratio = wall[args.jobs] / wall[1]
        differing = sorted({name for rs in runs.values() for r in rs
                            for name in r["differing_tracks"]})
        lines = [
            f"- model: X-UMX hidden {args.hidden_size}, 3-layer BLSTM, n_fft 4096, hop 1024, "
            f"random weights; backend {runs[1][0]['backend']}",
            f"- data: {args.tracks} tracks of {len(mixture) / 44100:.1f} s (WAV layout)",
            f"- machine: {os.cpu_count()} CPUs, load average before {load_before}, after "
            f"{load_line()}",
            f"- warm-up (one track, --jobs 1, fills the cache): {warmup['wall_s']:.1f} s",
            "",
            "| eval.py | wall s | CPU s (all its processes) |",
            "|---|---|---|",
        ]
        for jobs, rs in runs.items():
            walls = ", ".join(f"{r['wall_s']:.1f}" for r in rs)
            cpus = ", ".join(f"{r['cpu_s']:.1f}" for r in rs)
            lines.append(f"| --jobs {jobs} | {walls} | {cpus} |")
        lines += [
            "",
            f"- ratio --jobs {args.jobs} / --jobs 1 (median wall times): {ratio:.2f} "
            f"(goal <= {GOAL_RATIO}: {'OK' if ratio <= GOAL_RATIO else 'NOT MET'})",
            "- per-track JSON scores: " + (
                f"identical in all {2 * args.repeats} runs" if not differing else
                f"DIFFERENT for {differing}"),
            f"- benchmark wall time: {time.perf_counter() - t_all:.0f} s",
        ]
        print("\n".join(lines))
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(
                {"args": vars(args), "warmup": warmup,
                 "runs": {str(k): v for k, v in runs.items()}, "median_wall_s": wall,
                 "ratio": ratio, "scores_identical": not differing}, indent=2))
    finally:
        if args.keep:
            print(f"[bench] kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    run_cli(main)
