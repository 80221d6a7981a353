"""Evaluate a music-source separator on MUSDB18 with museval (BSSEval v4).

:func:`evaluate_musdb` separates every track of a subset with a separator (see
:mod:`common.mss.separation` for the interface) and scores it with
``museval.eval_mus_track`` (1 s windows and hops, as in SiSEC 2018).

* ``jobs > 1`` evaluates tracks in parallel worker *processes* (``spawn``
  start method), started once for the whole run. Each worker calls the picklable
  ``separator_factory`` once, on its first track, reuses that separator (one graph
  per worker) and scores each track as soon as it has separated it. The workers
  split the cores of this process between them (:func:`core_shares`): each is
  pinned to its own share and its BLAS/OpenMP thread pools are sized to it, so
  that every runtime inside (onnxruntime sizes its sessions by the CPU affinity,
  numpy's and scipy's BLAS by ``OPENBLAS_NUM_THREADS``) runs one thread per core
  instead of each worker starting one per core of the machine. Workers ignore
  Ctrl-C: the main process stops them and reports in one line (exit 130).
  museval always scores with one BLAS thread (``SCORING_THREADS``), so the scores are
  the same, to the last digit, for any ``jobs`` and on any machine.
* Each finished track's scores are written at once, in museval's own JSON
  format, to ``<out_dir>/<subset>/<track name>.json`` (atomically), so an
  interrupted run resumes: tracks whose JSON exists and parses are skipped.
  That reuse is only right for the same model and settings: with ``settings``
  (what :func:`run_evaluation` passes: the model's fingerprint and every option that
  changes a score) the folder is claimed with :func:`common.results.claim_results_folder`
  and a rerun with another model or other settings is refused in one line.
* The output folder is checked before anything is computed, and the dataset before
  the model is built: an unreadable or incomplete MUSDB18 file is one line naming it
  (:func:`common.data.musdb.check_tracks`), with nothing written.
* The summary follows museval's ``EvalStore``: the median over a track's
  frames per (track, target, metric), then the median over tracks per
  (target, metric); NaN frames are ignored. It is computed by
  ``museval.EvalStore.agg_frames_tracks_scores`` on the JSON files of the
  selected tracks, printed and saved as ``scores_<subset>.csv`` / ``.md``,
  with per-track medians in ``tracks_<subset>.csv``, museval's frame-level
  DataFrame in ``museval_<subset>.pandas`` (loadable by
  ``museval.MethodStore``) and an SDR box plot over tracks, one box per
  target, in ``sdr_<subset>.png`` (with up to ``FEW_TRACKS`` tracks, one named point per
  track instead). Below the targets the tables add the ``mean`` and ``median`` over the
  instruments (:func:`summary_rows`): the "Avg." of the published tables.
"""
import contextlib
import json
import multiprocessing
import os
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.cli import PositiveInt
from common.data.musdb import DECODE_ERRORS, decode_error_text, open_musdb
from common.errors import UserError
from common.fileio import (atomic_path, atomic_write, check_output_location,
                           refuse_overwriting_inputs)
from common.mss.separation import add_chunk_args, check_chunk_args, separate_audio
from common.results import claim_results_folder
from common.terminal import check_interrupt, interrupt_message
from common.terminal import progress as terminal_progress

__all__ = [
    "METRICS",
    "SCORING_THREADS",
    "THREAD_VARIABLES",
    "INSTRUMENTS",
    "MUSDB_TARGETS",
    "EvalResult",
    "add_eval_args",
    "aggregate_scores",
    "core_shares",
    "evaluate_musdb",
    "run_evaluation",
    "sdr_figure",
    "summary_rows",
    "track_json_path",
]

METRICS = ("SDR", "SIR", "ISR", "SAR")
MUSDB_TARGETS = ("vocals", "drums", "bass", "other", "accompaniment")
# What the published tables average over (their "Avg." leaves out accompaniment).
INSTRUMENTS = ("vocals", "drums", "bass", "other")
SUMMARY_NOTE = ("mean and median over the instrument targets above (accompaniment left out), "
                "as the published MUSDB18 tables' average")
# Up to this many tracks the SDR plot shows each track's points instead of boxes.
FEW_TRACKS = 5
DEFAULT_OUT_DIR = "evaluation"


