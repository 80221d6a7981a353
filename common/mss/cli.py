"""Command lines shared by the music-source-separation papers' ``separate.py`` and ``eval.py``.

A paper's ``cli`` module supplies only what is specific to its model: a function adding its
model flags to a parser and a *factory maker* ``make_factory(args) -> factory``, where
``factory()`` builds the separator (interface in :mod:`common.mss.separation`) and is picklable,
so ``eval.py --jobs N`` can build one copy per worker process. Everything else lives here:

* :func:`separate_main` / :func:`eval_main`: parse (YAML ``--config`` defaults, as every
  script), validate, build the separator once, run :func:`common.mss.separation.run_separation`
  or :func:`common.mss.evaluation.run_evaluation`. ``separate.py`` checks every input before the
  weights are fetched or a graph is built.
* :func:`add_model_flag` / :func:`add_backend_flag`: ``--model`` (a published name or a path)
  and ``--backend`` (``nnabla`` or ``onnx``); :func:`resolve_model` turns ``--model`` into a
  local path (downloading published weights once into the cache).
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

import numpy as np

from common.cli import Parser
from common.config import load_config
from common.errors import UserError
from common.mss.evaluation import add_eval_args, run_evaluation
from common.mss.separation import add_separation_args, run_separation
from common.pretrained import get_weights

__all__ = ["add_model_flag", "add_backend_flag", "resolve_model", "training_config",
           "separator_factory", "residual_name", "ResidualSeparator", "scored_targets",
           "separate_main", "eval_main"]

BACKENDS = ("nnabla", "onnx")


def add_model_flag(parser, pretrained, default, help):
    """``--model`` with ``default`` (a published name); ``help`` describes the accepted paths."""
    names = ",".join(pretrained)
    parser.add_argument("--model", default=default, metavar=f"{{{names},PATH.h5,DIR}}",
                        help=f"{help} (default: {default})")
    return parser


def add_backend_flag(parser, help="network runtime: nnabla (reference) or onnxruntime "
                                  "(same weights, faster on CPU)"):
    parser.add_argument("--backend", choices=list(BACKENDS), default="nnabla", help=help)
    return parser


def resolve_model(model, pretrained):
    """Local path of the weights for ``--model``: a published name in ``pretrained`` is
    fetched (once) into the cache; anything else must be an existing file or folder. A
    published name wins over a same-named folder (write ``./name`` to mean the folder)."""
    if model in pretrained:
        try:
            return str(get_weights(model))
        except UserError as exc:  # these scripts take a local copy through --model itself
            raise UserError(str(exc).replace("--weights PATH", "--model PATH")) from None
    if not os.path.exists(model):
        raise UserError(f"--model {model}: no such file or folder, and not one of "
                        f"{', '.join(pretrained)}")
    return model


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

    def __call__(self, audio):
        out = dict(self.separator(audio))
        mix = np.asarray(audio, dtype=np.float32)
        total = np.zeros_like(mix)
        for name in self.separator.targets:
            total += out[name]
        out[self.name] = mix - total
        return out


def scored_targets(args):
    """Targets ``eval.py`` scores: ``--targets`` (default: all the separator gives), plus the
    residual when ``--residual`` adds one (``accompaniment`` has a MUSDB18 reference)."""
    targets = getattr(args, "targets", None)
    if targets and getattr(args, "residual", False):
        return list(targets) + [residual_name(len(targets))]
    return targets


def separate_main(argv, *, description, add_model_args, make_factory, chunk_dur):
    """A ``separate.py``: the shared input/output flags plus ``add_model_args(parser)``;
    ``make_factory(args)`` is called only after every input decoded successfully."""
    parser = Parser(description=description)
    add_separation_args(parser, chunk_dur=chunk_dur)
    add_model_args(parser)
    args = parser.parse_args(argv)
    outputs = run_separation(args, lambda: make_factory(args)())
    for folder in outputs:
        print(folder)
    return 0


def eval_main(argv, *, description, add_model_args, make_factory, chunk_dur):
    """An ``eval.py``: museval on a MUSDB18 subset with the shared flags of
    :func:`common.mss.evaluation.add_eval_args` plus ``add_model_args(parser)``."""
    parser = Parser(description=description)
    add_eval_args(parser, chunk_dur=chunk_dur)
    add_model_args(parser)
    args = parser.parse_args(argv)
    run_evaluation(args, make_factory(args), targets=scored_targets(args))  # prints the table
    return 0
