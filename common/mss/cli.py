"""Command lines shared by the music-source-separation papers' ``separate.py`` and ``eval.py``.

A paper's ``cli`` module supplies only what is specific to its model (a :class:`Model`):
a function adding its model flags to a parser, its published weight names, the options that
change scores, and a *factory maker* ``make_factory(args, weights) -> factory``, where
``factory()`` builds the separator (interface in :mod:`common.mss.separation`) from the local
weights path and is picklable, so ``eval.py --jobs N`` can build one copy per worker process.
Everything else lives here:

* :func:`separate_main` / :func:`eval_main`: parse (YAML ``--config`` defaults, as every
  script), validate, build the separator once, run :func:`common.mss.separation.run_separation`
  or :func:`common.mss.evaluation.run_evaluation`. Both check the output folder before any
  weights are fetched or loaded; ``separate.py`` also decodes every input first. ``eval.py``
  records the model's fingerprint (:func:`model_fingerprint`) and the options that change
  scores in its output folder, so a rerun with another model is refused, never reported
  with the old scores. ``eval.py`` with one ``--targets`` source and no ``--residual`` stops at
  once with the hint to add ``--residual`` (:func:`scored_targets`).
* :func:`add_model_flag` / :func:`add_backend_flag`: ``--model`` (a published name or a path;
  the official ``-m`` / ``--model-dir`` spellings too), ``--backend`` (``auto``, the default,
  or a runtime the model runs on) and ``--threads`` (:mod:`common.runtime.backends`);
  :func:`resolve_model` turns ``--model`` into a local path (downloading published weights
  once into the cache); ``--list-models`` lists the published ones
  (:func:`common.pretrained.add_list_models_flag`). Both entry points resolve ``--backend
  auto`` once, in the main process, and print the choice on stderr (``backend: openvino
  (auto)``); ``eval.py`` records the runtime that produced its scores.
* :func:`separator_factory`: the picklable ``functools.partial`` of a paper's separator
  builder with the compute context from ``--context/--device-id/--type-config``; refuses
  ``--jobs > 1`` on a GPU context (one GPU, one process).
* :func:`training_config`: the ``config.yaml`` a training run saved beside its weights
  (models trained with non-default settings that weight files do not store, e.g. the STFT hop).
* :class:`ResidualSeparator` / :func:`residual_name`: the ``--residual`` output computed in
  the time domain (mixture minus the sum of the estimates) for separators without one of
  their own; named ``accompaniment`` next to a single target (MUSDB18's name, so it is
  scored), else ``residual``.
"""
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.cli import Parser
from common.config import load_config
from common.errors import UserError
from common.fileio import check_output_location
from common.mss.audio import check_layout
from common.mss.separation import add_separation_args, run_separation
from common.pretrained import add_list_models_flag, get_weights
from common.results import fingerprint
from common.runtime.backends import (RUNTIMES, add_backend_args, announce_on_stderr,
                                     choose_backend)

__all__ = ["Model", "add_model_flag", "add_backend_flag", "resolve_model", "model_fingerprint",
           "training_config", "separator_factory", "residual_name", "ResidualSeparator",
           "scored_targets", "separate_main", "eval_main"]