def add_eval_args(parser, chunk_dur=0.0):
    """Add the model-independent flags of an ``eval.py`` script to ``parser``;
    ``chunk_dur`` is the default of ``--chunk-dur``."""
    env_root = os.environ.get("MUSDB_PATH")
    parser.add_argument("--root", default=env_root, required=env_root is None, metavar="DIR",
                        help="MUSDB18 root holding train/ and test/ "
                             "(default: $MUSDB_PATH" + (f" = {env_root})" if env_root else ")"))
    parser.add_argument("--subset", default="test", choices=["test", "train"],
                        help="MUSDB18 subset to evaluate (default: test)")
    parser.add_argument("--is-wav", action="store_true",
                        help="the root uses the decoded WAV layout (<track>/mixture.wav, ...) "
                             "instead of .stem.mp4 files")
    parser.add_argument("--jobs", "--cores", type=PositiveInt, default=1, metavar="N",
                        help="evaluate N tracks in parallel processes, each with its own "
                             "model copy and share of the cores; museval scores on one core "
                             "per process (default: 1)")
    parser.add_argument("--out-dir", "-o", default=DEFAULT_OUT_DIR, metavar="DIR",
                        help="per-track JSON scores go to DIR/<subset>/, summary tables and "
                             f"plots to DIR/ (default: {DEFAULT_OUT_DIR}); finished tracks are "
                             "skipped when rerun with the same model and settings")
    parser.add_argument("--tracks", nargs="+", default=None, metavar="NAME",
                        help="evaluate only these tracks (names as in MUSDB18)")
    parser.add_argument("--save-estimates", action="store_true",
                        help="also write the estimates to DIR/estimates/<subset>/<track>/")
    add_chunk_args(parser, chunk_dur)
    parser.add_argument("--no-progress", action="store_true", help="do not show progress bars")
    return parser


def track_json_path(out_dir, subset, track_name):
    """Where museval's JSON scores of one track live."""
    return Path(out_dir) / subset / f"{track_name}.json"


def _read_scores(path):
    """Parsed museval JSON of a track, or ``None`` if missing/corrupt/empty."""
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not data.get("targets"):
        return None
    return data


def _is_done(path, targets):
    data = _read_scores(path)
    if data is None:
        return False
    if targets:
        have = {t.get("name") for t in data["targets"]}
        return set(targets) <= have
    return True


def _atomic_write_text(path, text):
    with atomic_write(path, "w") as fh:
        fh.write(text)


# --------------------------------------------------------------------------- per track

def _select_targets(separator_targets, requested):
    available = [t for t in separator_targets if t in MUSDB_TARGETS]
    if requested:
        bad = [t for t in requested if t not in separator_targets]
        if bad:
            raise UserError(f"requested targets {bad} are not produced by the separator "
                            f"(it gives {list(separator_targets)})")
        not_musdb = [t for t in requested if t not in MUSDB_TARGETS]
        if not_musdb:
            raise UserError(f"targets {not_musdb} have no MUSDB18 reference; "
                            f"choose from {list(MUSDB_TARGETS)}")
        available = list(requested)
    if len(available) < 2:
        raise UserError(f"BSSEval needs at least two MUSDB18 targets to score, got {available} "
                        f"(separator gives {list(separator_targets)})")
    return available


def _track_files(track):
    """The files of a musdb track (its stem file, or its WAV files)."""
    return sorted({track.path} | {src.path for src in track.sources.values()})


def _decode(track):
    """Decode the mixture and cache every source (museval reads the references from the
    cache instead of decoding them again); an undecodable file is one line naming it."""
    try:
        for src in track.sources.values():
            src.audio = np.asarray(src.audio)
        return np.asarray(track.audio, dtype=np.float32)
    except DECODE_ERRORS as exc:
        where = track.path if not track.is_wav else Path(track.path).parent
        raise UserError(f"{where}: cannot decode ({decode_error_text(exc)})") from None


def _release(track):
    for src in track.sources.values():
        src.audio = None


