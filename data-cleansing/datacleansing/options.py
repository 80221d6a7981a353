"""Command-line pieces every data-cleansing command shares, importable without nnabla (so
that a wrong option is one line, before nnabla's start-up log): flag types, the official
spellings' switches, the experiment tools' training flags, and the single-process rule."""
import argparse

from common.cli import Bounded, NonNegativeInt, PositiveFloat, PositiveInt
from common.errors import UserError
from common.train.distributed import launcher_world

MODEL_NAMES = ("cnn", "logreg", "mlp")        # datacleansing.models.MODELS
# The CNN halves the image three times; larger images only cost memory.
IMAGE_SIZE = Bounded(int, 8, 512)


def refuse_multi_process():
    """One line when started by mpirun with more than one process: data cleansing traces and
    replays the SGD steps of a single process (see the README)."""
    world = launcher_world()
    if world is not None and world[0] > 1:
        raise UserError(f"data cleansing runs in a single process, but mpirun started "
                        f"{world[0]}: the influence methods replay the exact SGD steps of one "
                        "process; run it without mpirun (--context cudnn uses one GPU)")


def hidden_switch(parser, flags, dest, const, default):
    """An official on/off flag that means ``--<dest> <const>``, hidden from ``--help``. Added
    before the real option so YAML keys keep the real option's validation."""
    parser.add_argument(*flags, dest=dest, action="store_const", const=const, default=default,
                        help=argparse.SUPPRESS)


def add_experiment_args(p, *, epochs, out_dir):
    """The training flags of the experiment tools (tools/, bench/), which train on a
    stratified subset of the bundled MNIST images, and their --out-dir."""
    p.add_argument("--model", default="cnn", choices=MODEL_NAMES)
    p.add_argument("--n-train", type=NonNegativeInt, default=0,
                   help="stratified training subset (0 = all 3,500)")
    p.add_argument("--epochs", type=PositiveInt, default=epochs)
    p.add_argument("--trace-epochs", type=PositiveInt, default=1)
    p.add_argument("--lr", type=PositiveFloat, default=0.05)
    p.add_argument("--batch-size", type=PositiveInt, default=64)
    p.add_argument("--out-dir", default=out_dir, help="folder of the runs and results")
    p.add_alias("--out", "out_dir")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
