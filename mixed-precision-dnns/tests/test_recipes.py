"""Every shipped experiment resolves to its published recipe, key by key, and a run records
exactly the experiment it trained.

The official values are LISTED HERE, transcribed from sony/ai-research-code
``mixed-precision-dnns/`` (commit fd787ea5d126, the files' last change): the defaults of
``train_resnet.py``'s ``Configuration``, the values ``train_resnet.py`` fixes in code, and
every section of ``train_resnet_quant_fp.cfg`` and ``train_resnet_quant_pow2.cfg`` with
the keys it sets, values as written ([DEFAULT] included). They are independent of
``configs/experiments/*.yaml`` and of ``tools/cfg_to_yaml.py`` (which generated those
files), so a wrong value anywhere in the chain fails here. The ImageNet experiments (no
official recipe) are listed the same way, every key: Table 4's memory targets and the
schedule this repository chose.

Also checked: the option layering of ``train.py`` (built-in defaults < ``--config`` file /
``--experiment`` entry / ``--cfg`` section < ``--set`` and explicit flags; the smoke
settings only without any of ``--config``, ``--experiment``, ``--cfg`` and a dataset), and
that a tiny training run's ``config.yaml``, ``experiment.yaml`` and checkpoint agree with
the experiment file.
"""
from pathlib import Path

import pytest
import yaml

from common.dev.testing import run_script
from common.train.checkpoint import CheckpointManager
from mpdnn import experiments as ex
from mpdnn.official_cfg import experiment_from_cfg
from mpdnn.options import load_experiment, parse_overrides
from mpdnn.training import parse_args

TRAIN = Path(__file__).resolve().parent.parent / "train.py"
SMOKE = yaml.safe_load((ex.CONFIG_DIR.parent / "smoke.yaml").read_text())

# train_resnet.py, class Configuration: the value of every key a cfg section leaves out.
OFFICIAL_CONFIGURATION_DEFAULTS = dict(
    optimizer=None, weightfile=None, w_quantize=None, a_quantize=None,
    w_stepsize=2 ** -3, w_stepsize_min=2 ** -8, w_stepsize_max=1.0,
    w_xmin_min=2 ** -16, w_xmin_max=127.0, w_xmax_min=2 ** -8, w_xmax_max=127.0,
    w_bitwidth=4, w_bitwidth_min=2, w_bitwidth_max=8,
    a_stepsize=2 ** -3, a_stepsize_min=2 ** -8, a_stepsize_max=1.0,
    a_xmin_min=2 ** -14, a_xmin_max=255.0, a_xmax_min=2 ** -8, a_xmax_max=255.0,
    a_bitwidth=4, a_bitwidth_min=1, a_bitwidth_max=8,
    target_weight_kbytes=-1.0, target_activation_kbytes=-1.0, target_activation_type="max",
    initial_cost_lambda2=0.1, initial_cost_lambda3=0.1, scale_layer=False)

# train_resnet.py, train(): batch 128; the learning rate for 80 epochs, /10 for 40, /100 for
# 40; weight decay 2e-4, momentum 0.9 (Adam only when optimizer = adam); CIFAR-10.
OFFICIAL_SCRIPT = dict(dataset="cifar10", batch_size=128, epochs=160, lr_milestones=[80, 120],
                       lr_decay=0.1, weight_decay=0.0002, momentum=0.9)