@dataclass(frozen=True)
class Model:
    """What a paper's ``separate.py`` / ``eval.py`` add to the shared command lines.

    ``add_args(parser)``: the model flags; ``pretrained``: the published weight names
    ``--model`` accepts; ``make_factory(args, weights)``: the picklable separator factory
    for the local weights path; ``score_options``: the dests of the flags that change
    what the separator outputs (recorded with ``eval.py``'s scores); ``chunk_dur``: the
    default ``--chunk-dur``; ``separates``: what the model separates, for the scripts'
    descriptions (e.g. "vocals / drums / bass / other with D3Net"); ``network``: its name in
    messages; ``auto_order``: the CPU runtimes ``--backend auto`` tries, fastest first;
    ``runtimes(weights_path)``: the runtimes that can run those weights.

    :meth:`separate_main` and :meth:`eval_main` are the paper's two entry points."""
    add_args: object
    pretrained: tuple
    make_factory: object
    score_options: tuple
    chunk_dur: float
    separates: str
    network: str
    auto_order: tuple
    runtimes: object = lambda weights_path: RUNTIMES

    def choose_backend(self, args, weights_path):
        """The runtime for ``--backend``; ``auto`` is announced on stderr."""
        return choose_backend(args.backend, args.context, self.auto_order,
                              self.runtimes(weights_path), what=self.network,
                              announce=announce_on_stderr)

    def separate_main(self, argv=None):
        return separate_main(argv, self, f"Separate songs into {self.separates}.")

    def eval_main(self, argv=None):
        return eval_main(argv, self, f"Separate every track of a MUSDB18 subset into "
                                     f"{self.separates} and score it with museval (BSSEval "
                                     "v4).")


def add_model_flag(parser, pretrained, default, help):
    """``--model`` (also ``-m``, and ``--model-dir`` as the official D3Net scripts spell it)
    with ``default`` (a published name); ``help`` describes the accepted paths."""
    names = ",".join(pretrained)
    parser.add_argument("--model", "-m", default=default, metavar=f"{{{names},PATH.h5,DIR}}",
                        help=f"{help} (default: {default})")
    parser.add_alias("--model-dir", "model")
    return parser


def add_backend_flag(parser, runtimes=RUNTIMES):
    """``--backend`` (default ``auto``; choices: ``auto`` and ``runtimes``) and ``--threads``
    (see :func:`common.runtime.backends.add_backend_args`)."""
    return add_backend_args(parser, runtimes)


def resolve_model(model, pretrained):
    """Local path of the weights for ``--model``: a published name in ``pretrained`` is
    fetched (once) into the cache; anything else must be an existing file or folder. A
    published name wins over a same-named folder (write ``./name`` to mean the folder)."""
    if model in pretrained:
        return str(get_weights(model))
    if not os.path.exists(model):
        raise UserError(f"--model {model}: no such file or folder, and not one of "
                        f"{', '.join(pretrained)}")
    return model


def model_fingerprint(path):
    """``{file name: "size:sha256"}`` of the files a model at ``path`` is read from: the
    weight file with the configs beside it that describe its network (``config.yaml`` of a
    training run, ``<name>.yaml``), or every ``.h5`` / ``.yaml`` / ``.zip`` of a folder and
    of its sub-folders one level down (official archives add one level), ``.onnx`` model
    files included."""
    path = Path(path)
    if path.is_dir():
        folders = [path] + sorted(d for d in path.iterdir() if d.is_dir())
        files = [f for d in folders for f in sorted(d.iterdir())
                 if f.is_file() and f.suffix.lower() in (".h5", ".yaml", ".zip", ".onnx")]
    else:
        files = [path] + [f for f in (path.with_suffix(".yaml"), path.parent / "config.yaml")
                          if f.is_file()]
    out = {}
    for f in files:
        name = str(f.relative_to(path)) if path.is_dir() else f.name
        (out[name],) = fingerprint(f).values()  # one file: one entry
    if not out:
        raise UserError(f"--model {path}: no weight files (.h5, .onnx, .zip) found")
    return out


def training_config(weights_path, name="config.yaml"):
    """The options of the training run that wrote ``weights_path`` (its ``config.yaml``
    beside the weights file), or ``{}`` for other weight files and folders."""
    config_path = os.path.join(os.path.dirname(os.path.abspath(weights_path)), name)
    if os.path.isfile(weights_path) and os.path.isfile(config_path):
        return load_config(config_path)
    return {}


def separator_factory(args, build, *build_args, **options):
    """``functools.partial(build, *build_args, context=(context, device_id, type_config),
    **options)``: picklable when ``build`` is a top-level function."""
    if args.context != "cpu" and getattr(args, "jobs", 1) > 1:  # one GPU, one process
        raise UserError("--jobs > 1 runs several CPU processes; use --jobs 1 with --context "
                        f"{args.context}")
    return functools.partial(build, *build_args,
                             context=(args.context, args.device_id, args.type_config),
                             **options)


