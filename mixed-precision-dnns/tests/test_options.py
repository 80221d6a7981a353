"""Which settings train.py runs: the published recipe whenever the command names data, an
experiment or a config file, the smoke settings otherwise; the official script's spellings
(``train_resnet.py EXPERIMENT --cfg FILE --gpu N``); official cfg files read as the committed
YAML files say."""
import pickle
from pathlib import Path

import numpy as np
import pytest
import yaml

from common.data import cifar10
from common.dev.testing import run_script
from common.errors import UserError
from mpdnn import experiments as ex
from mpdnn.official_cfg import CIFAR10_SCHEDULE, experiment_from_cfg
from mpdnn.training import DEFAULT_EXPERIMENT, parse_args

TRAIN = Path(__file__).resolve().parent.parent / "train.py"
SMOKE = yaml.safe_load((ex.CONFIG_DIR.parent / "smoke.yaml").read_text())


def _is_recipe(args):
    return (args.set, args.train_samples, args.val_samples, args.checkpoint_interval) == (
        [], 0, 0, 500)


def test_smoke_settings_only_when_nothing_names_data_an_experiment_or_a_config(tmp_path):
    smoke = parse_args([])
    assert (smoke.experiment, smoke.dataset, smoke.train_samples, smoke.set) == (
        SMOKE["experiment"], "mnist5k", SMOKE["train_samples"], SMOKE["set"])
    assert parse_args(["--dataset", "mnist5k"]).train_samples == SMOKE["train_samples"]
    config = tmp_path / "mine.yaml"
    config.write_text("seed: 3\n")
    for argv in (["--root", str(tmp_path), "--dataset", "cifar10"], ["--root", str(tmp_path)],
                 ["--data-dir", str(tmp_path)], ["--dataset", "cifar10"],
                 ["--experiment", "DEFAULT"], ["DEFAULT"], ["--config", str(config)],
                 ["--cfg", str(tmp_path / "x.cfg")]):
        args = parse_args(argv)
        assert _is_recipe(args), argv
        assert args.experiment in ("DEFAULT", DEFAULT_EXPERIMENT)


def test_official_spellings():
    args = parse_args(["PARAMETRIC_FP_W2Q_B_XMAX_CON_INIT", "--cfg", "train_resnet_quant_fp.cfg",
                       "--gpu", "1"])
    assert (args.experiment, args.cfg, args.context, args.device_id) == (
        "PARAMETRIC_FP_W2Q_B_XMAX_CON_INIT", "train_resnet_quant_fp.cfg", "cudnn", 1)
    assert parse_args(["--data-dir", "DATA"]).root == "DATA"
    with pytest.raises(UserError, match="two experiments"):
        parse_args(["DEFAULT", "--experiment", "DEFAULT_INIT"])
    with pytest.raises(UserError, match="--gpu"):
        parse_args(["--gpu", "-1"])


@pytest.mark.parametrize("name", ["DEFAULT", "PARAMETRIC_FP_WAMQ_DELTA_XMAX_CON_INIT",
                                  "PARAMETRIC_POW2_WQ_B_XMIN_INIT", "FP_W2A4Q_INIT"])
def test_an_official_style_cfg_gives_the_registry_experiment(name, tmp_path):
    """A cfg written the official way (the schedule left to the script, [DEFAULT] holding the
    shared keys, a weightfile instead of init_from) reads as the registry's experiment."""
    exp = ex.get_experiment(name)
    own = {k: v for k, v in exp.as_dict().items() if k not in CIFAR10_SCHEDULE}
    shared = {k: own.pop(k) for k in ("num_layers", "shortcut_type")}
    init_from = own.pop("init_from")
    if name == "DEFAULT":   # the [DEFAULT] section run on its own
        text = [f"[DEFAULT]\n{_ini({**shared, **own})}"]
    else:
        text = [f"[DEFAULT]\n{_ini(shared)}", f"[{name}]\n{_ini(own, init_from)}"]
    if init_from not in (None, name, "DEFAULT"):
        text.append(f"[{init_from}]\n")
    cfg = tmp_path / "official.cfg"
    cfg.write_text("\n".join(text))
    assert experiment_from_cfg(cfg, name) == exp
    with pytest.raises(UserError, match="has no experiment"):
        experiment_from_cfg(cfg, name + "X")


def _ini(values, init_from=None):
    lines = [f"{k} = {'' if v is None else v}" for k, v in values.items()
             if k != "name" and v is not None]
    if init_from:
        lines.append(f"weightfile = params_{init_from}/params_best.h5")
    return "\n".join(lines) + "\n"


def test_a_dataset_root_without_a_config_trains_the_published_recipe(tmp_path):
    """`train.py --root DATA --dataset cifar10`: the default experiment's official schedule
    (160 epochs of batch 128), not the smoke settings."""
    data = tmp_path / "data" / "cifar-10-batches-py"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in list(cifar10.TRAIN_BATCHES) + [cifar10.TEST_BATCH]:   # 130 training images
        with open(data / name, "wb") as f:
            pickle.dump({b"labels": rng.integers(0, 10, 26).tolist(),
                         b"data": rng.integers(0, 256, (26, 3072), dtype=np.uint8)}, f)
    with open(data / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in cifar10.CIFAR10_CLASSES]}, f)
    out = tmp_path / "run"
    proc = run_script(TRAIN, "--root", tmp_path / "data", "--dataset", "cifar10", "--output",
                      out, "--stop-at-epoch", "1", "--loader-threads", "0",
                      env={"NNABLA_RESEARCH_NO_PROGRESS": "1"})
    assert "stopped after epoch 1 of 160" in proc.stdout
    experiment = yaml.safe_load((out / "experiment.yaml").read_text())
    assert experiment == ex.get_experiment(DEFAULT_EXPERIMENT).as_dict()
    assert (experiment["epochs"], experiment["batch_size"]) == (160, 128)
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert (config["set"], config["train_samples"], config["dataset"]) == ([], 0, "cifar10")
    assert config["root"] == str(tmp_path / "data")
