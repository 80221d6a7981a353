"""Command-line flags that train.py, plan.py and the benchmark share: which network, its
sizes and its input, with the same names, ranges and help everywhere."""
import argparse

from common.cli import Bounded, PositiveInt
from ooctrain.models import ARCHITECTURES, ModelSpec

# Below 8 pixels the stem and pooling of the ImageNet networks leave nothing to convolve.
ImageSize = Bounded(int, 8)
ClassCount = Bounded(int, 2)


def add_model_args(parser):
    """``--arch``, ``--blocks``, ``--width``, ``--growth`` and ``--small-input`` on
    ``parser`` (or an argument group)."""
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default="resnet50",
                        help="network (default: %(default)s)")
    parser.add_argument("--blocks", type=PositiveInt, nargs="+", default=None,
                        help="override the blocks per stage (ResNet) / layers per dense block "
                             "(DenseNet)")
    parser.add_argument("--width", type=PositiveInt, default=None,
                        help="override the base width: ResNet first-stage channels, DenseNet "
                             "stem")
    parser.add_argument("--growth", type=PositiveInt, default=None,
                        help="override the DenseNet growth rate")
    parser.add_argument("--small-input", action=argparse.BooleanOptionalAction, default=False,
                        help="3x3 stride-1 stem without max-pooling, for 32x32 images")
    return parser


def add_input_args(parser, image_help="image side length", classes_help="classes"):
    """``--image-size`` and ``--num-classes`` on ``parser`` (or an argument group)."""
    parser.add_argument("--image-size", type=ImageSize, default=224,
                        help=f"{image_help} (default: %(default)s)")
    parser.add_argument("--num-classes", type=ClassCount, default=1000,
                        help=f"{classes_help} (default: %(default)s)")
    return parser


def model_spec_from_args(args):
    """The :class:`ModelSpec` of the size flags; a size the architecture lacks (e.g.
    ``--growth`` for a ResNet) is a one-line error now, not mid-run."""
    spec = ModelSpec.from_sizes(args.arch, args.blocks, args.width, args.growth)
    spec.config()
    return spec