# The two cfg files: section -> the keys it sets (values as written; ints and floats as the
# official Configuration converts them; scale_layer as its text).
FP_CFG = {
    "DEFAULT": dict(num_layers=20, shortcut_type="", initial_learning_rate=0.1),
    "DEFAULT_": dict(initial_learning_rate=0.03),
    "DEFAULT_INIT": dict(weightfile="params_DEFAULT/params_best.h5", initial_learning_rate=0.03),
    "DEFAULT_RLR": dict(initial_learning_rate=0.01),
    "DEFAULT_INIT_RLR": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01),
    "FP_W2Q_INIT": dict(weightfile="params_DEFAULT/params_best.h5", initial_learning_rate=0.03,
        w_quantize="fp", w_bitwidth=2),
    "FP_W2A4Q_INIT": dict(weightfile="params_DEFAULT/params_best.h5", initial_learning_rate=0.03,
        w_quantize="fp", w_bitwidth=2, a_quantize="fp_relu", a_bitwidth=4),
    "FP_W2Q_INIT_RLR": dict(weightfile="params_DEFAULT/params_best.h5", initial_learning_rate=0.01,
        w_quantize="fp", w_bitwidth=2),
    "FP_W2A4Q_INIT_RLR": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="fp", w_bitwidth=2, a_quantize="fp_relu",
        a_bitwidth=4),
    "FP_W2Q_INIT_RRLR": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.003, w_quantize="fp", w_bitwidth=2),
    "FP_W2A4Q_INIT_RRLR": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.003, w_quantize="fp", w_bitwidth=2, a_quantize="fp_relu",
        a_bitwidth=4),
    "PARAMETRIC_FP_WQ_DELTA_XMAX": dict(initial_learning_rate=0.03,
        w_quantize="parametric_fp_d_xmax"),
    "PARAMETRIC_FP_WQ_B_XMAX": dict(initial_learning_rate=0.03, w_quantize="parametric_fp_b_xmax"),
    "PARAMETRIC_FP_WQ_DELTA_B": dict(initial_learning_rate=0.03, w_quantize="parametric_fp_d_b"),
    "PARAMETRIC_FP_WAQ_DELTA_XMAX": dict(initial_learning_rate=0.03,
        w_quantize="parametric_fp_d_xmax", a_quantize="parametric_fp_d_xmax_relu"),
    "PARAMETRIC_FP_WAQ_B_XMAX": dict(initial_learning_rate=0.03, w_quantize="parametric_fp_b_xmax",
        a_quantize="parametric_fp_b_xmax_relu"),
    "PARAMETRIC_FP_WAQ_DELTA_B": dict(initial_learning_rate=0.03, w_quantize="parametric_fp_d_b",
        a_quantize="parametric_fp_d_b_relu"),
    "PARAMETRIC_FP_WQ_DELTA_XMAX_INIT": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.03, w_quantize="parametric_fp_d_xmax"),
    "PARAMETRIC_FP_WQ_B_XMAX_INIT": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.03, w_quantize="parametric_fp_b_xmax"),
    "PARAMETRIC_FP_WQ_DELTA_B_INIT": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.03, w_quantize="parametric_fp_d_b"),
    "PARAMETRIC_FP_WAQ_DELTA_XMAX_INIT": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.03, w_quantize="parametric_fp_d_xmax",
        a_quantize="parametric_fp_d_xmax_relu"),
    "PARAMETRIC_FP_WAQ_B_XMAX_INIT": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.03, w_quantize="parametric_fp_b_xmax",
        a_quantize="parametric_fp_b_xmax_relu"),
    "PARAMETRIC_FP_WAQ_DELTA_B_INIT": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.03, w_quantize="parametric_fp_d_b",
        a_quantize="parametric_fp_d_b_relu"),
    "PARAMETRIC_FP_WQ_DELTA_XMAX_RLR": dict(initial_learning_rate=0.01,
        w_quantize="parametric_fp_d_xmax"),
    "PARAMETRIC_FP_WQ_B_XMAX_RLR": dict(initial_learning_rate=0.01,
        w_quantize="parametric_fp_b_xmax"),
    "PARAMETRIC_FP_WQ_DELTA_B_RLR": dict(initial_learning_rate=0.01,
        w_quantize="parametric_fp_d_b"),
    "PARAMETRIC_FP_WAQ_DELTA_XMAX_RLR": dict(initial_learning_rate=0.01,
        w_quantize="parametric_fp_d_xmax", a_quantize="parametric_fp_d_xmax_relu"),
    "PARAMETRIC_FP_WAQ_B_XMAX_RLR": dict(initial_learning_rate=0.01,
        w_quantize="parametric_fp_b_xmax", a_quantize="parametric_fp_b_xmax_relu"),
    "PARAMETRIC_FP_WAQ_DELTA_B_RLR": dict(initial_learning_rate=0.01,
        w_quantize="parametric_fp_d_b", a_quantize="parametric_fp_d_b_relu"),
    "PARAMETRIC_FP_WQ_DELTA_XMAX_INIT_RLR": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_fp_d_xmax"),
    "PARAMETRIC_FP_WQ_B_XMAX_INIT_RLR": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_fp_b_xmax"),
    "PARAMETRIC_FP_WQ_DELTA_B_INIT_RLR": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_fp_d_b"),
    "PARAMETRIC_FP_WAQ_DELTA_XMAX_INIT_RLR": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_fp_d_xmax",
        a_quantize="parametric_fp_d_xmax_relu"),
    "PARAMETRIC_FP_WAQ_B_XMAX_INIT_RLR": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_fp_b_xmax",
        a_quantize="parametric_fp_b_xmax_relu"),
    "PARAMETRIC_FP_WAQ_DELTA_B_INIT_RLR": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_fp_d_b",
        a_quantize="parametric_fp_d_b_relu"),
    "PARAMETRIC_FP_WQ_DELTA_XMAX_INIT_ADAM": dict(weightfile="params_DEFAULT/params_best.h5",
        optimizer="adam", initial_learning_rate=0.001, w_quantize="parametric_fp_d_xmax"),
    "PARAMETRIC_FP_WQ_B_XMAX_INIT_ADAM": dict(weightfile="params_DEFAULT/params_best.h5",
        optimizer="adam", initial_learning_rate=0.001, w_quantize="parametric_fp_b_xmax"),
    "PARAMETRIC_FP_WQ_DELTA_B_INIT_ADAM": dict(weightfile="params_DEFAULT/params_best.h5",
        optimizer="adam", initial_learning_rate=0.001, w_quantize="parametric_fp_d_b"),
    "PARAMETRIC_FP_WAQ_DELTA_XMAX_INIT_ADAM": dict(weightfile="params_DEFAULT/params_best.h5",
        optimizer="adam", initial_learning_rate=0.001, w_quantize="parametric_fp_d_xmax",
        a_quantize="parametric_fp_d_xmax_relu"),
    "PARAMETRIC_FP_WAQ_B_XMAX_INIT_ADAM": dict(weightfile="params_DEFAULT/params_best.h5",
        optimizer="adam", initial_learning_rate=0.001, w_quantize="parametric_fp_b_xmax",
        a_quantize="parametric_fp_b_xmax_relu"),
    "PARAMETRIC_FP_WAQ_DELTA_B_INIT_ADAM": dict(weightfile="params_DEFAULT/params_best.h5",
        optimizer="adam", initial_learning_rate=0.001, w_quantize="parametric_fp_d_b",
        a_quantize="parametric_fp_d_b_relu"),
    "PARAMETRIC_FP_W2Q_B_XMAX_CON_INIT": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.03, w_quantize="parametric_fp_b_xmax", w_bitwidth=2,
        w_bitwidth_min=2, w_bitwidth_max=2),
    "PARAMETRIC_FP_W2A4Q_B_XMAX_CON_INIT": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.03, w_quantize="parametric_fp_b_xmax",
        a_quantize="parametric_fp_b_xmax_relu", w_bitwidth=2, w_bitwidth_min=2, w_bitwidth_max=2,
        a_bitwidth=4, a_bitwidth_min=4, a_bitwidth_max=4),
    "PARAMETRIC_FP_W2Q_B_XMAX_CON_INIT_RLR": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_fp_b_xmax", w_bitwidth=2,
        w_bitwidth_min=2, w_bitwidth_max=2),
    "PARAMETRIC_FP_W2A4Q_B_XMAX_CON_INIT_RLR": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_fp_b_xmax",
        a_quantize="parametric_fp_b_xmax_relu", w_bitwidth=2, w_bitwidth_min=2, w_bitwidth_max=2,
        a_bitwidth=4, a_bitwidth_min=4, a_bitwidth_max=4),
    "PARAMETRIC_FP_W2Q_B_XMAX_CON_INIT_RRLR": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.003, w_quantize="parametric_fp_b_xmax", w_bitwidth=2,
        w_bitwidth_min=2, w_bitwidth_max=2),
    "PARAMETRIC_FP_W2A4Q_B_XMAX_CON_INIT_RRLR": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.003, w_quantize="parametric_fp_b_xmax",
        a_quantize="parametric_fp_b_xmax_relu", w_bitwidth=2, w_bitwidth_min=2, w_bitwidth_max=2,
        a_bitwidth=4, a_bitwidth_min=4, a_bitwidth_max=4),
    "PARAMETRIC_FP_WQ_DELTA_XMAX_CON_INIT_OLR": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.1, w_quantize="parametric_fp_d_xmax", target_weight_kbytes=70.1),
    "PARAMETRIC_FP_WAMQ_DELTA_XMAX_CON_INIT_OLR": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.1, w_quantize="parametric_fp_d_xmax",
        a_quantize="parametric_fp_d_xmax_relu", target_weight_kbytes=70.1,
        target_activation_kbytes=8.1, target_activation_type="max"),
    "PARAMETRIC_FP_WASQ_DELTA_XMAX_CON_INIT_OLR": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.1, w_quantize="parametric_fp_d_xmax",
        a_quantize="parametric_fp_d_xmax_relu", target_weight_kbytes=70.1,
        target_activation_kbytes=92.1, target_activation_type="sum"),
    "PARAMETRIC_FP_WQ_DELTA_XMAX_CON_INIT": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.03, w_quantize="parametric_fp_d_xmax", target_weight_kbytes=70.1),
    "PARAMETRIC_FP_WAMQ_DELTA_XMAX_CON_INIT": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.03, w_quantize="parametric_fp_d_xmax",
        a_quantize="parametric_fp_d_xmax_relu", target_weight_kbytes=70.1,
        target_activation_kbytes=8.1, target_activation_type="max"),
    "PARAMETRIC_FP_WASQ_DELTA_XMAX_CON_INIT": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.03, w_quantize="parametric_fp_d_xmax",
        a_quantize="parametric_fp_d_xmax_relu", target_weight_kbytes=70.1,
        target_activation_kbytes=92.1, target_activation_type="sum"),
    "PARAMETRIC_FP_WQ_DELTA_XMAX_CON_INIT_RLR": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_fp_d_xmax", target_weight_kbytes=70.1),
    "PARAMETRIC_FP_WAMQ_DELTA_XMAX_CON_INIT_RLR": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_fp_d_xmax",
        a_quantize="parametric_fp_d_xmax_relu", target_weight_kbytes=70.1,
        target_activation_kbytes=8.1, target_activation_type="max"),
    "PARAMETRIC_FP_WASQ_DELTA_XMAX_CON_INIT_RLR": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_fp_d_xmax",
        a_quantize="parametric_fp_d_xmax_relu", target_weight_kbytes=70.1,
        target_activation_kbytes=92.1, target_activation_type="sum"),
    "PARAMETRIC_FP_WQ_DELTA_XMAX_CON_INIT_RLR2": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_fp_d_xmax", target_weight_kbytes=70.1,
        initial_cost_lambda2=0.1),
    "PARAMETRIC_FP_WAMQ_DELTA_XMAX_CON_INIT_RLR2": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_fp_d_xmax",
        a_quantize="parametric_fp_d_xmax_relu", a_bitwidth=6, target_weight_kbytes=70.1,
        target_activation_kbytes=8.1, target_activation_type="max", initial_cost_lambda2=0.1,
        initial_cost_lambda3=1.0),
    "PARAMETRIC_FP_WASQ_DELTA_XMAX_CON_INIT_RLR2": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_fp_d_xmax",
        a_quantize="parametric_fp_d_xmax_relu", a_bitwidth=6, target_weight_kbytes=70.1,
        target_activation_kbytes=92.1, target_activation_type="sum", initial_cost_lambda2=0.1,
        initial_cost_lambda3=1.0),
    "PARAMETRIC_FP_WQ_DELTA_XMAX_CON_INIT_RLR3": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_fp_d_xmax", target_weight_kbytes=70.1,
        initial_cost_lambda2=0.1),
    "PARAMETRIC_FP_WAMQ_DELTA_XMAX_CON_INIT_RLR3": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_fp_d_xmax",
        a_quantize="parametric_fp_d_xmax_relu", a_bitwidth=6, target_weight_kbytes=70.1,
        target_activation_kbytes=8.1, target_activation_type="max", initial_cost_lambda2=0.1,
        initial_cost_lambda3=1.0),
    "PARAMETRIC_FP_WASQ_DELTA_XMAX_CON_INIT_RLR3": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_fp_d_xmax",
        a_quantize="parametric_fp_d_xmax_relu", a_bitwidth=6, target_weight_kbytes=70.1,
        target_activation_kbytes=92.1, target_activation_type="sum", initial_cost_lambda2=0.1,
        initial_cost_lambda3=1.0),
    "PARAMETRIC_FP_WQ_DELTA_XMAX_CON_INIT_RLR4": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_fp_d_xmax", target_weight_kbytes=70.1,
        initial_cost_lambda2=0.1),
    "PARAMETRIC_FP_WAMQ_DELTA_XMAX_CON_INIT_RLR4": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_fp_d_xmax",
        a_quantize="parametric_fp_d_xmax_relu", a_bitwidth=6, target_weight_kbytes=70.1,
        target_activation_kbytes=8.1, target_activation_type="max", initial_cost_lambda2=0.1,
        initial_cost_lambda3=0.1),
    "PARAMETRIC_FP_WASQ_DELTA_XMAX_CON_INIT_RLR4": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_fp_d_xmax",
        a_quantize="parametric_fp_d_xmax_relu", a_bitwidth=6, target_weight_kbytes=70.1,
        target_activation_kbytes=92.1, target_activation_type="sum", initial_cost_lambda2=0.1,
        initial_cost_lambda3=0.1),
    "PARAMETRIC_FP_WQ_DELTA_XMAX_CON_INIT_RLR5": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_fp_d_xmax", target_weight_kbytes=70.1,
        initial_cost_lambda2=0.1),
    "PARAMETRIC_FP_WAMQ_DELTA_XMAX_CON_INIT_RLR5": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_fp_d_xmax",
        a_quantize="parametric_fp_d_xmax_relu", a_bitwidth=6, target_weight_kbytes=70.1,
        target_activation_kbytes=8.1, target_activation_type="max", initial_cost_lambda2=0.1,
        initial_cost_lambda3=1.0),
    "PARAMETRIC_FP_WASQ_DELTA_XMAX_CON_INIT_RLR5": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_fp_d_xmax",
        a_quantize="parametric_fp_d_xmax_relu", a_bitwidth=6, target_weight_kbytes=70.1,
        target_activation_kbytes=92.1, target_activation_type="sum", initial_cost_lambda2=0.1,
        initial_cost_lambda3=1.0),
    "PARAMETRIC_FP_WQ_DELTA_XMAX_CON_INIT_RLR6": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_fp_d_xmax", target_weight_kbytes=70.1,
        initial_cost_lambda2=0.1),
    "PARAMETRIC_FP_WAMQ_DELTA_XMAX_CON_INIT_RLR6": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_fp_d_xmax",
        a_quantize="parametric_fp_d_xmax_relu", a_bitwidth=6, target_weight_kbytes=70.1,
        target_activation_kbytes=8.1, target_activation_type="max", initial_cost_lambda2=0.1,
        initial_cost_lambda3=0.1),
    "PARAMETRIC_FP_WASQ_DELTA_XMAX_CON_INIT_RLR6": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_fp_d_xmax",
        a_quantize="parametric_fp_d_xmax_relu", a_bitwidth=6, target_weight_kbytes=70.1,
        target_activation_kbytes=92.1, target_activation_type="sum", initial_cost_lambda2=0.1,
        initial_cost_lambda3=0.1),
    "PARAMETRIC_FP_WQ_DELTA_XMAX_CON_INIT_RRLR": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.003, w_quantize="parametric_fp_d_xmax", target_weight_kbytes=70.1),
    "PARAMETRIC_FP_WAMQ_DELTA_XMAX_CON_INIT_RRLR": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.003, w_quantize="parametric_fp_d_xmax",
        a_quantize="parametric_fp_d_xmax_relu", target_weight_kbytes=70.1,
        target_activation_kbytes=8.1, target_activation_type="max"),
    "PARAMETRIC_FP_WASQ_DELTA_XMAX_CON_INIT_RRLR": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.003, w_quantize="parametric_fp_d_xmax",
        a_quantize="parametric_fp_d_xmax_relu", target_weight_kbytes=70.1,
        target_activation_kbytes=92.1, target_activation_type="sum"),
}

