"""The library every paper folder imports: the contracts they share and the code two papers need.

Top level: ``cli`` (the one command-line parser and ``run_cli``), ``config`` (YAML options),
``context`` (cpu/cudnn), ``errors`` (one-line user errors), ``fileio`` (atomic writes, output
locations), ``paths``, ``pretrained`` (published weights), ``report`` (markdown/PNG reports),
``results`` (evaluation folders that record their model), ``terminal`` (progress bars,
Ctrl-C).

Subpackages:

* ``common.data``: dataset loaders in their official on-disk formats, the bundled data;
* ``common.train``: the run lifecycle of every training script (output folder, resume,
  Ctrl-C, divergence), checkpoints, data-parallel training, curves, schedules, seeding,
  out-of-core execution;
* ``common.runtime``: running trained networks: parameter files, graph caching, ONNX export
  and sessions;
* ``common.mss``: music source separation (audio I/O, STFT, chunked separation, museval
  evaluation, the separate/eval command lines and the training skeleton of X-UMX and D3Net);
* ``common.dev``: helpers for tests and benchmarks.
"""
import os as _os

# Before nnabla is imported anywhere: its console log without INFO lines (see nnabla.conf).
_os.environ.setdefault("NNABLA_CONFIG_FILE_PATH",
                       _os.path.join(_os.path.dirname(__file__), "nnabla.conf"))