def residual_name(n_targets):
    """Name of the residual output next to ``n_targets`` estimated sources."""
    return "accompaniment" if n_targets == 1 else "residual"


class ResidualSeparator:
    """Adds the time-domain residual (input minus the sum of all estimates) to the output of
    a separator that does not produce one; everything else is the wrapped separator's."""

    def __init__(self, separator):
        self.separator = separator
        self.name = residual_name(len(separator.targets))
        if self.name in separator.targets:
            raise UserError(f"the separator already produces '{self.name}'")
        self.sample_rate = separator.sample_rate
        self.targets = list(separator.targets) + [self.name]

    def __getattr__(self, attr):  # graph_builds, configs, ... of the wrapped separator
        if attr == "separator":  # not set yet (e.g. while unpickling)
            raise AttributeError(attr)
        return getattr(self.separator, attr)

    def __call__(self, audio, sample_rate=None):
        out = dict(self.separator(audio, sample_rate=sample_rate))
        mix = check_layout(np.asarray(audio, dtype=np.float32))
        total = np.zeros_like(mix)
        for name in self.separator.targets:
            total += out[name]
        out[self.name] = mix - total
        return out


def scored_targets(args):
    """Targets ``eval.py`` scores: ``--targets`` (default: all the separator gives), plus the
    residual when ``--residual`` adds one (``accompaniment`` has a MUSDB18 reference). One
    target alone is refused with the flag that makes it scorable: BSSEval needs two."""
    targets = getattr(args, "targets", None)
    residual = getattr(args, "residual", False)
    if targets and residual:
        return list(targets) + [residual_name(len(targets))]
    if targets and len(targets) == 1:
        raise UserError(f"BSSEval scores at least two sources and --targets gives one "
                        f"({targets[0]}); add --residual to score it together with its "
                        f"accompaniment (the mixture minus {targets[0]})")
    return targets


def _parser(model, add_io_args, description):
    parser = Parser(description=description)
    add_io_args(parser, chunk_dur=model.chunk_dur)
    model.add_args(parser)
    add_list_models_flag(parser, model.pretrained)
    return parser


def separate_main(argv, model, description):
    """A ``separate.py``: the shared input/output flags plus ``model.add_args``; the weights
    are fetched and the separator built only after the output folder was checked and every
    input decoded successfully."""
    args = _parser(model, add_separation_args, description).parse_args(argv)

    def make_separator():
        weights = resolve_model(args.model, model.pretrained)
        args.backend = model.choose_backend(args, weights)
        return model.make_factory(args, weights)()

    for folder in run_separation(args, make_separator):
        print(folder)
    return 0


def eval_main(argv, model, description):
    """An ``eval.py``: museval on a MUSDB18 subset with the shared flags of
    :func:`common.mss.evaluation.add_eval_args` plus ``model.add_args``. The output folder
    is checked before the weights are fetched; it records the model's fingerprint and
    ``model.score_options`` (``backend`` there is the runtime ``auto`` chose). Without
    ``--threads`` a session uses every core its process may run on: each of the ``--jobs``
    workers is pinned to its own share (:mod:`common.mss.evaluation`)."""
    # Imported here: museval and pandas would add to every separate.py's start-up.
    from common.mss.evaluation import add_eval_args, run_evaluation

    args = _parser(model, add_eval_args, description).parse_args(argv)
    targets = scored_targets(args)
    check_output_location(args.out_dir, "--out-dir")
    weights = resolve_model(args.model, model.pretrained)
    args.backend = model.choose_backend(args, weights)
    settings = {"model": model_fingerprint(weights),
                **{name: getattr(args, name) for name in model.score_options}}
    run_evaluation(args, model.make_factory(args, weights), targets=targets,
                   settings=settings)  # prints the table
    return 0