def _process_track(state, track):
    """Separate and score one track; write its JSON. Runs in the main process or a worker."""
    import museval
    from threadpoolctl import threadpool_limits

    cfg = state["config"]
    if "separator" not in state:
        state["separator"] = state["factory"]()
    separator = state["separator"]
    targets = _select_targets(list(separator.targets), cfg["targets"])
    mixture = _decode(track)
    try:
        estimates, _ = separate_audio(separator, mixture, int(track.rate),
                                      chunk_dur=cfg["chunk_dur"],
                                      chunk_overlap=cfg["chunk_overlap"],
                                      progress=cfg["chunk_progress"])
        estimates = {t: estimates[t].astype(np.float64) for t in targets}
        if cfg["save_estimates"]:
            from common.mss.audio import write_wav
            est_dir = Path(cfg["out_dir"]) / "estimates" / track.subset / track.name
            refuse_overwriting_inputs([est_dir / f"{t}.wav" for t in estimates],
                                      _track_files(track), "--out-dir")
            for t, est in estimates.items():
                write_wav(est_dir / f"{t}.wav", est, int(track.rate))
        with threadpool_limits(SCORING_THREADS, user_api="blas"):
            scores = museval.eval_mus_track(track, estimates, output_dir=None)
    finally:
        _release(track)
    scores.validate()
    _atomic_write_text(track_json_path(cfg["out_dir"], track.subset, track.name), scores.json)
    return track.name


# BLAS threads museval scores with, whatever --jobs and the machine: its linear solves round
# differently with another thread count (2.6e-7 dB apart with 1 and 2 threads on a 6 s
# track, enough to change the JSON's 5th decimal). The price: those solves (about half of
# museval's CPU time) no longer use several cores in --jobs 1; --jobs N uses N cores.
SCORING_THREADS = 1
_WORKER_STATE = {}
# The thread-pool sizes of OpenMP and the BLAS libraries numpy and scipy load. They are read
# when a library is loaded, which in a worker happens while it imports the calling script,
# before any initializer runs: so they are set in the environment the workers start with.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def core_shares(cores, workers):
    """``workers`` lists of cores out of ``cores``: disjoint, contiguous and as even as
    possible when there are enough cores, else one core each, in turn."""
    cores = sorted(cores)
    if workers >= len(cores):
        return [[cores[i % len(cores)]] for i in range(workers)]
    return [cores[i * len(cores) // workers:(i + 1) * len(cores) // workers]
            for i in range(workers)]


def _allowed_cores():
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux: no pinning
        return None


def _pin_process(cores):
    """Restrict every thread of this process, and the threads it starts later, to
    ``cores``."""
    for task in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(task), cores)
        except OSError:  # the thread has ended meanwhile
            pass


