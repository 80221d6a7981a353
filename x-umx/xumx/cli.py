"""Command lines of ``separate.py`` and ``eval.py`` (the scripts only call :func:`separate_main`
and :func:`eval_main`). The input handling, chunking and museval scoring are the shared ones
from :mod:`common.separation` and :mod:`common.mss_eval`; this module only adds the model flags.
"""
import functools
import os

from common.config import ConfigParser, load_config
from common.context import add_context_args
from common.errors import UserError
from common.mss_eval import add_eval_args, run_evaluation
from common.pretrained import get_weights
from common.separation import add_separation_args, run_separation

from .model import SOURCES
from .separator import Separator

PRETRAINED = ("x-umx", "umx", "umxhq")
# Separate in 30 s chunks (cross-faded over 1 s) by default: memory then stays bounded for any
# song length (x-umx/bench: 1.6 GB peak for 5 minutes on the ONNX backend, while the nnabla
# backend needs 4.6 GB for 30 s unchunked). --chunk-dur 0 gives the unchunked result.
DEFAULT_CHUNK_DUR = 30.0


def add_model_args(parser):
    parser.add_argument("--model", default="x-umx", metavar="{x-umx,umx,umxhq,PATH.h5,DIR}",
                        help="published weights by name (downloaded once into the cache), an "
                             "X-UMX .h5 file (e.g. a training run's xumx.h5), a UMX <target>.h5, "
                             "or a folder / .zip of UMX <target>.h5 files (default: x-umx)")
    parser.add_argument("--targets", nargs="+", choices=list(SOURCES), default=None,
                        help="sources to estimate (default: all the model has)")
    parser.add_argument("--hidden-size", type=int, default=None,
                        help="expected hidden size; the size is read from the weights, and a "
                             "different one is an error (guards against the wrong file)")
    parser.add_argument("--niter", type=int, default=1,
                        help="iterations of the multichannel Wiener filter (0 = masks only)")
    parser.add_argument("--softmask", action="store_true",
                        help="initialise the Wiener filter with soft masks instead of the "
                             "mixture phase")
    parser.add_argument("--alpha", type=float, default=1.0,
                        help="exponent of the soft masks (with --softmask)")
    parser.add_argument("--residual", action="store_true",
                        help="also write the residual (mixture minus all targets)")
    parser.add_argument("--backend", choices=["nnabla", "onnx"], default="nnabla",
                        help="network runtime: nnabla (reference) or onnxruntime (same weights, "
                             "much faster LSTM on CPU)")
    add_context_args(parser)
    return parser


def resolve_model(model):
    """Path of the weights for ``--model``. A published name wins over a same-named folder
    (the repo itself has an ``x-umx/`` folder); write ``./x-umx`` to mean the folder."""
    if model in PRETRAINED:
        try:
            return str(get_weights(model))
        except UserError as exc:  # these scripts take a local copy through --model itself
            raise UserError(str(exc).replace("--weights PATH", "--model PATH")) from None
    if not os.path.exists(model):
        raise UserError(f"--model {model}: no such file or folder, and not one of "
                        f"{', '.join(PRETRAINED)}")
    return model


def training_hop(weights_path):
    """The STFT hop of a model trained by ``train.py``, read from the run's ``config.yaml``
    beside the weights; ``None`` (the official ``n_fft // 4``) for other weight files, which
    do not store it."""
    config_path = os.path.join(os.path.dirname(os.path.abspath(weights_path)), "config.yaml")
    if os.path.isfile(weights_path) and os.path.isfile(config_path):
        return load_config(config_path).get("nhop")
    return None


def make_separator(weights_path, targets=None, hidden_size=None, niter=1, softmask=False,
                   alpha=1.0, residual=False, backend="nnabla", context="cpu"):
    # context: "cpu" / "cudnn" or (name, device_id, type_config), see xumx.separator
    """Build the separator once (its graph is reused for every chunk and file)."""
    sep = Separator(weights_path, targets=targets, niter=niter, softmask=softmask, alpha=alpha,
                    residual=residual, context=context, backend=backend,
                    n_hop=training_hop(weights_path))
    if hidden_size is not None and sep.config["hidden_size"] != hidden_size:
        raise UserError(f"--hidden-size {hidden_size} does not match the weights in "
                        f"{weights_path} (hidden size {sep.config['hidden_size']})")
    return sep


def _separator_factory(args, weights_path):
    if args.context != "cpu" and getattr(args, "jobs", 1) > 1:  # one GPU, one process
        raise UserError("--jobs > 1 runs several CPU processes; use --jobs 1 with --context "
                        f"{args.context}")
    return functools.partial(make_separator, weights_path, targets=args.targets,
                             hidden_size=args.hidden_size, niter=args.niter,
                             softmask=args.softmask, alpha=args.alpha, residual=args.residual,
                             backend=args.backend,
                             context=(args.context, args.device_id, args.type_config))


def separate_main(argv=None):
    parser = ConfigParser(description="Separate songs into bass / drums / vocals / other with "
                                      "X-UMX or UMX.")
    add_separation_args(parser, chunk_dur=DEFAULT_CHUNK_DUR)
    add_model_args(parser)
    args = parser.parse_args(argv)
    # Inputs are validated before the weights are fetched or the graph is built.
    outputs = run_separation(
        args, lambda: _separator_factory(args, resolve_model(args.model))())
    for folder in outputs:
        print(folder)
    return 0


def eval_main(argv=None):
    parser = ConfigParser(description="Separate every track of a MUSDB18 subset with X-UMX / UMX "
                                      "and score it with museval (BSSEval v4).")
    add_eval_args(parser, chunk_dur=DEFAULT_CHUNK_DUR)
    add_model_args(parser)
    args = parser.parse_args(argv)
    factory = _separator_factory(args, resolve_model(args.model))
    run_evaluation(args, factory, targets=args.targets)  # prints and saves the table
    return 0