POW2_CFG = {
    "DEFAULT": dict(num_layers=20, shortcut_type="", initial_learning_rate=0.1),
    "DEFAULT_": dict(initial_learning_rate=0.03),
    "DEFAULT_INIT": dict(weightfile="params_DEFAULT/params_best.h5", initial_learning_rate=0.03),
    "DEFAULT_RLR": dict(initial_learning_rate=0.01),
    "DEFAULT_INIT_RLR": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01),
    "POW2_W2Q_INIT": dict(weightfile="params_DEFAULT/params_best.h5", initial_learning_rate=0.03,
        w_quantize="pow2", w_bitwidth=2, scale_layer="True"),
    "POW2_W2A4Q_INIT": dict(weightfile="POW2_W2A4Q_INIT/params_best.h5",
        initial_learning_rate=0.03, w_quantize="pow2", w_bitwidth=2, a_quantize="pow2_relu",
        a_bitwidth=4, scale_layer="True"),
    "POW2_W2Q_INIT_RLR": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="pow2", w_bitwidth=2, scale_layer="True"),
    "POW2_W2A4Q_INIT_RLR": dict(weightfile="POW2_W2A4Q_INIT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="pow2", w_bitwidth=2, a_quantize="pow2_relu",
        a_bitwidth=4, scale_layer="True"),
    "POW2_W2Q_INIT_RRLR": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.003, w_quantize="pow2", w_bitwidth=2, scale_layer="True"),
    "POW2_W2A4Q_INIT_RRLR": dict(weightfile="POW2_W2A4Q_INIT/params_best.h5",
        initial_learning_rate=0.003, w_quantize="pow2", w_bitwidth=2, a_quantize="pow2_relu",
        a_bitwidth=4, scale_layer="True"),
    "PARAMETRIC_POW2_WQ_XMIN_XMAX": dict(initial_learning_rate=0.03,
        w_quantize="parametric_pow2_xmin_xmax"),
    "PARAMETRIC_POW2_WQ_B_XMAX": dict(initial_learning_rate=0.03,
        w_quantize="parametric_pow2_b_xmax"),
    "PARAMETRIC_POW2_WQ_B_XMIN": dict(initial_learning_rate=0.003,
        w_quantize="parametric_pow2_b_xmin"),
    "PARAMETRIC_POW2_WAQ_XMIN_XMAX": dict(initial_learning_rate=0.03,
        w_quantize="parametric_pow2_xmin_xmax", a_quantize="parametric_pow2_xmin_xmax_relu"),
    "PARAMETRIC_POW2_WAQ_B_XMAX": dict(initial_learning_rate=0.03,
        w_quantize="parametric_pow2_b_xmax", a_quantize="parametric_pow2_b_xmax_relu"),
    "PARAMETRIC_POW2_WAQ_B_XMIN": dict(initial_learning_rate=0.003,
        w_quantize="parametric_pow2_b_xmin", a_quantize="parametric_pow2_b_xmin_relu"),
    "PARAMETRIC_POW2_WQ_XMIN_XMAX_INIT": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.03, w_quantize="parametric_pow2_xmin_xmax"),
    "PARAMETRIC_POW2_WQ_B_XMAX_INIT": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.03, w_quantize="parametric_pow2_b_xmax"),
    "PARAMETRIC_POW2_WQ_B_XMIN_INIT": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.003, w_quantize="parametric_pow2_b_xmin"),
    "PARAMETRIC_POW2_WAQ_XMIN_XMAX_INIT": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.03, w_quantize="parametric_pow2_xmin_xmax",
        a_quantize="parametric_pow2_xmin_xmax_relu"),
    "PARAMETRIC_POW2_WAQ_B_XMAX_INIT": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.03, w_quantize="parametric_pow2_b_xmax",
        a_quantize="parametric_pow2_b_xmax_relu"),
    "PARAMETRIC_POW2_WAQ_B_XMIN_INIT": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.003, w_quantize="parametric_pow2_b_xmin",
        a_quantize="parametric_pow2_b_xmin_relu"),
    "PARAMETRIC_POW2_WQ_XMIN_XMAX_RLR": dict(initial_learning_rate=0.01,
        w_quantize="parametric_pow2_xmin_xmax"),
    "PARAMETRIC_POW2_WQ_B_XMAX_RLR": dict(initial_learning_rate=0.01,
        w_quantize="parametric_pow2_b_xmax"),
    "PARAMETRIC_POW2_WQ_B_XMIN_RLR": dict(initial_learning_rate=0.001,
        w_quantize="parametric_pow2_b_xmin"),
    "PARAMETRIC_POW2_WAQ_XMIN_XMAX_RLR": dict(initial_learning_rate=0.01,
        w_quantize="parametric_pow2_xmin_xmax", a_quantize="parametric_pow2_xmin_xmax_relu"),
    "PARAMETRIC_POW2_WAQ_B_XMAX_RLR": dict(initial_learning_rate=0.01,
        w_quantize="parametric_pow2_b_xmax", a_quantize="parametric_pow2_b_xmax_relu"),
    "PARAMETRIC_POW2_WAQ_B_XMIN_RLR": dict(initial_learning_rate=0.001,
        w_quantize="parametric_pow2_b_xmin", a_quantize="parametric_pow2_b_xmin_relu"),
    "PARAMETRIC_POW2_WQ_XMIN_XMAX_INIT_RLR": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_pow2_xmin_xmax"),
    "PARAMETRIC_POW2_WQ_B_XMAX_INIT_RLR": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_pow2_b_xmax"),
    "PARAMETRIC_POW2_WQ_B_XMIN_INIT_RLR": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.001, w_quantize="parametric_pow2_b_xmin"),
    "PARAMETRIC_POW2_WAQ_XMIN_XMAX_INIT_RLR": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_pow2_xmin_xmax",
        a_quantize="parametric_pow2_xmin_xmax_relu"),
    "PARAMETRIC_POW2_WAQ_B_XMAX_INIT_RLR": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_pow2_b_xmax",
        a_quantize="parametric_pow2_b_xmax_relu"),
    "PARAMETRIC_POW2_WAQ_B_XMIN_INIT_RLR": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.001, w_quantize="parametric_pow2_b_xmin",
        a_quantize="parametric_pow2_b_xmin_relu"),
    "PARAMETRIC_POW2_W2Q_B_XMAX_CON_INIT": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.03, w_quantize="parametric_pow2_b_xmax", w_bitwidth=2,
        w_bitwidth_min=2, w_bitwidth_max=2, scale_layer="True"),
    "PARAMETRIC_POW2_W2A4Q_B_XMAX_CON_INIT": dict(weightfile="POW2_W2A4Q_INIT/params_best.h5",
        initial_learning_rate=0.03, w_quantize="parametric_pow2_b_xmax",
        a_quantize="parametric_pow2_b_xmax_relu", w_bitwidth=2, w_bitwidth_min=2, w_bitwidth_max=2,
        a_bitwidth=4, a_bitwidth_min=4, a_bitwidth_max=4, scale_layer="True"),
    "PARAMETRIC_POW2_W2Q_B_XMAX_CON_INIT_RLR": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_pow2_b_xmax", w_bitwidth=2,
        w_bitwidth_min=2, w_bitwidth_max=2, scale_layer="True"),
    "PARAMETRIC_POW2_W2A4Q_B_XMAX_CON_INIT_RLR": dict(weightfile="POW2_W2A4Q_INIT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_pow2_b_xmax",
        a_quantize="parametric_pow2_b_xmax_relu", w_bitwidth=2, w_bitwidth_min=2, w_bitwidth_max=2,
        a_bitwidth=4, a_bitwidth_min=4, a_bitwidth_max=4, scale_layer="True"),
    "PARAMETRIC_POW2_W2Q_B_XMAX_CON_INIT_RRLR": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.003, w_quantize="parametric_pow2_b_xmax", w_bitwidth=2,
        w_bitwidth_min=2, w_bitwidth_max=2, scale_layer="True"),
    "PARAMETRIC_POW2_W2A4Q_B_XMAX_CON_INIT_RRLR": dict(weightfile="POW2_W2A4Q_INIT/params_best.h5",
        initial_learning_rate=0.003, w_quantize="parametric_pow2_b_xmax",
        a_quantize="parametric_pow2_b_xmax_relu", w_bitwidth=2, w_bitwidth_min=2, w_bitwidth_max=2,
        a_bitwidth=4, a_bitwidth_min=4, a_bitwidth_max=4, scale_layer="True"),
    "PARAMETRIC_POW2_WQ_XMIN_XMAX_CON_INIT": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.03, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        target_weight_kbytes=70.1, scale_layer="True"),
    "PARAMETRIC_POW2_WQ_XMIN_XMAX_CON_INIT_FT": dict(
        weightfile="PARAMETRIC_POW2_WQ_XMIN_XMAX_CON_INIT_RRLR/params_best.h5",
        initial_learning_rate=0.03, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        target_weight_kbytes=70.1, scale_layer="True"),
    "PARAMETRIC_POW2_WAMQ_XMIN_XMAX_CON_INIT": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.03, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        a_quantize="parametric_pow2_xmin_xmax_relu", a_bitwidth=6, target_weight_kbytes=70.1,
        target_activation_kbytes=8.1, target_activation_type="max", scale_layer="True"),
    "PARAMETRIC_POW2_WASQ_XMIN_XMAX_CON_INIT": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.03, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        a_quantize="parametric_pow2_xmin_xmax_relu", a_bitwidth=6, target_weight_kbytes=70.1,
        target_activation_kbytes=92.1, target_activation_type="sum", scale_layer="True"),
    "PARAMETRIC_POW2_WAMQ_XMIN_XMAX_CON_INIT_FT": dict(
        weightfile="PARAMETRIC_POW2_WAMQ_XMIN_XMAX_CON_INIT_RRLR/params_best.h5",
        initial_learning_rate=0.03, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        a_quantize="parametric_pow2_xmin_xmax_relu", a_bitwidth=6, target_weight_kbytes=70.1,
        target_activation_kbytes=8.1, target_activation_type="max", scale_layer="True"),
    "PARAMETRIC_POW2_WASQ_XMIN_XMAX_CON_INIT_FT": dict(
        weightfile="PARAMETRIC_POW2_WASQ_XMIN_XMAX_CON_INIT_RRLR/params_best.h5",
        initial_learning_rate=0.03, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        a_quantize="parametric_pow2_xmin_xmax_relu", a_bitwidth=6, target_weight_kbytes=70.1,
        target_activation_kbytes=92.1, target_activation_type="sum", scale_layer="True"),
    "PARAMETRIC_POW2_WQ_XMIN_XMAX_CON_INIT_RLR": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        target_weight_kbytes=70.1, scale_layer="True"),
    "PARAMETRIC_POW2_WQ_XMIN_XMAX_CON_INIT_RLR2": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        target_weight_kbytes=70.1, scale_layer="True"),
    "PARAMETRIC_POW2_WQ_XMIN_XMAX_CON_INIT_RLR3": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        target_weight_kbytes=70.1, scale_layer="True"),
    "PARAMETRIC_POW2_WQ_XMIN_XMAX_CON_INIT_RLR4": dict(
        weightfile="PARAMETRIC_POW2_WQ_XMIN_XMAX_CON_INIT_RRLR/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        target_weight_kbytes=70.1, scale_layer="True"),
    "PARAMETRIC_POW2_WQ_XMIN_XMAX_CON_INIT_RLR5": dict(
        weightfile="PARAMETRIC_POW2_WQ_XMIN_XMAX_CON_INIT_RRLR/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        target_weight_kbytes=70.1, scale_layer="True"),
    "PARAMETRIC_POW2_WQ_XMIN_XMAX_CON_INIT_RLR_FT": dict(
        weightfile="PARAMETRIC_POW2_WQ_XMIN_XMAX_CON_INIT_RRLR/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        target_weight_kbytes=70.1, scale_layer="True"),
    "PARAMETRIC_POW2_WAMQ_XMIN_XMAX_CON_INIT_RLR_FT": dict(
        weightfile="PARAMETRIC_POW2_WAMQ_XMIN_XMAX_CON_INIT_RRLR/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        a_quantize="parametric_pow2_xmin_xmax_relu", a_bitwidth=6, target_weight_kbytes=70.1,
        target_activation_kbytes=8.1, target_activation_type="max", scale_layer="True"),
    "PARAMETRIC_POW2_WASQ_XMIN_XMAX_CON_INIT_RLR_FT": dict(
        weightfile="PARAMETRIC_POW2_WASQ_XMIN_XMAX_CON_INIT_RRLR/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        a_quantize="parametric_pow2_xmin_xmax_relu", a_bitwidth=6, target_weight_kbytes=70.1,
        target_activation_kbytes=92.1, target_activation_type="sum", scale_layer="True"),
    "PARAMETRIC_POW2_WAMQ_XMIN_XMAX_CON_INIT_RLR_FT2": dict(
        weightfile="PARAMETRIC_POW2_WAMQ_XMIN_XMAX_CON_INIT_RRLR/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        a_quantize="parametric_pow2_xmin_xmax_relu", a_bitwidth=6, target_weight_kbytes=70.1,
        target_activation_kbytes=8.1, target_activation_type="max", scale_layer="True"),
    "PARAMETRIC_POW2_WASQ_XMIN_XMAX_CON_INIT_RLR_FT2": dict(
        weightfile="PARAMETRIC_POW2_WASQ_XMIN_XMAX_CON_INIT_RRLR/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        a_quantize="parametric_pow2_xmin_xmax_relu", a_bitwidth=6, target_weight_kbytes=70.1,
        target_activation_kbytes=92.1, target_activation_type="sum", scale_layer="True"),
    "PARAMETRIC_POW2_WAMQ_XMIN_XMAX_CON_INIT_RLR_FT3": dict(
        weightfile="PARAMETRIC_POW2_WAMQ_XMIN_XMAX_CON_INIT_RRLR_FT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        a_quantize="parametric_pow2_xmin_xmax_relu", a_bitwidth=6, target_weight_kbytes=70.1,
        target_activation_kbytes=8.1, target_activation_type="max", scale_layer="True"),
    "PARAMETRIC_POW2_WASQ_XMIN_XMAX_CON_INIT_RLR_FT3": dict(
        weightfile="PARAMETRIC_POW2_WASQ_XMIN_XMAX_CON_INIT_RRLR_FT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        a_quantize="parametric_pow2_xmin_xmax_relu", a_bitwidth=6, target_weight_kbytes=70.1,
        target_activation_kbytes=92.1, target_activation_type="sum", scale_layer="True"),
    "PARAMETRIC_POW2_WAMQ_XMIN_XMAX_CON_INIT_RLR_FT4": dict(
        weightfile="PARAMETRIC_POW2_W2A4Q_B_XMAX_CON_INIT_RRLR/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        a_quantize="parametric_pow2_xmin_xmax_relu", a_bitwidth=4, target_weight_kbytes=70.1,
        target_activation_kbytes=8.1, target_activation_type="max", scale_layer="True"),
    "PARAMETRIC_POW2_WASQ_XMIN_XMAX_CON_INIT_RLR_FT4": dict(
        weightfile="PARAMETRIC_POW2_W2A4Q_B_XMAX_CON_INIT_RRLR/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        a_quantize="parametric_pow2_xmin_xmax_relu", a_bitwidth=4, target_weight_kbytes=70.1,
        target_activation_kbytes=92.1, target_activation_type="sum", scale_layer="True"),
    "PARAMETRIC_POW2_WAMQ_XMIN_XMAX_CON_INIT_RRLR_FT4": dict(
        weightfile="PARAMETRIC_POW2_W2A4Q_B_XMAX_CON_INIT_RRLR/params_best.h5",
        initial_learning_rate=0.003, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        a_quantize="parametric_pow2_xmin_xmax_relu", a_bitwidth=4, target_weight_kbytes=70.1,
        target_activation_kbytes=8.1, target_activation_type="max", scale_layer="True"),
    "PARAMETRIC_POW2_WASQ_XMIN_XMAX_CON_INIT_RRLR_FT4": dict(
        weightfile="PARAMETRIC_POW2_W2A4Q_B_XMAX_CON_INIT_RRLR/params_best.h5",
        initial_learning_rate=0.003, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        a_quantize="parametric_pow2_xmin_xmax_relu", a_bitwidth=4, target_weight_kbytes=70.1,
        target_activation_kbytes=92.1, target_activation_type="sum", scale_layer="True"),
    "PARAMETRIC_POW2_WAMQ_XMIN_XMAX_CON_INIT_RLR": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        a_quantize="parametric_pow2_xmin_xmax_relu", a_bitwidth=6, target_weight_kbytes=70.1,
        target_activation_kbytes=8.1, target_activation_type="max", scale_layer="True"),
    "PARAMETRIC_POW2_WASQ_XMIN_XMAX_CON_INIT_RLR": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        a_quantize="parametric_pow2_xmin_xmax_relu", a_bitwidth=6, target_weight_kbytes=70.1,
        target_activation_kbytes=92.1, target_activation_type="sum", scale_layer="True"),
    "PARAMETRIC_POW2_WQ_XMIN_XMAX_CON_INIT_RRLR": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.003, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        target_weight_kbytes=70.1, scale_layer="True"),
    "PARAMETRIC_POW2_WQ_XMIN_XMAX_CON_INIT_RRLR2": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.003, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        target_weight_kbytes=70.1, scale_layer="True"),
    "PARAMETRIC_POW2_WQ_XMIN_XMAX_CON_INIT_RRLR3": dict(weightfile="params_DEFAULT/params_best.h5",
        initial_learning_rate=0.003, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        target_weight_kbytes=70.1, scale_layer="True"),
    "PARAMETRIC_POW2_WQ_XMIN_XMAX_CON_INIT_RRLR4": dict(
        weightfile="PARAMETRIC_POW2_WQ_XMIN_XMAX_CON_INIT_RRLR/params_best.h5",
        initial_learning_rate=0.003, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        target_weight_kbytes=70.1, scale_layer="True"),
    "PARAMETRIC_POW2_WQ_XMIN_XMAX_CON_INIT_RRLR5": dict(
        weightfile="PARAMETRIC_POW2_WQ_XMIN_XMAX_CON_INIT_RRLR/params_best.h5",
        initial_learning_rate=0.003, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        target_weight_kbytes=70.1, scale_layer="True"),
    "PARAMETRIC_POW2_WQ_XMIN_XMAX_CON_INIT_RRLR_FT": dict(
        weightfile="PARAMETRIC_POW2_WQ_XMIN_XMAX_CON_INIT_RRLR/params_best.h5",
        initial_learning_rate=0.003, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        target_weight_kbytes=70.1, scale_layer="True"),
    "PARAMETRIC_POW2_WAMQ_XMIN_XMAX_CON_INIT_RRLR_FT": dict(
        weightfile="PARAMETRIC_POW2_WAMQ_XMIN_XMAX_CON_INIT_RRLR/params_best.h5",
        initial_learning_rate=0.003, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        a_quantize="parametric_pow2_xmin_xmax_relu", a_bitwidth=6, target_weight_kbytes=70.1,
        target_activation_kbytes=8.1, target_activation_type="max", scale_layer="True"),
    "PARAMETRIC_POW2_WASQ_XMIN_XMAX_CON_INIT_RRLR_FT": dict(
        weightfile="PARAMETRIC_POW2_WASQ_XMIN_XMAX_CON_INIT_RRLR/params_best.h5",
        initial_learning_rate=0.003, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        a_quantize="parametric_pow2_xmin_xmax_relu", a_bitwidth=6, target_weight_kbytes=70.1,
        target_activation_kbytes=92.1, target_activation_type="sum", scale_layer="True"),
    "PARAMETRIC_POW2_WAMQ_XMIN_XMAX_CON_INIT_RRLR_FT2": dict(
        weightfile="PARAMETRIC_POW2_WAMQ_XMIN_XMAX_CON_INIT_RRLR/params_best.h5",
        initial_learning_rate=0.003, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        a_quantize="parametric_pow2_xmin_xmax_relu", a_bitwidth=6, target_weight_kbytes=70.1,
        target_activation_kbytes=8.1, target_activation_type="max", scale_layer="True"),
    "PARAMETRIC_POW2_WASQ_XMIN_XMAX_CON_INIT_RRLR_FT2": dict(
        weightfile="PARAMETRIC_POW2_WASQ_XMIN_XMAX_CON_INIT_RRLR/params_best.h5",
        initial_learning_rate=0.003, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        a_quantize="parametric_pow2_xmin_xmax_relu", a_bitwidth=6, target_weight_kbytes=70.1,
        target_activation_kbytes=92.1, target_activation_type="sum", scale_layer="True"),
    "PARAMETRIC_POW2_WAMQ_XMIN_XMAX_CON_INIT_RRLR_FT3": dict(
        weightfile="PARAMETRIC_POW2_WAMQ_XMIN_XMAX_CON_INIT_RRLR_FT/params_best.h5",
        initial_learning_rate=0.003, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        a_quantize="parametric_pow2_xmin_xmax_relu", a_bitwidth=6, target_weight_kbytes=70.1,
        target_activation_kbytes=8.1, target_activation_type="max", scale_layer="True"),
    "PARAMETRIC_POW2_WASQ_XMIN_XMAX_CON_INIT_RRLR_FT3": dict(
        weightfile="PARAMETRIC_POW2_WASQ_XMIN_XMAX_CON_INIT_RRLR_FT/params_best.h5",
        initial_learning_rate=0.003, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        a_quantize="parametric_pow2_xmin_xmax_relu", a_bitwidth=6, target_weight_kbytes=70.1,
        target_activation_kbytes=92.1, target_activation_type="sum", scale_layer="True"),
    "PARAMETRIC_POW2_WAMQ_XMIN_XMAX_CON_INIT_RRLR": dict(
        weightfile="params_DEFAULT/params_best.h5", initial_learning_rate=0.003,
        w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        a_quantize="parametric_pow2_xmin_xmax_relu", a_bitwidth=6, target_weight_kbytes=70.1,
        target_activation_kbytes=8.1, target_activation_type="max", scale_layer="True"),
    "PARAMETRIC_POW2_WASQ_XMIN_XMAX_CON_INIT_RRLR": dict(
        weightfile="params_DEFAULT/params_best.h5", initial_learning_rate=0.003,
        w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        a_quantize="parametric_pow2_xmin_xmax_relu", a_bitwidth=6, target_weight_kbytes=70.1,
        target_activation_kbytes=92.1, target_activation_type="sum", scale_layer="True"),
    "PARAMETRIC_POW2_WAMQ_XMIN_XMAX_CON_INIT_RRLR2": dict(
        weightfile="PARAMETRIC_POW2_WQ_XMIN_XMAX_CON_INIT_RRLR/params_best.h5",
        initial_learning_rate=0.003, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        a_quantize="parametric_pow2_xmin_xmax_relu", a_bitwidth=6, target_weight_kbytes=70.1,
        target_activation_kbytes=8.1, target_activation_type="max", scale_layer="True"),
    "PARAMETRIC_POW2_WASQ_XMIN_XMAX_CON_INIT_RRLR2": dict(
        weightfile="PARAMETRIC_POW2_WQ_XMIN_XMAX_CON_INIT_RRLR/params_best.h5",
        initial_learning_rate=0.003, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        a_quantize="parametric_pow2_xmin_xmax_relu", a_bitwidth=6, target_weight_kbytes=70.1,
        target_activation_kbytes=92.1, target_activation_type="sum", scale_layer="True"),
    "PARAMETRIC_POW2_WAMQ_XMIN_XMAX_CON_INIT_RLR2": dict(
        weightfile="PARAMETRIC_POW2_WQ_XMIN_XMAX_CON_INIT_RRLR/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        a_quantize="parametric_pow2_xmin_xmax_relu", a_bitwidth=6, target_weight_kbytes=70.1,
        target_activation_kbytes=8.1, target_activation_type="max", scale_layer="True"),
    "PARAMETRIC_POW2_WASQ_XMIN_XMAX_CON_INIT_RLR2": dict(
        weightfile="PARAMETRIC_POW2_WQ_XMIN_XMAX_CON_INIT_RRLR/params_best.h5",
        initial_learning_rate=0.01, w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
        a_quantize="parametric_pow2_xmin_xmax_relu", a_bitwidth=6, target_weight_kbytes=70.1,
        target_activation_kbytes=92.1, target_activation_type="sum", scale_layer="True"),
}