def _claim_share(lock_dir, count):
    """The number of the first of ``count`` core shares no other worker holds: each share
    is an exclusive lock on a file in ``lock_dir``, held (fd left open) for the worker's
    life and released by the system when it ends. (A shared counter would need a semaphore,
    which the resource tracker reports as leaked when Ctrl-C terminates the pool.)"""
    import fcntl

    for number in range(count):
        fd = os.open(os.path.join(lock_dir, f"share-{number}"), os.O_CREAT | os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return number
        except BlockingIOError:
            os.close(fd)
    return os.getpid() % count  # a replacement worker while the old one still exits


def _worker_init(factory, config, shares, lock_dir):
    # Ctrl-C in a terminal reaches every process of the group: the main process stops the
    # workers itself, so they ignore it (no traceback from each of them).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # tqdm's default lock is a multiprocessing semaphore; a worker that Ctrl-C terminates
    # mid-track could not release it, and the resource tracker would report it as leaked.
    import threading

    from tqdm import tqdm
    tqdm.set_lock(threading.RLock())
    if shares:
        _pin_process(shares[_claim_share(lock_dir, len(shares))])
    # Only store; the separator is built lazily in the first task, so a failing
    # factory surfaces as a task error instead of endless worker restarts.
    _WORKER_STATE.clear()
    _WORKER_STATE.update(factory=factory, config=config)


def _worker_task(track):
    return _process_track(_WORKER_STATE, track)


def _worker_environment(shares):
    """``os.environ`` changes for the workers: each thread pool no larger than the smallest
    share of cores (a smaller size the user set is kept)."""
    threads = min(len(share) for share in shares)
    changes = {}
    for name in THREAD_VARIABLES:
        current = os.environ.get(name, "")
        if not (current.isdigit() and 0 < int(current) <= threads):
            changes[name] = str(threads)
    return changes


@contextlib.contextmanager
def _start_pool(ctx, processes, factory, config):
    """The worker pool, each worker pinned to its share of the cores (see
    :func:`core_shares`). Started with SIGINT ignored, so that the workers inherit that
    from their first instruction on (Python keeps an ignored SIGINT ignored at start-up),
    and with the thread-pool sizes of their share in the environment (spawned workers copy
    it when they start: all of them start here). Leaving the block terminates the pool."""
    cores = _allowed_cores()
    shares = core_shares(cores, processes) if cores else None
    changes = _worker_environment(shares) if shares else {}
    saved = {name: os.environ.get(name) for name in changes}
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    with tempfile.TemporaryDirectory(prefix="eval-cores-") as lock_dir:
        try:
            os.environ.update(changes)
            pool = ctx.Pool(processes, initializer=_worker_init,
                            initargs=(factory, config, shares, lock_dir))
        finally:
            signal.signal(signal.SIGINT, previous)
            for name, value in saved.items():
                if value is None:
                    del os.environ[name]
                else:
                    os.environ[name] = value
        with pool:
            yield pool


# --------------------------------------------------------------------------- aggregation

def aggregate_scores(json_paths):
    """museval aggregation of per-track JSON files.

    Returns ``(table, per_track, store)``: ``table`` is a DataFrame indexed by
    target with columns SDR, SIR, ISR, SAR (median over frames, then median
    over tracks, as ``museval.EvalStore.agg_frames_tracks_scores``);
    ``per_track`` has the frame medians per (track, target) with the metrics as
    columns; ``store`` is the filled ``museval.EvalStore``. The track name of a
    JSON file is its file stem, as in ``EvalStore.add_eval_dir``.
    """
    import museval
    import simplejson

    store = museval.EvalStore(frames_agg="median", tracks_agg="median")
    order = []
    for path in json_paths:
        path = Path(path)
        with open(path) as fh:
            data = simplejson.loads(fh.read(), allow_nan=True)
        store.add_track(museval.json2df(data, path.stem))
        for t in data["targets"]:
            if t["name"] not in order:
                order.append(t["name"])
    if store.df.empty:
        raise UserError("no scores to aggregate")
    table = store.agg_frames_tracks_scores().unstack("metric")
    table = table.reindex(index=order, columns=list(METRICS))
    per_track = store.agg_frames_scores().unstack("metric").reindex(columns=list(METRICS))
    table.index.name, table.columns.name = "target", None
    per_track.columns.name = None
    return table, per_track, store


def summary_rows(table):
    """The rows the published MUSDB18 tables add to the per-target scores: ``mean`` (their
    "Avg.") and ``median`` over the instrument targets (vocals, drums, bass, other) of
    ``table``, accompaniment left out as in those tables. Empty when fewer than two
    instruments were scored (nothing to summarise)."""
    instruments = [t for t in table.index if t in INSTRUMENTS]
    scores = table.loc[instruments]
    if len(instruments) < 2:
        return scores.iloc[:0]
    rows = scores.agg(["mean", "median"])
    rows.index.name = table.index.name
    return rows


def _markdown(table, summary, title):
    cols = list(table.columns)
    lines = [f"**{title}**", "", "| target | " + " | ".join(cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for target, row in table.iterrows():
        lines.append(f"| {target} | " + " | ".join(f"{row[c]:.3f}" for c in cols) + " |")
    for name, row in summary.iterrows():
        lines.append(f"| *{name}* | " + " | ".join(f"*{row[c]:.3f}*" for c in cols) + " |")
    if not summary.empty:
        lines += ["", f"*mean* / *median*: {SUMMARY_NOTE}."]
    return "\n".join(lines) + "\n"


def sdr_figure(per_track, order, title):
    """The SDR plot (a matplotlib figure) of the per-track medians: one box per target over
    the tracks, or, with at most ``FEW_TRACKS`` tracks (where a box is a flat line), one
    point per track and target, each track in its own marker and colour, named in the
    legend below the axes."""
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    sdr = per_track["SDR"].unstack("target").reindex(columns=order)
    tracks = list(sdr.index)
    few = len(tracks) <= FEW_TRACKS
    # a legend row per track below the axes
    fig, ax = plt.subplots(figsize=(max(4.5, 1.6 + 1.2 * len(order)),
                                    4 + (0.25 * len(tracks) + 0.3 if few else 0)))
    positions = np.arange(1, len(order) + 1)
    if few:
        # side by side within a target, so that equal scores stay visible
        offsets = (np.arange(len(tracks)) - (len(tracks) - 1) / 2) * 0.12
        for k, track in enumerate(tracks):
            values = sdr.loc[track].to_numpy(dtype=float)
            ax.plot(positions + offsets[k], values, linestyle="none", marker="osD^v<>"[k % 7],
                    markersize=7, label=track)
        ax.set_xlim(0.5, len(order) + 0.5)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=1, frameon=False,
                  fontsize="small")
    else:
        ax.boxplot([sdr[t].dropna().to_numpy() for t in order], positions=positions)
    ax.set_xticks(positions, order)
    ax.set_ylabel("SDR [dB] (median over frames, per track)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def _save_sdr_plot(per_track, order, path, title):
    import matplotlib.pyplot as plt

    fig = sdr_figure(per_track, order, title)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)


@dataclass
class EvalResult:
    """What :func:`evaluate_musdb` returns."""
    table: object          # pandas DataFrame: target x (SDR, SIR, ISR, SAR)
    summary: object        # pandas DataFrame: mean/median (see summary_rows) x metrics
    per_track: object      # pandas DataFrame: (track, target) x metrics
    store: object          # museval.EvalStore holding every frame score
    evaluated: list        # track names separated in this call
    skipped: list          # track names reused from existing JSON files
    files: dict = field(default_factory=dict)  # name -> Path of the written summaries


# --------------------------------------------------------------------------- driver

def _load_tracks(root, subset, is_wav, tracks):
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise UserError(f"MUSDB18 root not found: '{root}'")
    found = list(open_musdb(root_path, subset=subset, split=None, is_wav=is_wav).tracks)
    if tracks:
        names = {t.name for t in found}
        unknown = [t for t in tracks if t not in names]
        if unknown:
            raise UserError(f"unknown track(s) in subset '{subset}': {unknown}")
        wanted = set(tracks)
        found = [t for t in found if t.name in wanted]
    return found


def evaluate_musdb(separator_factory, root, subset="test", is_wav=False,
                   out_dir=DEFAULT_OUT_DIR, jobs=1, targets=None, tracks=None, chunk_dur=0.0,
                   chunk_overlap=None, save_estimates=False, progress=True, quiet=False,
                   settings=None):
    """Separate and score MUSDB18 tracks; return an :class:`EvalResult`.

    ``separator_factory()`` builds a separator (interface in
    :mod:`common.mss.separation`); with ``jobs > 1`` it must be picklable (a
    top-level class/function or a ``functools.partial`` of one) because each
    worker process calls it once. ``targets`` restricts the scored targets
    (default: every separator target MUSDB18 has a reference for; at least two
    are needed). ``tracks`` restricts the track names. Tracks with an existing
    JSON in ``<out_dir>/<subset>/`` (containing the requested ``targets``) are
    not separated again. The summary is printed unless ``quiet``.

    ``settings`` (a JSON-able dict: the model's fingerprint and its options that change
    scores) makes ``out_dir`` record what produced its scores, together with the dataset
    and chunking options of this call; a folder holding another model's or other settings'
    scores is then refused in one line (see :func:`common.results.claim_results_folder`).

    Worker processes are started with ``spawn``, which re-imports the calling
    script: its entry point must sit under ``if __name__ == "__main__":``.
    """
    chunk_dur, chunk_overlap = check_chunk_args(chunk_dur, chunk_overlap)
    jobs = int(jobs)
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {jobs}")
    if targets is not None:
        targets = list(targets)
        bad = [t for t in targets if t not in MUSDB_TARGETS]
        if bad:
            raise UserError(f"targets {bad} have no MUSDB18 reference; "
                            f"choose from {list(MUSDB_TARGETS)}")
    out_dir = Path(out_dir)
    check_output_location(out_dir, "--out-dir")
    selected = _load_tracks(root, subset, is_wav, tracks)
    if settings is not None:
        claim_results_folder(out_dir, dict(
            settings, root=str(Path(root).expanduser().resolve()), is_wav=bool(is_wav),
            chunk_dur=chunk_dur, chunk_overlap=chunk_overlap), "*/*.json")
    todo = [t for t in selected
            if not _is_done(track_json_path(out_dir, t.subset, t.name), targets)]
    skipped = [t.name for t in selected if t not in todo]
    if skipped and not quiet:
        print(f"skipping {len(skipped)} track(s) already scored in {out_dir / subset}",
              file=sys.stderr)
    config = dict(out_dir=str(out_dir), targets=targets, chunk_dur=chunk_dur,
                  chunk_overlap=chunk_overlap, save_estimates=bool(save_estimates),
                  chunk_progress=False if (jobs > 1 or not progress) else None)

    bar = terminal_progress(total=len(selected), initial=len(skipped), desc=f"MUSDB18 {subset}",
                            unit="track", **({} if progress else {"disable": True}))
    evaluated = []

    def interrupted():
        return (f"interrupted; {len(evaluated) + len(skipped)} of {len(selected)} track(s) "
                f"are scored in {out_dir / subset}; run the same command again to score "
                "the rest")

    try:
        with interrupt_message(interrupted):
            if todo and (jobs == 1 or len(todo) == 1):
                state = {"factory": separator_factory, "config": config}
                for track in todo:
                    bar.set_postfix_str(track.name[:40])
                    evaluated.append(_process_track(state, track))  # stops between chunks
                    bar.update(1)
                    check_interrupt()
            elif todo:
                ctx = multiprocessing.get_context("spawn")
                with _start_pool(ctx, min(jobs, len(todo)), separator_factory,
                                 config) as pool:
                    results = pool.imap_unordered(_worker_task, todo, chunksize=1)
                    while len(evaluated) < len(todo):
                        try:  # wake up regularly to notice Ctrl-C
                            name = results.next(timeout=0.2)
                        except multiprocessing.TimeoutError:
                            check_interrupt()
                            continue
                        evaluated.append(name)
                        bar.set_postfix_str(name[:40])
                        bar.update(1)
                        check_interrupt()
    finally:
        bar.close()

    import pandas as pd

    json_paths = [track_json_path(out_dir, t.subset, t.name) for t in selected]
    table, per_track, store = aggregate_scores(json_paths)
    order = list(table.index)
    title = (f"MUSDB18 {subset}: {per_track.index.get_level_values('track').nunique()} tracks, "
             "median over frames, median over tracks")
    files = {
        "csv": out_dir / f"scores_{subset}.csv",
        "markdown": out_dir / f"scores_{subset}.md",
        "per_track": out_dir / f"tracks_{subset}.csv",
        "pandas": out_dir / f"museval_{subset}.pandas",
        "sdr_plot": out_dir / f"sdr_{subset}.png",
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summary_rows(table)
    _atomic_write_text(files["csv"], pd.concat([table, summary]).to_csv(float_format="%.5f"))
    _atomic_write_text(files["markdown"], _markdown(table, summary, title))
    _atomic_write_text(files["per_track"], per_track.to_csv(float_format="%.5f"))
    with atomic_path(files["pandas"]) as tmp:
        store.save(tmp)
    _save_sdr_plot(per_track, order, files["sdr_plot"], f"MUSDB18 {subset}: SDR per track")
    if not quiet:
        print(title)
        print(pd.concat([table, summary]).to_string(float_format=lambda v: f"{v:8.3f}"))
        if not summary.empty:
            print(f"mean / median: {SUMMARY_NOTE}")
    return EvalResult(table=table, summary=summary, per_track=per_track, store=store,
                      evaluated=evaluated, skipped=skipped, files=files)


def run_evaluation(args, separator_factory, targets=None, settings=None):
    """Run an ``eval.py`` from arguments parsed with :func:`add_eval_args` (``settings``: see
    :func:`evaluate_musdb`)."""
    return evaluate_musdb(separator_factory, args.root, subset=args.subset, is_wav=args.is_wav,
                          out_dir=args.out_dir, jobs=args.jobs, targets=targets,
                          tracks=args.tracks, chunk_dur=args.chunk_dur,
                          chunk_overlap=args.chunk_overlap,
                          save_estimates=getattr(args, "save_estimates", False),
                          progress=not getattr(args, "no_progress", False), settings=settings)
