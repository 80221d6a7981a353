"""Named training experiments, read from ``configs/experiments/*.yaml``.

Each YAML file holds ``defaults:`` (values every experiment of the file starts
from) and ``experiments:`` (name -> only the keys that experiment changes), plus
an optional ``source:`` record written by ``tools/cfg_to_yaml.py``. The two
CIFAR-10 files are generated from the official ``train_resnet_quant_fp.cfg`` and
``train_resnet_quant_pow2.cfg`` and keep their experiment names, key names and
order; ``imagenet.yaml`` is written by hand for the paper's Table 4.

Differences from the official ``Configuration``:

* ``name`` is the experiment name (the official ``experiment`` field).
* ``init_from`` names the experiment whose best parameters initialise training.
  It replaces ``weightfile``: the official values (``params_DEFAULT/params_best.h5``)
  point at a folder the official script never writes, since it saves to
  ``<EXPERIMENT>/params_best.h5``.
* ``DEFAULT`` is an experiment: the official script runs the ``[DEFAULT]``
  section on its own, and that float network is what ``init_from: DEFAULT``
  starts from.
* ``scale_layer`` must be ``true`` or ``false``. The official script converts it
  with ``bool(str)``, so ``scale_layer = False`` would have switched it on; the
  official files only ever write ``True``, so no experiment changes meaning.
* The schedule the official script fixes in code is explicit: ``model``,
  ``dataset``, ``epochs``, ``lr_milestones`` (epochs where the learning rate is
  multiplied by ``lr_decay``), ``batch_size``, ``weight_decay``, ``momentum``.
  ``optimizer`` is ``adam`` (Adam with alpha = learning rate) or, as in the
  official script, anything else means SGD with momentum: ``null`` or ``momentum``.
* Every value is type-checked and range-checked; unknown keys are errors.

Typical use::

    from mpdnn.experiments import get_experiment, list_experiments
    exp = get_experiment("PARAMETRIC_FP_WAMQ_DELTA_XMAX_CON_INIT", epochs=2)
    exp.paper_parametrization        # {'weights': 'U3', 'activations': 'U3'}
"""
import dataclasses
import difflib
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

from common.config import load_config
from common.errors import UserError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "experiments"
# Read in this order; list_experiments() follows it, then each file's own order.
EXPERIMENT_FILES = ("cifar10_uniform.yaml", "cifar10_pow2.yaml", "imagenet.yaml")

# Official quantizer name -> the paper's parametrization (Sec. 2 of the paper):
# U1 (b, d), U2 (b, qmax), U3 (d, qmax); P1 (b, qmax), P2 (b, qmin), P3 (qmin, qmax).
PAPER_PARAMETRIZATION = {
    "parametric_fp_d_b": "U1",
    "parametric_fp_b_xmax": "U2",
    "parametric_fp_d_xmax": "U3",
    "parametric_pow2_b_xmax": "P1",
    "parametric_pow2_b_xmin": "P2",
    "parametric_pow2_xmin_xmax": "P3",
}
WEIGHT_QUANTIZERS = (None, "fp", "pow2") + tuple(PAPER_PARAMETRIZATION)
ACTIVATION_QUANTIZERS = (None, "fp_relu", "pow2_relu") + tuple(
    f"{q}_relu" for q in PAPER_PARAMETRIZATION)
OPTIMIZERS = (None, "momentum", "adam")
MODELS = {"resnet20": "cifar10", "resnet18": "imagenet", "mobilenetv2": "imagenet"}
DATASETS = ("cifar10", "imagenet")
ACTIVATION_TARGET_TYPES = ("max", "sum")
TOP_LEVEL_KEYS = ("source", "defaults", "experiments")


def _f(kind, **kw):
    return field(metadata={"kind": kind}, **kw)


