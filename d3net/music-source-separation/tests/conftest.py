"""Shared fixtures for the D3Net MSS parity tests.

Fixture data live in ``$FIXTURES_DIR/d3net-mss`` (default ``../shared/fixtures`` relative to
the repository root; a relative ``FIXTURES_DIR`` is resolved against the repository root).
Files are discovered by pattern, never by fixed name lists:

* ``*.h5``: one official-layout parameter file per target; the target is the files'
  ``<target>/`` name prefix (else the file stem) and its network config is our
  ``configs/<target>.yaml``;
* ``d3net_mss_*.npz``: the single-forward file is the one with an ``input`` array and
  ``output_<target>`` arrays; the separation file the one with ``audio`` and ``inp_stft``
  (plus ``mag_<target>``, ``mwf_stft_head_<target>``, ``est_<target>``).

A missing directory or file makes the test that needs it *fail* with a message saying where
it looked. Every size and setting comes from the files and the configs.

The full official networks are slow on CPU (about 5 s per 64 frames for vocals), so the
network work (forward fixture + patch-wise inference of the separation fixture) runs once
per session, one worker process per target, in parallel (``D3NET_TEST_JOBS`` limits the
number of concurrent workers; default: number of CPUs).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

# The shared script contracts (tests/test_scripts.py) live in common.dev: rewrite their
# asserts like this folder's own, so that a failure shows the values compared.
pytest.register_assert_rewrite("common.dev.mss_testing")

from common.dev.testing import FixtureFolder  # noqa: E402
from common.paths import REPO_ROOT  # noqa: E402

SUBDIR = "d3net-mss"



def _fail(msg):
    pytest.fail(msg, pytrace=False)


# Worker run in a subprocess per target: network forward on the forward fixture and the
# separator's STFT + patch-wise inference on the separation fixture. Writes an .npz + .json.
WORKER = r"""
import json, sys, time
import numpy as np
from d3net_mss import weights
from d3net_mss.separator import NnablaRunner, Separator

h5, target, fwd_path, sep_path, out = sys.argv[1:6]
meta = {"target": target}
t0 = time.time()
params, config = weights.load_target(h5)
meta["config_target"] = config["target"]
meta["load_seconds"] = time.time() - t0
res = {}
if sep_path:
    with np.load(sep_path) as d:
        audio = d["audio"]
    sep = Separator.from_params({target: params}, {target: config}, mwf=False,
                                ch_flip_average=True, backend="nnabla")

    class Recorder:
        def __init__(self, runner):
            self.runner, self.shapes = runner, []

        @property
        def graph_builds(self):
            return self.runner.graph_builds

        def __call__(self, x):
            self.shapes.append(list(x.shape))
            return self.runner(x)

    rec = Recorder(sep.runners[target])
    sep._runners[target] = rec
    t0 = time.time()
    X, mags = sep.analyze(audio)
    meta["patch_seconds"] = time.time() - t0
    meta["patch_graph_builds"] = sep.graph_builds
    meta["patch_shapes"] = rec.shapes
    res["mag"] = mags[target]
if fwd_path:
    with np.load(fwd_path) as d:
        x = d["input"]
    runner = NnablaRunner(params, config)
    t0 = time.time()
    res["forward"] = runner(x)
    meta["forward_seconds"] = time.time() - t0
import resource
usage = resource.getrusage(resource.RUSAGE_SELF)
meta["cpu_seconds"] = usage.ru_utime + usage.ru_stime
np.savez(out + ".npz", **res)
with open(out + ".json", "w") as fh:
    json.dump(meta, fh)