OFFICIAL_FILES = {"train_resnet_quant_fp.cfg": FP_CFG, "train_resnet_quant_pow2.cfg": POW2_CFG}

# ImageNet (Table 4 of the paper; not in the official code). Every key the experiments set:
# the memory targets are Table 4's 4/4-bit sizes in MB x 1024 (kB); every schedule value is
# this repository's choice, not the paper's.
IMAGENET_DEFAULTS = dict(model="resnet18", dataset="imagenet", num_layers=18, shortcut_type="",
                         initial_learning_rate=0.01, epochs=30, lr_milestones=[10, 20],
                         lr_decay=0.1, batch_size=256, weight_decay=0.0001, momentum=0.9)
MOBILENETV2 = dict(model="mobilenetv2", num_layers=None, weight_decay=4e-05)
TABLE4_TARGETS = {"RESNET18": dict(target_weight_kbytes=5703.68,     # 5.57 MB
                                   target_activation_kbytes=389.12),  # 0.38 MB
                  "MOBILENETV2": dict(target_weight_kbytes=1689.6,   # 1.65 MB
                                      target_activation_kbytes=583.68)}  # 0.57 MB


def _imagenet(net):
    base = {} if net == "RESNET18" else MOBILENETV2
    init = dict(init_from=f"{net}_FLOAT")
    w4a4 = dict(w_bitwidth=4, a_bitwidth=4)
    fixed4 = dict(w_bitwidth_min=4, w_bitwidth_max=4, a_bitwidth_min=4, a_bitwidth_max=4)
    u3 = dict(w_quantize="parametric_fp_d_xmax", a_quantize="parametric_fp_d_xmax_relu")
    p3 = dict(w_quantize="parametric_pow2_xmin_xmax", w_bitwidth_min=1,
              a_quantize="parametric_pow2_xmin_xmax_relu", scale_layer=True)
    targets = dict(TABLE4_TARGETS[net], target_activation_type="max")
    schedule = (dict(initial_learning_rate=0.1, epochs=90, lr_milestones=[30, 60])
                if net == "RESNET18" else
                dict(initial_learning_rate=0.05, epochs=150, lr_milestones=[50, 100]))
    return {
        f"{net}_FLOAT": {**base, **schedule},
        f"{net}_FP_W4A4Q_INIT": {**base, **init, "w_quantize": "fp", "a_quantize": "fp_relu",
                                 **w4a4},
        f"{net}_PARAMETRIC_FP_W4A4Q_B_XMAX_CON_INIT": {
            **base, **init, "w_quantize": "parametric_fp_b_xmax",
            "a_quantize": "parametric_fp_b_xmax_relu", **w4a4, **fixed4},
        f"{net}_PARAMETRIC_FP_WAMQ_DELTA_XMAX_CON_INIT": {**base, **init, **u3, **targets},
        f"{net}_PARAMETRIC_POW2_WAMQ_XMIN_XMAX_CON_INIT": {**base, **init, **p3, **targets},
        f"{net}_PARAMETRIC_FP_WAQ_DELTA_XMAX_INIT": {**base, **init, **u3},
    }


