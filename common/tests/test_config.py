"""The one command-line parser (common.cli.Parser): YAML precedence, strictness, one-line
errors, bounded numbers, no abbreviations, aliases; config save/load round trips."""
import argparse
import os
from pathlib import Path

import pytest
import yaml

from common.cli import Bounded, FiniteFloat, NonNegativeInt, Parser, PositiveFloat, PositiveInt
from common.config import load_config, save_config
from common.errors import UserError
from common.fileio import atomic_write


def make_parser(default_config=None):
    p = Parser(prog="train", default_config=default_config)
    p.add_argument("--learning-rate", type=PositiveFloat, default=0.1)
    p.add_argument("--epochs", type=PositiveInt, default=10)
    p.add_argument("--out", type=Path, default=Path("out"))
    p.add_argument("--model", choices=["small", "large"], default="small")
    p.add_argument("--amp", action="store_true")
    p.add_argument("--no-shuffle", dest="shuffle", action="store_false")
    p.add_argument("--targets", nargs="+", default=["vocals"])
    p.add_argument("--crop", nargs=2, type=NonNegativeInt, default=[1, 2])
    p.add_argument("--name", default="run")
    return p


def write(path, text):
    path.write_text(text)
    return path


def error_of(capsys, fn):
    with pytest.raises(UserError) as exc:
        fn()
    message = str(exc.value)
    assert "\n" not in message and message.endswith("--help)")
    return message


def test_yaml_sets_defaults_and_cli_overrides(tmp_path):
    cfg = write(tmp_path / "c.yaml", "learning-rate: 1e-3\nepochs: 5\nout: runs/a\n"
                "model: large\namp: true\nshuffle: false\ntargets: [bass, drums]\n"
                "crop: [3, 4]\nname: 7\n")
    args = make_parser().parse_args(["--config", str(cfg), "--epochs", "8"])
    # "1e-3" is a string to PyYAML; it goes through the argument's float type.
    assert args.learning_rate == pytest.approx(1e-3) and isinstance(args.learning_rate, float)
    assert args.epochs == 8  # CLI wins
    assert args.out == Path("runs/a")
    assert args.model == "large" and args.amp is True and args.shuffle is False
    assert args.targets == ["bass", "drums"] and args.crop == [3, 4]
    assert args.name == "7"
    assert args.config == str(cfg)


def test_default_config_then_cli_config_then_flags(tmp_path):
    base = write(tmp_path / "base.yaml", "epochs: 3\nname: base\nmodel: large\n")
    over = write(tmp_path / "over.yaml", "name: over\n")
    p = make_parser(default_config=base)
    args = p.parse_args(["--config", str(over), "--model", "small"])
    assert (args.epochs, args.name, args.model) == (3, "over", "small")
    # Parsing again without the file must not keep the previous file's values.
    args = p.parse_args([])
    assert (args.epochs, args.name) == (3, "base")
    assert make_parser().parse_args([]).epochs == 10


def test_config_equals_form_and_required_option(tmp_path):
    cfg = write(tmp_path / "c.yaml", "data: /d\n")
    p = Parser(prog="x")
    p.add_argument("--data", required=True)
    assert p.parse_args([f"--config={cfg}"]).data == "/d"
    assert p.parse_args([f"--config={cfg}", "--data", "/e"]).data == "/e"


def test_unknown_key_names_key_file_and_suggestion(tmp_path, capsys):
    cfg = write(tmp_path / "c.yaml", "learning_rte: 0.1\n")
    line = error_of(capsys, lambda: make_parser().parse_args(["--config", str(cfg)]))
    assert "learning_rte" in line and str(cfg) in line and "learning_rate" in line


def test_unknown_cli_flag_is_error(capsys):
    line = error_of(capsys, lambda: make_parser().parse_args(["--epoch", "3", "--bogus"]))
    assert "--bogus" in line


@pytest.mark.parametrize("text, fragment", [
    ("epochs: many\n", "epochs"),
    ("epochs: 2.5\n", "integer"),
    ("amp: yes please\n", "true or false"),
    ("model: huge\n", "huge"),
    ("crop: [1, 2, 3]\n", "2 values"),
    ("learning-rate: [1, 2]\n", "single value"),
])
def test_bad_values_are_one_line_errors(tmp_path, capsys, text, fragment):
    cfg = write(tmp_path / "c.yaml", text)
    line = error_of(capsys, lambda: make_parser().parse_args(["--config", str(cfg)]))
    assert fragment in line and str(cfg) in line


@pytest.mark.parametrize("text, fragment", [
    ("- a\n- b\n", "mapping"),
    ("key: [unclosed\n", "line"),
])
def test_malformed_files(tmp_path, capsys, text, fragment):
    cfg = write(tmp_path / "c.yaml", text)
    line = error_of(capsys, lambda: make_parser().parse_args(["--config", str(cfg)]))
    assert fragment in line and str(cfg) in line


def test_missing_file(tmp_path, capsys):
    missing = str(tmp_path / "no.yaml")
    line = error_of(capsys, lambda: make_parser().parse_args(["--config", missing]))
    assert "does not exist" in line
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "no.yaml")