"""


class D3NetFixtures(FixtureFolder):
    """Lazy, session-cached access to the d3net-mss fixture files."""

    def __init__(self, root=None):
        super().__init__(SUBDIR, root)

    @property
    def param_files(self):
        """``{target: path}`` of every ``*.h5`` (target from the name prefix / stem)."""
        def make():
            self.check_dir()
            files = sorted(self.dir.glob("*.h5"))
            if not files:
                _fail(f"no D3Net parameter files (*.h5) in {self.dir}")
            from common.runtime.params_io import read_param_file
            from d3net_mss.weights import detect_target

            out = {}
            for f in files:
                params, _ = read_param_file(str(f))
                out[detect_target(params, f)] = f
            return out
        return self.memo("param_files", make)

    def _npz_with(self, keys, what):
        self.check_dir()
        found = []
        for f in sorted(self.dir.glob("d3net_mss_*.npz")):
            with np.load(f) as d:
                if all(k in d.files for k in keys):
                    found.append(f)
        if not found:
            _fail(f"no {what} fixture (d3net_mss_*.npz holding {', '.join(keys)}) in {self.dir}")
        if len(found) > 1:
            _fail(f"several {what} fixtures in {self.dir}: {[f.name for f in found]}")
        return found[0]

    def _load(self, path):
        with np.load(path) as d:
            return {k: d[k] for k in d.files}

    @property
    def forward_path(self):
        return self.memo("fwd_path", lambda: self._npz_with(["input"], "single-forward"))

    @property
    def separate_path(self):
        return self.memo("sep_path", lambda: self._npz_with(["audio", "inp_stft"],
                                                            "separation"))

    @property
    def forward(self):
        return self.memo("fwd", lambda: self._load(self.forward_path))

    @property
    def separate(self):
        return self.memo("sep", lambda: self._load(self.separate_path))

    @staticmethod
    def _targets_of(data, prefix):
        return [k[len(prefix):] for k in data if k.startswith(prefix)]

    @property
    def forward_targets(self):
        return self._targets_of(self.forward, "output_")

    @property
    def separate_targets(self):
        """Targets of the separation fixture, in the order the official run used (the order
        of the ``mag_*`` arrays)."""
        return self._targets_of(self.separate, "mag_")

    # ------------------------------------------------------------------ network results
    def network_results(self):
        """``{target: (arrays, meta)}`` from one worker process per target (run once)."""
        return self.memo("results", self._run_workers)

    def _run_workers(self):
        files = self.param_files
        fwd_t, sep_t = set(self.forward_targets), set(self.separate_targets)
        missing = sorted((fwd_t | sep_t) - set(files))
        if missing:
            _fail(f"fixture outputs for target(s) {missing} but no parameter file for them "
                  f"in {self.dir} (found {sorted(files)})")
        jobs = int(os.environ.get("D3NET_TEST_JOBS", "0")) or (os.cpu_count() or 1)
        tmp = Path(tempfile.mkdtemp(prefix="d3net_mss_parity_"))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        pending = [t for t in files if t in fwd_t or t in sep_t]
        running, results = {}, {}
        t_start = time.time()
        while pending or running:
            while pending and len(running) < jobs:
                t = pending.pop(0)
                out = str(tmp / t)
                args = [sys.executable, "-c", WORKER, str(files[t]), t,
                        str(self.forward_path) if t in fwd_t else "",
                        str(self.separate_path) if t in sep_t else "", out]
                # output goes to files: a full pipe would block the worker
                with open(out + ".log", "w") as log:
                    running[t] = (subprocess.Popen(args, cwd=str(REPO_ROOT), env=env,
                                                   stdout=log, stderr=subprocess.STDOUT),
                                  out)
            for t, (proc, out) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[t]
                if proc.returncode != 0:
                    for other, _ in running.values():
                        other.kill()
                    with open(out + ".log") as log:
                        tail = "\n".join(log.read().strip().splitlines()[-15:])
                    _fail(f"network worker for '{t}' failed (exit {proc.returncode}):\n{tail}")
                with np.load(out + ".npz") as d:
                    arrays = {k: d[k] for k in d.files}
                with open(out + ".json") as fh:
                    meta = json.load(fh)
                meta["wall_seconds"] = time.time() - t_start
                results[t] = (arrays, meta)
            time.sleep(0.2)
        shutil.rmtree(tmp, ignore_errors=True)
        return results

    def result(self, target):
        return self.network_results()[target]


@pytest.fixture(scope="session")
def fx():
    return D3NetFixtures()


def pytest_generate_tests(metafunc):
    """Parametrise ``param_target`` / ``forward_target`` / ``sep_target`` over the targets
    found in the fixture folder (a placeholder that fails when nothing is found)."""
    names = {"param_target", "forward_target", "sep_target"} & set(metafunc.fixturenames)
    if not names:
        return
    fxs = D3NetFixtures()
    for name in names:
        try:
            if name == "param_target":
                targets = _discover_param_targets(fxs)
            else:
                path_keys = ["input"] if name == "forward_target" else ["audio", "inp_stft"]
                prefix = "output_" if name == "forward_target" else "mag_"
                targets = _discover_npz_targets(fxs, path_keys, prefix)
        except Exception:  # noqa: BLE001 - reported by the test itself
            targets = []
        metafunc.parametrize(name, targets or ["<none found>"])


def _discover_param_targets(fxs):
    if not fxs.dir.is_dir():
        return []
    from common.runtime.params_io import read_param_file
    from d3net_mss.weights import detect_target

    out = []
    for f in sorted(fxs.dir.glob("*.h5")):
        params, _ = read_param_file(str(f))
        out.append(detect_target(params, f))
    return out


def _discover_npz_targets(fxs, keys, prefix):
    if not fxs.dir.is_dir():
        return []
    for f in sorted(fxs.dir.glob("d3net_mss_*.npz")):
        with np.load(f) as d:
            if all(k in d.files for k in keys):
                return [k[len(prefix):] for k in d.files if k.startswith(prefix)]
    return []