IMAGENET = {**_imagenet("RESNET18"), **_imagenet("MOBILENETV2")}


def weightfile_experiment(weightfile):
    """The experiment whose output a weightfile names: params_X/params_best.h5 or
    X/params_best.h5 -> X."""
    folder, name = weightfile.split("/")
    assert name == "params_best.h5", weightfile
    return folder[len("params_"):] if folder.startswith("params_") else folder


def official_resolution(cfg, name):
    """Every field of what train_resnet.py runs for section ``name`` of ``cfg``: the
    Configuration defaults, then [DEFAULT], then the section, then the fixed values; in this
    repository's field names (weightfile -> init_from, num_layers -> model)."""
    values = {**OFFICIAL_CONFIGURATION_DEFAULTS, **cfg["DEFAULT"], **cfg[name]}
    weightfile = values.pop("weightfile")
    values["init_from"] = None if weightfile is None else weightfile_experiment(weightfile)
    if isinstance(values["scale_layer"], str):
        # the official bool(str): only ever "True" in the files, so no surprise
        assert values["scale_layer"] == "True"
        values["scale_layer"] = True
    return {**OFFICIAL_SCRIPT, **values, "model": f"resnet{values['num_layers']}",
            "name": name}


def imagenet_resolution(name):
    values = {**OFFICIAL_CONFIGURATION_DEFAULTS, **IMAGENET_DEFAULTS, **IMAGENET[name]}
    values.pop("weightfile")
    return {"init_from": None, **values, "name": name}


