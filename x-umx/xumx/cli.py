"""Command lines of ``separate.py`` and ``eval.py`` (the scripts only call :func:`separate_main`
and :func:`eval_main`). The input handling, chunking, museval scoring and the ``--model`` /
``--backend`` / context plumbing are the shared ones from :mod:`common.mss.cli` (with
:mod:`common.mss.separation` and :mod:`common.mss.evaluation`); this module only adds the
model flags.
"""
from common.cli import NonNegativeInt, PositiveFloat, PositiveInt
from common.context import add_context_args
from common.errors import UserError
from common.mss import cli as mss_cli

from . import weights
from .model import SOURCES
from .separator import AUTO_ORDER, RUNTIMES, Separator

PRETRAINED = ("x-umx", "umx", "umxhq")
# Separate in 30 s chunks (cross-faded over 1 s) by default: memory then stays bounded for any
# song length (x-umx/bench/README.md: 1.9 GB peak for 5 minutes on the ONNX backend, while the
# nnabla backend needs 3.8 GB for 30 s unchunked). --chunk-dur 0 gives the unchunked result.
DEFAULT_CHUNK_DUR = 30.0


def add_model_args(parser):
    mss_cli.add_model_flag(parser, PRETRAINED, "x-umx",
                           "published weights by name (downloaded once into the cache), an "
                           "X-UMX .h5 file (e.g. a training run's xumx.h5), a UMX <target>.h5, "
                           "or a folder / .zip of UMX <target>.h5 files")
    parser.add_argument("--umx-infer", action="store_true",
                        help="expect UMX weights (the official flag that selects UMX; here "
                             "the kind is read from the weights, and X-UMX weights are then "
                             "an error)")
    parser.add_argument("--hidden-size", type=PositiveInt, default=None,
                        help="expected hidden size; the size is read from the weights, and a "
                             "different one is an error (guards against the wrong file)")
    parser.add_argument("--targets", nargs="+", choices=list(SOURCES), default=None,
                        help="sources to estimate (default: all the model has)")
    wiener = parser.add_argument_group("multichannel Wiener filter")
    wiener.add_argument("--niter", type=NonNegativeInt, default=1,
                        help="iterations (0 = the masked mixture, no filter)")
    wiener.add_argument("--softmask", action="store_true",
                        help="start from soft masks instead of the mixture phase")
    wiener.add_argument("--alpha", type=PositiveFloat, default=1.0,
                        help="exponent of the soft masks (with --softmask)")
    parser.add_argument("--residual", "--residual-model", action="store_true",
                        help="also write the residual (mixture minus all targets)")
    mss_cli.add_backend_flag(parser, RUNTIMES)
    add_context_args(parser)
    return parser


def training_hop(weights_path):
    """The STFT hop of a model trained by ``train.py``, read from the run's ``config.yaml``
    beside the weights; ``None`` (the official ``n_fft // 4``) for other weight files, which
    do not store it."""
    return mss_cli.training_config(weights_path).get("nhop")


def make_separator(weights_path, targets=None, hidden_size=None, niter=1, softmask=False,
                   alpha=1.0, residual=False, backend="auto", context="cpu", threads=None):
    # context: "cpu" / "cudnn" or (name, device_id, type_config), see xumx.separator
    """Build the separator once (its graph is reused for every chunk and file)."""
    sep = Separator(weights_path, targets=targets, niter=niter, softmask=softmask, alpha=alpha,
                    residual=residual, context=context, backend=backend,
                    n_hop=training_hop(weights_path), threads=threads)
    if hidden_size is not None and sep.config["hidden_size"] != hidden_size:
        raise UserError(f"--hidden-size {hidden_size} does not match the weights in "
                        f"{weights_path} (hidden size {sep.config['hidden_size']})")
    return sep


def _separator_factory(args, weights_path):
    if args.umx_infer and weights.detect_kind(weights_path) != "umx":
        raise UserError(f"--umx-infer: {weights_path} holds X-UMX weights; give UMX ones "
                        "(--model umx, umxhq, or a folder / .zip of UMX <target>.h5 files)")
    return mss_cli.separator_factory(
        args, make_separator, weights_path, targets=args.targets,
        hidden_size=args.hidden_size, niter=args.niter, softmask=args.softmask,
        alpha=args.alpha, residual=args.residual, backend=args.backend,
        threads=args.threads)


MODEL = mss_cli.Model(
    add_args=add_model_args, pretrained=PRETRAINED, make_factory=_separator_factory,
    score_options=("targets", "niter", "softmask", "alpha", "residual", "backend",
                   "type_config"),
    chunk_dur=DEFAULT_CHUNK_DUR, separates="bass / drums / vocals / other with X-UMX or UMX",
    network="X-UMX / UMX", auto_order=AUTO_ORDER, runtimes=lambda weights_path: RUNTIMES)
separate_main, eval_main = MODEL.separate_main, MODEL.eval_main