@dataclass(frozen=True)
class Experiment:
    """One fully resolved experiment (file defaults + its own keys + overrides)."""

    name: str = _f("str")
    model: str = _f("str")
    dataset: str = _f("str")
    initial_learning_rate: float = _f("float")
    epochs: int = _f("int")
    lr_milestones: tuple[int, ...] = _f("int_list")
    lr_decay: float = _f("float")
    batch_size: int = _f("int")
    weight_decay: float = _f("float")
    momentum: float = _f("float")

    num_layers: int | None = _f("opt_int", default=None)
    shortcut_type: str = _f("str", default="")
    optimizer: str | None = _f("opt_str", default=None)
    init_from: str | None = _f("opt_str", default=None)

    w_quantize: str | None = _f("opt_str", default=None)
    a_quantize: str | None = _f("opt_str", default=None)

    w_stepsize: float = _f("float", default=2.0 ** -3)
    w_stepsize_min: float = _f("float", default=2.0 ** -8)
    w_stepsize_max: float = _f("float", default=1.0)
    w_xmin_min: float = _f("float", default=2.0 ** -16)
    w_xmin_max: float = _f("float", default=127.0)
    w_xmax_min: float = _f("float", default=2.0 ** -8)
    w_xmax_max: float = _f("float", default=127.0)
    w_bitwidth: int = _f("int", default=4)
    w_bitwidth_min: int = _f("int", default=2)
    w_bitwidth_max: int = _f("int", default=8)

    a_stepsize: float = _f("float", default=2.0 ** -3)
    a_stepsize_min: float = _f("float", default=2.0 ** -8)
    a_stepsize_max: float = _f("float", default=1.0)
    a_xmin_min: float = _f("float", default=2.0 ** -14)
    a_xmin_max: float = _f("float", default=255.0)
    a_xmax_min: float = _f("float", default=2.0 ** -8)
    a_xmax_max: float = _f("float", default=255.0)
    a_bitwidth: int = _f("int", default=4)
    a_bitwidth_min: int = _f("int", default=1)
    a_bitwidth_max: int = _f("int", default=8)

    # -1 switches a memory constraint off (official convention); sizes in KiB.
    target_weight_kbytes: float = _f("float", default=-1.0)
    target_activation_kbytes: float = _f("float", default=-1.0)
    target_activation_type: str = _f("str", default="max")

    initial_cost_lambda2: float = _f("float", default=0.1)
    initial_cost_lambda3: float = _f("float", default=0.1)

    scale_layer: bool = _f("bool", default=False)

    @property
    def paper_parametrization(self):
        """``{'weights': ..., 'activations': ...}`` with the paper's U1-U3 / P1-P3
        label of each learned quantizer; ``None`` for no quantizer or a fixed one
        (``fp``, ``pow2``, ``fp_relu``, ``pow2_relu``)."""
        act = self.a_quantize[:-len("_relu")] if self.a_quantize else None
        return {"weights": PAPER_PARAMETRIZATION.get(self.w_quantize),
                "activations": PAPER_PARAMETRIZATION.get(act)}

    def as_dict(self):
        """Plain dict of every field (``lr_milestones`` as a list), YAML-safe."""
        out = dataclasses.asdict(self)
        out["lr_milestones"] = list(self.lr_milestones)
        return out


_FIELDS = {f.name: f.metadata["kind"] for f in dataclasses.fields(Experiment)}
_REQUIRED = tuple(f.name for f in dataclasses.fields(Experiment)
                  if f.default is dataclasses.MISSING)
# Keys a YAML file or an override may set (the name comes from the mapping key).
SETTABLE_KEYS = tuple(k for k in _FIELDS if k != "name")