def _differences(got, expected):
    assert set(got) == set(expected), set(got) ^ set(expected)
    return {k: (got[k], expected[k]) for k in expected if got[k] != expected[k]
            or type(got[k]) is not type(expected[k]) and not
            (isinstance(got[k], float) and isinstance(expected[k], int))}


# ----------------------------------------------------------------------------- recipes

def test_the_transcription_is_complete():
    assert FP_CFG["DEFAULT"] == POW2_CFG["DEFAULT"] == dict(
        num_layers=20, shortcut_type="", initial_learning_rate=0.1)
    assert (len(FP_CFG) - 1, len(POW2_CFG) - 1) == (73, 82)   # named sections: 155
    cifar = [n for n in ex.list_experiments() if ex.get_experiment(n).dataset == "cifar10"]
    assert set(cifar) == set(FP_CFG) | set(POW2_CFG)
    imagenet = [n for n in ex.list_experiments() if ex.get_experiment(n).dataset == "imagenet"]
    assert set(imagenet) == set(IMAGENET)
    assert len(ex.list_experiments()) == 152 + 12


@pytest.mark.parametrize("file", OFFICIAL_FILES)
def test_every_official_section_resolves_to_what_train_resnet_runs(file):
    """A name defined in both files (DEFAULT_*) must resolve as in each of them."""
    cfg = OFFICIAL_FILES[file]
    wrong = {}
    for name in cfg:
        diff = _differences(ex.get_experiment(name).as_dict(), official_resolution(cfg, name))
        if diff:
            wrong[name] = diff
    assert not wrong, f"{len(wrong)} experiments differ from {file}: {wrong}"


