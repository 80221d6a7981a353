"""Command-line options shared by ``train.py`` and ``eval.py``: which experiment (a name of
``configs/experiments/*.yaml`` or a section of an official ``.cfg``, with ``--set``
overrides), which data set and where it lives, how the quantizers run."""
import yaml

from common.cli import NonNegativeInt
from common.context import add_context_args
from common.data import classification as D
from common.errors import UserError
from mpdnn.experiments import SETTABLE_KEYS, get_experiment
from mpdnn.network import random_subset

QUANTIZER_IMPLEMENTATIONS = {"auto": None, "fused": True, "graph": False}


def add_experiment_args(p):
    """--experiment, --cfg, --set, --dataset, --root, --quantizers, --loader-threads,
    --val-samples and the compute context."""
    p.add_argument("--experiment", default=None,
                   help="experiment name from configs/experiments/*.yaml (e.g. DEFAULT, "
                        "PARAMETRIC_FP_WAQ_DELTA_XMAX_INIT, "
                        "PARAMETRIC_POW2_WAMQ_XMIN_XMAX_CON_INIT)")
    p.add_argument("--cfg", default=None, metavar="FILE",
                   help="an official experiment file (train_resnet_quant_fp.cfg or "
                        "train_resnet_quant_pow2.cfg): --experiment names one of its sections")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one experiment field (repeatable), e.g. --set epochs=10 "
                        "--set target_weight_kbytes=40")
    p.add_argument("--dataset", choices=D.DATASETS, default=None,
                   help="default: the experiment's (cifar10 / imagenet); mnist5k = the bundled "
                        "real MNIST subset padded to 32x32")
    p.add_argument("--root", default=None, metavar="DIR",
                   help="dataset root: the folder holding cifar-10-batches-py (default: the "
                        "data cache) or the ImageNet root with train/ and val/")
    p.add_alias("--data-dir", "root")
    p.add_argument("--quantizers", choices=sorted(QUANTIZER_IMPLEMENTATIONS), default="auto",
                   help="fused = one numpy kernel per quantizer (CPU), graph = nnabla "
                        "functions (any device); auto = fused on CPU")
    p.add_argument("--loader-threads", type=NonNegativeInt, default=2)
    p.add_argument("--val-samples", type=NonNegativeInt, default=0,
                   help="use a fixed random subset of N validation samples (0 = all)")
    add_context_args(p)


def parse_overrides(items):
    """``["epochs=4", "lr_milestones=[2, 3]"]`` -> dict with YAML-parsed values (checked
    against the experiment's fields when the experiment is built)."""
    out = {}
    for item in items or []:
        key, sep, value = str(item).partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected KEY=VALUE")
        if key not in SETTABLE_KEYS:
            raise UserError(f"--set {key}: not an experiment field (see mpdnn/experiments.py)")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise UserError(f"--set {item!r}: the value is not valid YAML") from None
    return out


def load_experiment(name, cfg=None, overrides=None):
    """Experiment ``name`` from the official ``cfg`` file if given, else from the registry,
    with ``overrides`` (field -> value) applied and validated."""
    if cfg is not None:
        from mpdnn.official_cfg import experiment_from_cfg
        return experiment_from_cfg(cfg, name, overrides)
    return get_experiment(name, **(overrides or {}))


def check_dataset(exp, dataset, root):
    """The data set to use (``dataset`` or the experiment's); one line if it cannot serve."""
    dataset = dataset or exp.dataset
    if exp.model == "resnet20" and dataset == "imagenet":
        raise UserError(f"experiment {exp.name} is a CIFAR ResNet; it cannot train on ImageNet")
    if exp.model != "resnet20" and dataset != "imagenet":
        raise UserError(f"experiment {exp.name} ({exp.model}) is an ImageNet network; use "
                        f"--dataset imagenet")
    if dataset == "imagenet" and root is None:
        raise UserError("ImageNet needs --root DIR holding train/<wnid>/ and val/<wnid>/ "
                        "image folders")
    return dataset


def load_split(dataset, split, root, samples=0):
    """Split ``train`` or ``val`` of ``dataset``, reduced to a fixed random subset of
    ``samples`` (0 = all)."""
    data = D.load(dataset, split, root)
    return random_subset(data, samples) if 0 < samples < len(data) else data
