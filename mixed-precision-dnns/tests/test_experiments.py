"""Experiment registry (``mpdnn.experiments``), its YAML files and the cfg -> YAML generator.

Spot values were checked by hand against the official ``train_resnet_quant_fp.cfg`` /
``train_resnet_quant_pow2.cfg``. When those files are available (``$MPDNN_OFFICIAL_CFG_DIR``
holding them under their official names, or ``/tmp/mp_fp.cfg`` and ``/tmp/mp_pow2.cfg``),
the committed YAML is also regenerated and compared byte for byte; the generator itself is
always tested on small INI files written here.
"""
import configparser
import functools
import importlib.util
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from common.errors import UserError
from mpdnn import experiments as ex

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "cfg_to_yaml.py"
UNIFORM, POW2, IMAGENET = (ex.CONFIG_DIR / f for f in ex.EXPERIMENT_FILES)
# Named sections (without [DEFAULT]) counted in the official files.
OFFICIAL_SECTIONS = {"train_resnet_quant_fp.cfg": 73, "train_resnet_quant_pow2.cfg": 82}


def _tool():
    spec = importlib.util.spec_from_file_location("cfg_to_yaml", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@functools.cache
def _raw(path):
    """Parsed YAML of a file (cached; do not modify)."""
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def _official_cfgs():
    env = os.environ.get("MPDNN_OFFICIAL_CFG_DIR")
    if env:
        pair = [Path(env) / n for n in OFFICIAL_SECTIONS]
    else:
        pair = [Path("/tmp/mp_fp.cfg"), Path("/tmp/mp_pow2.cfg")]
    return pair if all(p.is_file() for p in pair) else None


# ------------------------------------------------------------------ registry


def test_every_experiment_loads_in_file_order():
    names = []
    for path in (UNIFORM, POW2, IMAGENET):
        loaded = ex.load_experiment_file(path)
        assert list(loaded) == list(_raw(path)["experiments"])
        # PyYAML keeps the last of duplicate keys: count the names in the text instead.
        body = path.read_text().split("\nexperiments:\n", 1)[1]
        text_names = re.findall(r"^  ([A-Za-z0-9_]+):", body, flags=re.M)
        assert text_names == list(loaded), f"duplicate experiment name in {path.name}"
        names += list(loaded)
    assert ex.list_experiments() == names
    for name in names:
        exp = ex.get_experiment(name)
        assert exp.name == name
        assert exp.init_from is None or exp.init_from in names
        d = exp.as_dict()
        assert all(v is None or type(v) in (bool, int, float, str, list) for v in d.values())
        assert ex.get_experiment(name, **{k: v for k, v in d.items() if k != "name"}) == exp


def test_cifar_counts_match_the_official_files():
    total = 0
    for path, cfg in zip((UNIFORM, POW2), OFFICIAL_SECTIONS):
        raw = _raw(path)
        src = raw["source"]
        assert src["file"] == cfg
        assert src["named_sections"] == OFFICIAL_SECTIONS[cfg]
        # every named section is either defined in this file or identical in an earlier one
        implicit = 1 if src["baseline"] else 0
        assert len(raw["experiments"]) - implicit + len(src["defined_in_other_file"]) \
            == src["named_sections"]
        total += src["named_sections"]
        for name in src["defined_in_other_file"]:
            assert name in _raw(UNIFORM)["experiments"]
    assert total == 155
    assert _raw(UNIFORM)["source"]["baseline"] == "DEFAULT"
    assert _raw(POW2)["source"]["baseline"] is None
    assert _raw(POW2)["source"]["defined_in_other_file"] == [
        "DEFAULT_", "DEFAULT_INIT", "DEFAULT_RLR", "DEFAULT_INIT_RLR"]
    assert len(_raw(UNIFORM)["experiments"]) == 74
    assert len(_raw(POW2)["experiments"]) == 78


def test_spot_values_checked_against_the_cfg_files():
    g = ex.get_experiment
    e = g("PARAMETRIC_FP_WAMQ_DELTA_XMAX_CON_INIT")
    assert (e.target_weight_kbytes, e.target_activation_kbytes) == (70.1, 8.1)
    assert e.target_activation_type == "max" and e.init_from == "DEFAULT"
    assert (e.initial_learning_rate, e.w_quantize, e.a_quantize) == (
        0.03, "parametric_fp_d_xmax", "parametric_fp_d_xmax_relu")
    assert (e.a_bitwidth, e.initial_cost_lambda3, e.scale_layer) == (4, 0.1, False)
    e = g("PARAMETRIC_FP_WASQ_DELTA_XMAX_CON_INIT_RLR2")
    assert (e.target_activation_kbytes, e.target_activation_type, e.a_bitwidth,
            e.initial_cost_lambda3, e.initial_learning_rate) == (92.1, "sum", 6, 1.0, 0.01)
    e = g("PARAMETRIC_FP_WQ_DELTA_XMAX_INIT_ADAM")   # section header with a trailing comment
    assert (e.optimizer, e.initial_learning_rate, e.init_from) == ("adam", 0.001, "DEFAULT")
    e = g("PARAMETRIC_FP_W2A4Q_B_XMAX_CON_INIT_RRLR")
    assert (e.w_bitwidth, e.w_bitwidth_min, e.w_bitwidth_max) == (2, 2, 2)
    assert (e.a_bitwidth, e.a_bitwidth_min, e.a_bitwidth_max, e.initial_learning_rate) == (
        4, 4, 4, 0.003)
    e = g("PARAMETRIC_POW2_WQ_B_XMIN")
    assert (e.initial_learning_rate, e.init_from, e.w_quantize) == (
        0.003, None, "parametric_pow2_b_xmin")
    e = g("PARAMETRIC_POW2_WASQ_XMIN_XMAX_CON_INIT_RLR_FT3")
    assert e.init_from == "PARAMETRIC_POW2_WASQ_XMIN_XMAX_CON_INIT_RRLR_FT"
    assert (e.w_bitwidth_min, e.a_bitwidth, e.target_activation_kbytes, e.scale_layer) == (
        1, 6, 92.1, True)
    assert g("PARAMETRIC_POW2_WAMQ_XMIN_XMAX_CON_INIT_RLR_FT4").init_from \
        == "PARAMETRIC_POW2_W2A4Q_B_XMAX_CON_INIT_RRLR"
    # The official file points this experiment at its own output; kept as written.
    assert g("POW2_W2A4Q_INIT").init_from == "POW2_W2A4Q_INIT"
    e = g("DEFAULT")
    assert (e.initial_learning_rate, e.num_layers, e.shortcut_type, e.w_quantize,
            e.a_quantize, e.init_from) == (0.1, 20, "", None, None, None)
    assert (e.model, e.dataset, e.epochs, e.lr_milestones, e.lr_decay, e.batch_size,
            e.weight_decay, e.momentum) == ("resnet20", "cifar10", 160, (80, 120), 0.1, 128,
                                            2e-4, 0.9)
    assert (e.w_stepsize, e.w_xmin_min, e.a_xmin_min, e.a_xmax_max) == (2**-3, 2**-16, 2**-14, 255)
    assert g("DEFAULT_INIT").as_dict() == {**g("DEFAULT").as_dict(), "name": "DEFAULT_INIT",
                                           "initial_learning_rate": 0.03, "init_from": "DEFAULT"}


def test_imagenet_table4_experiments():
    names = list(ex.load_experiment_file(IMAGENET))
    for net, model, w_kb, a_kb in (("RESNET18", "resnet18", 5.57 * 1024, 0.38 * 1024),
                                   ("MOBILENETV2", "mobilenetv2", 1.65 * 1024, 0.57 * 1024)):
        base = ex.get_experiment(f"{net}_FLOAT")
        assert (base.model, base.dataset, base.w_quantize, base.init_from) == (
            model, "imagenet", None, None)
        assert base.num_layers == (18 if model == "resnet18" else None)
        fixed = ex.get_experiment(f"{net}_FP_W4A4Q_INIT")
        assert (fixed.w_quantize, fixed.w_bitwidth, fixed.a_quantize, fixed.a_bitwidth) == (
            "fp", 4, "fp_relu", 4)
        for par in ("U3", "P3"):
            kind = "FP_WAMQ_DELTA_XMAX" if par == "U3" else "POW2_WAMQ_XMIN_XMAX"
            e = ex.get_experiment(f"{net}_PARAMETRIC_{kind}_CON_INIT")
            assert e.paper_parametrization == {"weights": par, "activations": par}
            assert e.target_weight_kbytes == pytest.approx(w_kb)
            assert e.target_activation_kbytes == pytest.approx(a_kb)
            assert e.target_activation_type == "max" and e.init_from == f"{net}_FLOAT"
        assert sum(n.startswith(net) for n in names) == 6


def test_paper_parametrization():
    labels = {"parametric_fp_d_b": "U1", "parametric_fp_b_xmax": "U2",
              "parametric_fp_d_xmax": "U3", "parametric_pow2_b_xmax": "P1",
              "parametric_pow2_b_xmin": "P2", "parametric_pow2_xmin_xmax": "P3"}
    for q, label in labels.items():
        e = ex.get_experiment("DEFAULT", w_quantize=q, a_quantize=q + "_relu")
        assert e.paper_parametrization == {"weights": label, "activations": label}
    e = ex.get_experiment("FP_W2A4Q_INIT")
    assert e.paper_parametrization == {"weights": None, "activations": None}
    assert ex.get_experiment("PARAMETRIC_FP_WQ_DELTA_B").paper_parametrization == {
        "weights": "U1", "activations": None}


def test_overrides_apply_and_leave_the_registry_alone():
    name = "PARAMETRIC_FP_WAMQ_DELTA_XMAX_CON_INIT"
    e = ex.get_experiment(name, epochs=2, lr_milestones=[1], w_bitwidth="3",
                          scale_layer="False", init_from=None, weight_decay="2e-4")
    assert (e.epochs, e.lr_milestones, e.w_bitwidth, e.scale_layer, e.init_from) == (
        2, (1,), 3, False, None)
    assert e.weight_decay == 2e-4 and e.name == name
    assert ex.get_experiment(name).epochs == 160
    assert ex.get_experiment(name).init_from == "DEFAULT"
    assert ex.get_experiment("DEFAULT", scale_layer="True").scale_layer is True


@pytest.mark.parametrize("call, words", [
    (lambda: ex.get_experiment("PARAMETRIC_FP_WAMQ_DELTA_XMAX_CON_INT"),
     ["unknown experiment", "did you mean 'PARAMETRIC_FP_WAMQ_DELTA_XMAX_CON_INIT'"]),
    (lambda: ex.get_experiment("DEFAULT", w_quantise="fp"), ["unknown key 'w_quantise'"]),
    (lambda: ex.get_experiment("DEFAULT", name="X"), ["unknown key 'name'"]),
    (lambda: ex.get_experiment("DEFAULT", weightfile="a/params_best.h5"), ["init_from"]),
    (lambda: ex.get_experiment("DEFAULT", w_quantize="parametric_fp_d_xmx"),
     ["w_quantize", "did you mean 'parametric_fp_d_xmax'"]),
    (lambda: ex.get_experiment("DEFAULT", w_quantize="fp_relu"), ["w_quantize"]),
    (lambda: ex.get_experiment("DEFAULT", a_quantize="parametric_fp_d_xmax"), ["a_quantize"]),
    (lambda: ex.get_experiment("DEFAULT", optimizer="sgdd"), ["optimizer"]),
    (lambda: ex.get_experiment("DEFAULT", scale_layer="maybe"), ["scale_layer"]),
    (lambda: ex.get_experiment("DEFAULT", w_bitwidth=2.5), ["w_bitwidth", "integer"]),
    (lambda: ex.get_experiment("DEFAULT", epochs="many"), ["epochs"]),
    (lambda: ex.get_experiment("DEFAULT", w_bitwidth=9), ["w_bitwidth"]),
    (lambda: ex.get_experiment("DEFAULT", lr_milestones=[120, 80]), ["lr_milestones"]),
    (lambda: ex.get_experiment("DEFAULT", lr_milestones=[80, 161]), ["lr_milestones"]),
    (lambda: ex.get_experiment("DEFAULT", target_activation_type="mean"),
     ["target_activation_type"]),
    (lambda: ex.get_experiment("DEFAULT", target_weight_kbytes=70.1), ["needs w_quantize"]),
    (lambda: ex.get_experiment("DEFAULT", target_weight_kbytes=0, w_quantize="fp"),
     ["target_weight_kbytes"]),
    (lambda: ex.get_experiment("DEFAULT", init_from="DEFALT"), ["init_from", "DEFAULT"]),
    (lambda: ex.get_experiment("DEFAULT", model="resnet18"), ["imagenet"]),
    (lambda: ex.get_experiment("DEFAULT", num_layers=56), ["num_layers"]),
    (lambda: ex.get_experiment("DEFAULT", momentum=1.0), ["momentum"]),
])
def test_bad_names_keys_and_values_are_one_line_user_errors(call, words):
    with pytest.raises(UserError) as info:
        call()
    msg = str(info.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


def _write(path, data):
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


DEFAULTS = {"model": "resnet20", "dataset": "cifar10", "num_layers": 20,
            "initial_learning_rate": 0.1, "epochs": 10, "lr_milestones": [5],
            "lr_decay": 0.1, "batch_size": 8, "weight_decay": 0.0, "momentum": 0.9}


@pytest.mark.parametrize("data, words", [
    ({"defaults": DEFAULTS, "experiments": {"A": {"w_quantise": "fp"}}},
     ["experiment A", "unknown key 'w_quantise'", "did you mean 'w_quantize'"]),
    ({"defaults": {**DEFAULTS, "lr": 0.1}, "experiments": {"A": {}}}, ["defaults", "'lr'"]),
    ({"defaults": DEFAULTS, "experiments": {"A": {"weightfile": "x/params_best.h5"}}},
     ["experiment A", "init_from"]),
    ({"defaults": DEFAULTS, "experiments": {"A": {"a_quantize": "pow2"}}},
     ["experiment A", "a_quantize"]),
    ({"defaults": DEFAULTS, "experiments": {"A": {"scale_layer": "yes please"}}},
     ["experiment A", "scale_layer"]),
    ({"defaults": {k: v for k, v in DEFAULTS.items() if k != "epochs"},
      "experiments": {"A": {}}}, ["experiment A", "missing epochs"]),
    ({"defaults": DEFAULTS, "experiments": {"A": {}}, "default": {}}, ["top-level", "default"]),
    ({"defaults": DEFAULTS, "experiments": {"A": [1]}}, ["experiment A", "mapping"]),
    ({"defaults": DEFAULTS}, ["experiments"]),
])
def test_bad_yaml_files_name_the_file_and_experiment(tmp_path, data, words):
    path = _write(tmp_path / "bad.yaml", data)
    with pytest.raises(UserError) as info:
        ex.load_experiment_file(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    for w in words:
        assert w in msg


def test_cross_file_checks(tmp_path):
    a = _write(tmp_path / "a.yaml", {"defaults": DEFAULTS, "experiments": {"A": None}})
    b = _write(tmp_path / "b.yaml", {"defaults": DEFAULTS,
                                     "experiments": {"B": {"init_from": "A"}}})
    assert ex.load_experiments([a, b])["B"].init_from == "A"
    with pytest.raises(UserError, match=r"b.yaml, experiment B: init_from: unknown experiment 'A'"):
        ex.load_experiments([b])
    dup = _write(tmp_path / "dup.yaml", {"defaults": DEFAULTS, "experiments": {"A": {}}})
    with pytest.raises(UserError, match=r"dup.yaml: experiment A is already defined in .*a.yaml"):
        ex.load_experiments([a, dup])


# ------------------------------------------------------------------ generator

INI_A = """\
[DEFAULT]
num_layers = 20
shortcut_type =
initial_learning_rate = 0.1

# a comment that must not reach the YAML
[SAME]
initial_learning_rate = 0.03

[SAME_INIT] #trailing note
weightfile = params_DEFAULT/params_best.h5
initial_learning_rate = 0.03

[CLASH]
initial_learning_rate = 0.01

[CHAIN]
weightfile = CLASH/params_best.h5

[SELF]
weightfile = SELF/params_best.h5
w_quantize = fp
w_bitwidth = 2
scale_layer = False
"""

INI_B = """\
[DEFAULT]
num_layers = 20
shortcut_type =
initial_learning_rate = 0.1

[ONLY_B]
weightfile = params_SAME_INIT/params_best.h5
w_quantize = parametric_pow2_xmin_xmax
w_bitwidth_min = 1
target_weight_kbytes = 70.1
scale_layer = True

[SAME_INIT]
weightfile = params_DEFAULT/params_best.h5
initial_learning_rate = 0.03

[CLASH]
initial_learning_rate = 0.02

[CHAIN]
weightfile = CLASH/params_best.h5

[SAME]
initial_learning_rate = 0.03
"""


def test_generator_on_small_ini_files(tmp_path, capsys):
    tool = _tool()
    (tmp_path / "a.cfg").write_text(INI_A)
    (tmp_path / "b.cfg").write_text(INI_B)
    out_a, out_b = tmp_path / "out" / "x_uniform.yaml", tmp_path / "out" / "x_pow2.yaml"
    assert tool.main([str(tmp_path / "a.cfg"), str(tmp_path / "b.cfg"),
                      "--out", str(out_a), "--out", str(out_b)]) == 0
    printed = capsys.readouterr().out
    assert "renamed CLASH -> CLASH_POW2" in printed and "renamed CHAIN -> CHAIN_POW2" in printed

    a, b = (yaml.safe_load(p.read_text()) for p in (out_a, out_b))
    assert "comment" not in out_a.read_text() and "trailing" not in out_a.read_text()
    assert a["source"] == {"file": "a.cfg", "named_sections": 5, "baseline": "DEFAULT",
                           "defined_in_other_file": []}
    assert b["source"] == {"file": "b.cfg", "named_sections": 5, "baseline": None,
                           "defined_in_other_file": ["SAME_INIT", "SAME"]}
    assert a["defaults"] == {**tool.CIFAR10_SCHEDULE, "num_layers": 20, "shortcut_type": "",
                             "initial_learning_rate": 0.1}
    assert list(a["experiments"]) == ["DEFAULT", "SAME", "SAME_INIT", "CLASH", "CHAIN", "SELF"]
    assert a["experiments"]["SAME_INIT"] == {"init_from": "DEFAULT", "initial_learning_rate": 0.03}
    assert a["experiments"]["SELF"] == {"init_from": "SELF", "w_quantize": "fp", "w_bitwidth": 2,
                                        "scale_layer": False}   # not bool("False")
    assert list(b["experiments"]) == ["ONLY_B", "CLASH_POW2", "CHAIN_POW2"]
    assert b["experiments"]["ONLY_B"] == {
        "init_from": "SAME_INIT", "w_quantize": "parametric_pow2_xmin_xmax",
        "w_bitwidth_min": 1, "target_weight_kbytes": 70.1, "scale_layer": True}
    assert b["experiments"]["CLASH_POW2"] == {"initial_learning_rate": 0.02}
    assert b["experiments"]["CHAIN_POW2"] == {"init_from": "CLASH_POW2"}

    reg = ex.load_experiments([out_a, out_b])
    assert reg["CHAIN"].init_from == "CLASH" and reg["CHAIN_POW2"].init_from == "CLASH_POW2"
    assert reg["CLASH"].initial_learning_rate == 0.01
    assert reg["ONLY_B"].paper_parametrization == {"weights": "P3", "activations": None}
    assert reg["SELF"].scale_layer is False


D = "[DEFAULT]\nnum_layers = 20\ninitial_learning_rate = 0.1\n"


@pytest.mark.parametrize("ini, words", [
    (D + "[A]\nlearning_rate = 0.1\n", ["x.cfg [A]", "learning_rate"]),
    (D + "[A]\nweightfile = nowhere/params_best.h5\n", ["x.cfg [A]", "nowhere"]),
    (D + "[A]\nweightfile = params_DEFAULT/last.h5\n", ["x.cfg [A]", "last.h5"]),
    (D.replace("= 20", "= twenty"), ["x.cfg [DEFAULT]", "num_layers"]),
    (D + "[A]\nw_quantize = fancy\n", ["x.cfg", "experiment A", "w_quantize"]),
    (D + "[A]\n[A]\n", ["x.cfg", "already exists"]),
    ("[A]\ninitial_learning_rate = 0.1\n", ["x.cfg", "no [DEFAULT]"]),
])
def test_generator_rejects_what_it_cannot_represent(tmp_path, ini, words):
    tool = _tool()
    cfg = tmp_path / "x.cfg"
    cfg.write_text(ini)
    out = tmp_path / "x.yaml"
    with pytest.raises(UserError) as info:
        tool.generate([cfg], [out])
    for w in words:
        assert w in str(info.value)
    assert not out.exists()


def test_committed_yaml_matches_the_official_cfg_files(tmp_path):
    cfgs = _official_cfgs()
    if cfgs is None:
        pytest.skip("official cfg files not found: set MPDNN_OFFICIAL_CFG_DIR to the folder "
                    "holding train_resnet_quant_fp.cfg and train_resnet_quant_pow2.cfg")
    tool = _tool()
    named = []
    for src, name in zip(cfgs, OFFICIAL_SECTIONS):
        named.append(tmp_path / name)
        shutil.copyfile(src, named[-1])
    outs = [tmp_path / UNIFORM.name, tmp_path / POW2.name]
    tool.generate(named, outs)
    for out, committed in zip(outs, (UNIFORM, POW2)):
        assert out.read_text() == committed.read_text(), f"{committed.name} is stale"

    # Independent reading: the official script's own ConfigParser (with [DEFAULT]
    # inheritance) gives the same value for every key of every section.
    for cfg in named:
        cp = configparser.ConfigParser()
        cp.read(cfg)
        assert len(cp.sections()) == OFFICIAL_SECTIONS[cfg.name]
        for section in ["DEFAULT"] + cp.sections():
            exp = ex.get_experiment(section)
            for key, raw in cp[section].items():
                got = getattr(exp, "init_from" if key == "weightfile" else key)
                if key == "weightfile":
                    folder = raw.split("/")[0]
                    assert got == (folder[len("params_"):] if folder.startswith("params_")
                                   else folder)
                elif isinstance(got, bool):
                    assert got == (raw == "True")
                elif isinstance(got, (int, float)):
                    assert got == float(raw), (section, key)
                else:
                    assert got == raw, (section, key)