def test_empty_file_means_no_overrides(tmp_path):
    cfg = write(tmp_path / "c.yaml", "")
    assert make_parser().parse_args(["--config", str(cfg)]).epochs == 10


def test_positional_cannot_come_from_yaml(tmp_path, capsys):
    p = Parser(prog="x")
    p.add_argument("input")
    cfg = write(tmp_path / "c.yaml", "input: a.wav\n")
    assert "positional" in error_of(capsys, lambda: p.parse_args(["--config", str(cfg), "b"]))


def test_save_config_round_trips_through_parser(tmp_path):
    p = make_parser()
    args = p.parse_args(["--learning-rate", "0.02", "--out", "x/y", "--amp", "--crop", "5", "6"])
    path = save_config(args, tmp_path / "run")
    assert path == tmp_path / "run" / "config.yaml"
    data = load_config(path)
    assert "config" not in data and data["out"] == "x/y" and data["crop"] == [5, 6]
    assert yaml.safe_load(path.read_text()) == data
    again = make_parser().parse_args(["--config", str(path)])
    assert vars(again) == {**vars(args), "config": str(path)}
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)  # not mkstemp's private mode


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target, "w") as f:
            f.write("new but incomplete")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["f.txt"]
    with atomic_write(target, "w") as f:
        f.write("new")
    assert target.read_text() == "new"


def test_boolean_optional_and_count_actions(tmp_path):
    p = Parser(prog="x")
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("-r", "--repeat", action="count", default=0)
    cfg = write(tmp_path / "c.yaml", "ema: false\nrepeat: 2\n")
    args = p.parse_args(["--config", str(cfg)])
    assert args.ema is False and args.repeat == 2
    args = p.parse_args(["--config", str(cfg), "--ema", "-r"])
    assert args.ema is True and args.repeat == 3


@pytest.mark.parametrize("flag, value, fragment", [
    ("--epochs", "0", "integer >= 1"),
    ("--epochs", "2.5", "integer >= 1"),
    ("--learning-rate", "nan", "number > 0"),
    ("--learning-rate", "inf", "number > 0"),
    ("--learning-rate", "0", "number > 0"),
    ("--crop", "-1", "integer >= 0"),
])
def test_numbers_out_of_range_are_one_line_errors(capsys, flag, value, fragment):
    argv = [flag, value] + (["2"] if flag == "--crop" else [])
    line = error_of(capsys, lambda: make_parser().parse_args(argv))
    assert flag in line and fragment in line and repr(value) in line


def test_numbers_out_of_range_in_yaml(tmp_path, capsys):
    cfg = write(tmp_path / "c.yaml", "epochs: 0\n")
    line = error_of(capsys, lambda: make_parser().parse_args(["--config", str(cfg)]))
    assert "epochs" in line and "integer >= 1" in line


def test_bounded_types():
    assert Bounded(float, 0, 1)("1") == 1.0
    assert FiniteFloat("-3.5") == -3.5
    with pytest.raises(argparse.ArgumentTypeError):
        Bounded(float, 0, 1)("1.5")
    with pytest.raises(argparse.ArgumentTypeError):
        Bounded(float, 0, 1, low_open=True)("0")


def test_bare_numeric_types_are_refused_when_parsing():
    p = Parser(prog="x")
    p.add_argument("--n", type=int, default=1)
    with pytest.raises(TypeError, match="bounded type"):
        p.parse_args([])


def test_prefixes_are_not_abbreviations(capsys):
    p = Parser(prog="x")
    p.add_argument("--source-augmentations", nargs="*", default=[])
    line = error_of(capsys, lambda: p.parse_args(["--source", "vocals"]))
    assert "--source" in line


def test_hidden_alias_sets_the_same_option(capsys):
    p = Parser(prog="x")
    p.add_argument("--out-dir", default="out")
    p.add_alias("--outdir", "out_dir")
    assert p.parse_args(["--outdir", "a"]).out_dir == "a"
    assert "--outdir" not in p.format_help()
    with pytest.raises(ValueError):
        p.add_alias("--out-dir", "out_dir")


def test_unknown_flag_is_reported_before_a_missing_required_one():
    p = Parser(prog="x")
    p.add_argument("--output", required=True)
    with pytest.raises(UserError, match="unrecognized arguments: --bogus"):
        p.parse_args(["--bogus"])
    with pytest.raises(UserError, match="required: --output"):
        p.parse_args([])


def test_smoke_config_only_without_root_or_config(tmp_path):
    smoke = write(tmp_path / "smoke.yaml", "epochs: 2\n")
    recipe = write(tmp_path / "recipe.yaml", "epochs: 160\n")
    p = Parser(prog="x", smoke_config=str(smoke), smoke_unless=("root",))
    p.add_argument("--root", "--data-dir", default=None)
    p.add_argument("--epochs", type=PositiveInt, default=100)
    assert p.parse_args([]).epochs == 2 and p.smoke_used
    assert p.parse_args(["--root", "d"]).epochs == 100 and not p.smoke_used
    assert p.parse_args(["--data-dir=d"]).epochs == 100
    assert p.parse_args(["--config", str(recipe)]).epochs == 160 and not p.smoke_used
    assert p.parse_args(["--epochs", "5"]).epochs == 5 and p.smoke_used
