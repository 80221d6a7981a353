"""The official experiment files (``train_resnet_quant_fp.cfg``, ``train_resnet_quant_pow2.cfg``).

They are INI files: a ``[DEFAULT]`` section and one section per experiment holding only the
keys it changes. :func:`read_cfg` reads one into typed values (``weightfile`` becomes
``init_from: <EXPERIMENT>``, see :mod:`mpdnn.experiments`); ``tools/cfg_to_yaml.py`` turns
them into ``configs/experiments/*.yaml`` and ``train.py --cfg FILE`` (the official flag)
trains a section of such a file directly. The schedule the official training script fixes
in code (:data:`CIFAR10_SCHEDULE`) comes first, so a section resolves to the same
experiment as the official script would run.
"""
import configparser
from pathlib import Path

from common.errors import UserError
from mpdnn import experiments as ex

# Fixed in the official training script, not in its cfg files.
CIFAR10_SCHEDULE = {
    "model": "resnet20", "dataset": "cifar10", "epochs": 160, "lr_milestones": [80, 120],
    "lr_decay": 0.1, "batch_size": 128, "weight_decay": 2e-4, "momentum": 0.9,
}
BASELINE = "DEFAULT"   # the [DEFAULT] section run as an experiment
CHECKPOINT_NAME = "params_best.h5"


def read_cfg(path):
    """(defaults, {section: own keys}) of an official cfg; values typed, weightfile
    mapped to init_from. Sections keep file order; ``BASELINE`` comes first."""
    path = Path(path)
    # A default_section no file uses makes [DEFAULT] an ordinary section, so each
    # section's own keys are not mixed with the inherited ones.
    cp = configparser.ConfigParser(default_section="\0", interpolation=None)
    try:
        with open(path, encoding="utf-8") as f:
            cp.read_file(f)
    except FileNotFoundError:
        raise UserError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    except configparser.Error as exc:
        raise UserError(f"{path}: {' '.join(str(exc).split())}") from None
    if BASELINE not in cp:
        raise UserError(f"{path}: no [{BASELINE}] section")
    names = [s for s in cp.sections() if s != BASELINE]

    def typed(where, items):
        own = {}
        for key, raw in items:
            if key == "weightfile":
                own["init_from"] = weightfile_to_experiment(where, raw, names)
            elif key in ex.SETTABLE_KEYS and key != "init_from":
                own[key] = ex.convert_value(where, key, raw)
            else:
                raise UserError(f"{where}: key {key!r} is not an official setting")
        return own

    defaults = typed(f"{path} [{BASELINE}]", cp[BASELINE].items())
    sections = {BASELINE: {}}
    for name in names:
        sections[name] = typed(f"{path} [{name}]", cp[name].items())
    return defaults, sections


def weightfile_to_experiment(where, value, names):
    """``params_DEFAULT/params_best.h5`` -> DEFAULT, ``X/params_best.h5`` -> X."""
    parts = value.strip().split("/")
    if len(parts) == 2 and parts[1] == CHECKPOINT_NAME:
        folder = parts[0]
        known = set(names) | {BASELINE}
        if folder in known:
            return folder
        if folder.startswith("params_") and folder[len("params_"):] in known:
            return folder[len("params_"):]
    raise UserError(f"{where}: weightfile {value!r} does not name an experiment's "
                    f"<EXPERIMENT>/{CHECKPOINT_NAME}")


def experiment_from_cfg(path, name, overrides=None):
    """Section ``name`` of the official cfg ``path`` as an :class:`~mpdnn.experiments.Experiment`
    (the CIFAR-10 schedule, then [DEFAULT], then the section, then ``overrides``)."""
    defaults, sections = read_cfg(path)
    if name not in sections:
        raise UserError(f"{path} has no experiment {name!r}"
                        f"{ex.did_you_mean(name, sections)}")
    where = f"{path} [{name}]" + (" with overrides" if overrides else "")
    return ex.build_experiment(where, {**CIFAR10_SCHEDULE, **defaults, **sections[name],
                                       **(overrides or {}), "name": name})