def _write_ini(cfg, path):
    """The transcription as an official-style INI file (what --cfg reads)."""
    def text(v):
        return "" if v is None else str(v)
    sections = [f"[{name}]\n" + "".join(f"{k} = {text(v)}\n" for k, v in own.items())
                for name, own in cfg.items()]
    path.write_text("\n".join(sections))
    return path


@pytest.mark.parametrize("file", OFFICIAL_FILES)
def test_every_official_section_through_cfg_resolves_the_same(file, tmp_path):
    """train.py --cfg FILE --experiment NAME (the official way) gives the same experiment."""
    cfg = OFFICIAL_FILES[file]
    ini = _write_ini(cfg, tmp_path / file)
    for name in cfg:
        got = experiment_from_cfg(ini, name).as_dict()
        assert not _differences(got, official_resolution(cfg, name)), name


def test_every_imagenet_experiment_resolves_to_its_listed_recipe():
    for net, mb in (("RESNET18", (5.57, 0.38)), ("MOBILENETV2", (1.65, 0.57))):
        targets = TABLE4_TARGETS[net]
        assert targets["target_weight_kbytes"] == pytest.approx(mb[0] * 1024)
        assert targets["target_activation_kbytes"] == pytest.approx(mb[1] * 1024)
    wrong = {name: diff for name in IMAGENET
             if (diff := _differences(ex.get_experiment(name).as_dict(),
                                      imagenet_resolution(name)))}
    assert not wrong