def did_you_mean(word, choices):
    """`` (did you mean 'X'?)`` for the closest of ``choices``, or an empty string."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=3)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def _unknown_key(where, key):
    if key == "weightfile":
        return UserError(f"{where}: 'weightfile' is not used here; give 'init_from: "
                         f"<EXPERIMENT NAME>' (the experiment whose best parameters to start from)")
    if key == "experiment":
        return UserError(f"{where}: 'experiment' cannot be set; the experiment name is its key")
    return UserError(f"{where}: unknown key {key!r}{did_you_mean(key, SETTABLE_KEYS)}")


def convert_value(where, key, value):
    """Coerce one value to its field type; UserError naming ``where`` and ``key``."""
    kind = _FIELDS[key]

    def fail(why):
        raise UserError(f"{where}: {key}: {why}")

    if kind.startswith("opt_"):
        if value is None:
            return None
        kind = kind[4:]
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        fail(f"expected true or false, got {value!r}")
    if kind == "str":
        if not isinstance(value, str):
            fail(f"expected a string, got {value!r}")
        return value
    if kind in ("int", "float"):
        return _number(fail, kind, value)
    if kind == "int_list":
        if not isinstance(value, (list, tuple)):
            fail(f"expected a list of epochs, got {value!r}")
        return tuple(_number(fail, "int", v) for v in value)
    raise AssertionError(kind)


def _number(fail, kind, value):
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        fail(f"expected {'an integer' if kind == 'int' else 'a number'}, got {value!r}")
    if isinstance(value, str):  # e.g. "2e-4", which YAML 1.1 reads as a string
        try:
            value = float(value) if kind == "float" else int(value)
        except ValueError:
            fail(f"expected {'an integer' if kind == 'int' else 'a number'}, got {value!r}")
    if kind == "int":
        if isinstance(value, float):
            if not value.is_integer():
                fail(f"expected an integer, got {value!r}")
            value = int(value)
        return int(value)
    value = float(value)
    if not math.isfinite(value):
        fail(f"expected a finite number, got {value!r}")
    return value


def _check(where, e):
    """Cross-field checks of a built Experiment; UserError on the first problem."""
    def fail(why):
        raise UserError(f"{where}: {why}")

    def choice(key, allowed):
        value = getattr(e, key)
        if value not in allowed:
            names = ", ".join("null" if a is None else a for a in allowed)
            hint = did_you_mean(value, [a for a in allowed if a])
            fail(f"{key}: {value!r} is not one of {names}{hint}")

    choice("model", tuple(MODELS))
    choice("dataset", DATASETS)
    if MODELS[e.model] != e.dataset:
        fail(f"model {e.model!r} is for dataset {MODELS[e.model]!r}, not {e.dataset!r}")
    if e.model.startswith("resnet") and e.num_layers != int(e.model[len("resnet"):]):
        fail(f"num_layers: {e.model} needs {int(e.model[len('resnet'):])}, got {e.num_layers!r}")
    if e.model == "mobilenetv2" and e.num_layers is not None:
        fail("num_layers: must be null for mobilenetv2")
    choice("optimizer", OPTIMIZERS)
    choice("w_quantize", WEIGHT_QUANTIZERS)
    choice("a_quantize", ACTIVATION_QUANTIZERS)
    choice("target_activation_type", ACTIVATION_TARGET_TYPES)

    positive = ("initial_learning_rate", "epochs", "batch_size", "lr_decay")
    positive += tuple(k for k in _FIELDS if k[:2] in ("w_", "a_") and
                      ("step" in k or "xmin" in k or "xmax" in k))
    for key in positive:
        if not getattr(e, key) > 0:
            fail(f"{key}: must be > 0, got {getattr(e, key)!r}")
    if e.lr_decay > 1:
        fail(f"lr_decay: must be <= 1, got {e.lr_decay!r}")
    if e.weight_decay < 0:
        fail(f"weight_decay: must be >= 0, got {e.weight_decay!r}")
    if not 0 <= e.momentum < 1:
        fail(f"momentum: must be in [0, 1), got {e.momentum!r}")
    ms = e.lr_milestones
    if any(b <= a for a, b in zip(ms, ms[1:])) or any(not 0 < m <= e.epochs for m in ms):
        fail(f"lr_milestones: must increase strictly and lie in 1..{e.epochs} "
             f"(epochs = {e.epochs}), got {list(ms)}")
    for p in ("w", "a"):
        lo, init, hi = (getattr(e, f"{p}_bitwidth{s}") for s in ("_min", "", "_max"))
        if not 1 <= lo <= init <= hi:
            fail(f"{p}_bitwidth: need 1 <= {p}_bitwidth_min <= {p}_bitwidth <= "
                 f"{p}_bitwidth_max, got {lo}, {init}, {hi}")
        lo, init, hi = (getattr(e, f"{p}_stepsize{s}") for s in ("_min", "", "_max"))
        if not lo <= init <= hi:
            fail(f"{p}_stepsize: need {p}_stepsize_min <= {p}_stepsize <= "
                 f"{p}_stepsize_max, got {lo}, {init}, {hi}")
        for r in ("xmin", "xmax"):
            lo, hi = getattr(e, f"{p}_{r}_min"), getattr(e, f"{p}_{r}_max")
            if lo > hi:
                fail(f"{p}_{r}_min {lo} is above {p}_{r}_max {hi}")
    for key, quant in (("target_weight_kbytes", "w_quantize"),
                       ("target_activation_kbytes", "a_quantize")):
        value = getattr(e, key)
        if value != -1 and not value > 0:
            fail(f"{key}: must be > 0, or -1 for no constraint, got {value!r}")
        if value > 0 and getattr(e, quant) is None:
            fail(f"{key}: a memory constraint needs {quant}")
    if e.init_from == "":
        fail("init_from: give an experiment name or null")


def build_experiment(where, values):
    """Experiment from a merged mapping of field: value (``name`` included); one-line
    UserError naming ``where`` for an unknown key, a missing, mistyped or out-of-range
    value."""
    for key in values:
        if key != "name" and key not in SETTABLE_KEYS:
            raise _unknown_key(where, key)
    missing = [k for k in _REQUIRED if k not in values]
    if missing:
        raise UserError(f"{where}: missing {', '.join(missing)} (set in defaults: or here)")
    kwargs = {k: v if k == "name" else convert_value(where, k, v) for k, v in values.items()}
    exp = Experiment(**kwargs)
    _check(where, exp)
    return exp


def load_experiment_file(path):
    """``{name: Experiment}`` of one YAML file, in file order. ``init_from`` is not
    resolved here (it may name an experiment of another file)."""
    path = Path(path)
    data = load_config(path)
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise UserError(f"{path}: unknown top-level key {key!r}; expected "
                            f"{', '.join(TOP_LEVEL_KEYS)}{did_you_mean(key, TOP_LEVEL_KEYS)}")
    defaults, experiments = data.get("defaults"), data.get("experiments")
    if not isinstance(defaults, dict):
        raise UserError(f"{path}: 'defaults' must be a mapping of key: value")
    if not isinstance(experiments, dict) or not experiments:
        raise UserError(f"{path}: 'experiments' must be a non-empty mapping of name: settings")
    for key in defaults:
        if key not in SETTABLE_KEYS:
            raise _unknown_key(f"{path}, defaults", key)
    out = {}
    for name, own in experiments.items():
        if not isinstance(name, str) or not name:
            raise UserError(f"{path}: experiment names must be non-empty strings, got {name!r}")
        where = f"{path}, experiment {name}"
        own = {} if own is None else own
        if not isinstance(own, dict):
            raise UserError(f"{where}: settings must be a mapping of key: value")
        for key in own:
            if key not in SETTABLE_KEYS:
                raise _unknown_key(where, key)
        out[name] = build_experiment(where, {**defaults, **own, "name": name})
    return out


def load_experiments(paths):
    """``{name: Experiment}`` of several files, in order; names must be unique
    across files and every ``init_from`` must name one of the experiments."""
    registry, origin = {}, {}
    for path in paths:
        for name, exp in load_experiment_file(path).items():
            if name in registry:
                raise UserError(f"{path}: experiment {name} is already defined in {origin[name]}")
            registry[name], origin[name] = exp, path
    for name, exp in registry.items():
        if exp.init_from is not None and exp.init_from not in registry:
            raise UserError(f"{origin[name]}, experiment {name}: init_from: unknown experiment "
                            f"{exp.init_from!r}{did_you_mean(exp.init_from, registry)}")
    return registry


@functools.lru_cache(maxsize=1)
def _registry():
    return load_experiments([CONFIG_DIR / f for f in EXPERIMENT_FILES])


def list_experiments():
    """All experiment names: CIFAR-10 uniform, CIFAR-10 pow2, ImageNet, each in file order."""
    return list(_registry())


def get_experiment(name, /, **overrides):
    """The named experiment, with ``overrides`` (field=value) applied and validated."""
    registry = _registry()
    if name not in registry:
        raise UserError(f"unknown experiment {name!r}{did_you_mean(name, registry)}; "
                        f"{len(registry)} are defined in {CONFIG_DIR}")
    exp = registry[name]
    if not overrides:
        return exp
    where = f"experiment {name} with overrides"
    for key in overrides:
        if key not in SETTABLE_KEYS:
            raise _unknown_key(where, key)
    exp = build_experiment(where, {**exp.as_dict(), **overrides})
    if exp.init_from is not None and exp.init_from not in registry:
        raise UserError(f"{where}: init_from: unknown experiment "
                        f"{exp.init_from!r}{did_you_mean(exp.init_from, registry)}")
    return exp