# ----------------------------------------------------------------------------- layering

def _config(tmp_path, **values):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def _experiment(args):
    return load_experiment(args.experiment, args.cfg, parse_overrides(args.set))


def test_layering_defaults_config_experiment_set_and_flags(tmp_path):
    name = "PARAMETRIC_FP_WAMQ_DELTA_XMAX_CON_INIT"
    published = official_resolution(FP_CFG, name)
    # the --experiment entry alone: the published recipe and the built-in option defaults
    args = parse_args(["--experiment", name])
    assert (args.seed, args.train_samples, args.set) == (0, 0, [])
    assert _experiment(args).as_dict() == published
    # a --config file over the built-in defaults, its set: over the experiment entry
    from_file = {"epochs": 5, "lr_milestones": [2], "initial_learning_rate": 0.2}
    config = _config(tmp_path, experiment=name, seed=3, train_samples=100,
                     set=["epochs=5", "lr_milestones=[2]", "initial_learning_rate=0.2"])
    args = parse_args(["--config", config])
    assert (args.experiment, args.seed, args.train_samples) == (name, 3, 100)
    assert _experiment(args).as_dict() == {**published, **from_file}
    # explicit flags and --set over the --config file; what nobody set keeps the recipe
    args = parse_args(["--config", config, "--seed", "4", "--set", "epochs=7"])
    assert (args.seed, args.train_samples) == (4, 100)
    assert _experiment(args).as_dict() == {**published, **from_file, "epochs": 7}
    # an --experiment flag over the file's experiment; the file's set: still applies
    args = parse_args(["--config", config, "--experiment", "DEFAULT"])
    assert _experiment(args).as_dict() == {**official_resolution(FP_CFG, "DEFAULT"),
                                           **from_file}


def test_layering_cfg_section_then_set(tmp_path):
    ini = _write_ini(POW2_CFG, tmp_path / "train_resnet_quant_pow2.cfg")
    name = "PARAMETRIC_POW2_WAMQ_XMIN_XMAX_CON_INIT"
    args = parse_args(["--cfg", str(ini), name, "--set", "target_activation_kbytes=9"])
    assert _experiment(args).as_dict() == {**official_resolution(POW2_CFG, name),
                                           "target_activation_kbytes": 9.0}


def test_smoke_settings_only_without_config_experiment_cfg_or_data(tmp_path):
    # --set and other flags keep the smoke settings and override them
    args = parse_args(["--set", "epochs=3", "--seed", "2"])
    assert (args.train_samples, args.seed, args.dataset) == (SMOKE["train_samples"], 2,
                                                             "mnist5k")
    exp = _experiment(args)
    assert (exp.name, exp.epochs, exp.batch_size) == (SMOKE["experiment"], 3, 64)
    # any of these: the recipe (the smoke file contributes nothing)
    config = _config(tmp_path, seed=1)
    for argv in (["--config", config], ["--experiment", SMOKE["experiment"]],
                 ["--cfg", "x.cfg"], ["--root", str(tmp_path)], ["--dataset", "cifar10"]):
        args = parse_args(argv + ["--set", "epochs=3"])
        assert (args.train_samples, args.val_samples, args.set) == (0, 0, ["epochs=3"]), argv


# ----------------------------------------------------------------------------- a run

def _published(name):
    cfg = FP_CFG if name in FP_CFG else POW2_CFG
    return official_resolution(cfg, name)


def test_a_run_records_the_experiment_it_trained(tmp_path):
    """config.yaml, experiment.yaml and the checkpoint of a tiny run agree with the
    experiment file: the published values except exactly the keys the run's --set changed."""
    name = "PARAMETRIC_POW2_WAQ_XMIN_XMAX"
    file_set = ["batch_size=16", "epochs=1", "lr_milestones=[1]", "initial_learning_rate=0.5"]
    config = _config(tmp_path, experiment=name, dataset="mnist5k", train_samples=32,
                     val_samples=16, loader_threads=0, seed=3, set=file_set)
    out = tmp_path / "run"
    run_script(TRAIN, "--config", config, "--output", out, "--seed", "5",
               "--set", "initial_learning_rate=0.01", quiet=True)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    recorded = yaml.safe_load((out / "experiment.yaml").read_text())
    assert (saved["experiment"], saved["seed"], saved["train_samples"]) == (name, 5, 32)
    assert saved["set"] == file_set + ["initial_learning_rate=0.01"]
    overrides = parse_overrides(saved["set"])
    assert recorded == ex.get_experiment(name, **overrides).as_dict()
    assert recorded["initial_learning_rate"] == 0.01
    published = _published(name)
    kept = {k: v for k, v in published.items() if k not in overrides}
    assert {k: recorded[k] for k in kept} == kept
    assert recorded == {**published, **{k: recorded[k] for k in overrides}}
    ckpt = CheckpointManager(out / "checkpoints", clean=False).load_latest()
    assert ckpt.config["experiment"] == recorded
    assert {k: ckpt.config["args"][k] for k in ("experiment", "set", "seed")} == {
        k: saved[k] for k in ("experiment", "set", "seed")}
