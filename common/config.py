"""YAML files as defaults for an argparse command line.

Precedence, lowest to highest: the parser's own defaults, ``default_config``
given at construction, the file passed with ``--config``, flags on the command
line. YAML keys are flat and name argument dests (``learning-rate`` and
``learning_rate`` both work). Unknown keys are errors, never silently ignored,
so a typo in a config cannot quietly train with the wrong value.

Saved configs are written atomically (:func:`common.fileio.atomic_write`).
"""
import argparse
import difflib
import os
import sys
from pathlib import Path

import yaml

from common.errors import UserError
from common.fileio import atomic_write

# Flags take YAML booleans; const/count actions take the YAML value as-is.
_FLAG_ACTIONS = (argparse._StoreTrueAction, argparse._StoreFalseAction,
                 argparse.BooleanOptionalAction)
_RAW_ACTIONS = (argparse._StoreConstAction, argparse._AppendConstAction, argparse._CountAction)
_UNSETTABLE = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)


def load_config(path):
    """Read a flat YAML mapping; one-line UserError if missing, unreadable or not a mapping."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise UserError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise UserError(f"config file {path}: {problem}{at}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of option: value, "
                        f"not a {type(data).__name__}")
    return data


def _plain(value):
    """Make a parsed-args value YAML-safe (paths and tuples become str and list)."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return value.item()
    return value


def save_config(args, out_dir, name="config.yaml"):
    """Write the resolved options (Namespace or dict) to ``out_dir/name``
    atomically and return the path. ``config`` itself is left out: the file
    already holds every resolved value and can be passed back with --config."""
    values = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    values = {k: _plain(v) for k, v in values.items() if k != "config"}
    text = yaml.safe_dump(values, sort_keys=True, default_flow_style=False)
    path = Path(out_dir) / name
    with atomic_write(path, "w") as f:
        f.write(text)
    return path


def check_resume_options(saved, current, free=(), hint="use a new --output"):
    """Raise a one-line UserError when a resumed run's options (Namespace or dict) differ
    from the ``saved`` ones, except the keys in ``free`` (e.g. the device, the output
    folder, intervals); ``hint`` ends the message."""
    if isinstance(current, argparse.Namespace):
        current = vars(current)
    current = {k: _plain(v) for k, v in current.items()}
    diffs = [k for k in sorted(set(saved) | set(current))
             if k not in free and saved.get(k) != current.get(k)]
    if diffs:
        shown = ", ".join(f"--{k.replace('_', '-')} ({saved.get(k)!r} -> {current.get(k)!r})"
                          for k in diffs[:4])
        raise UserError(f"cannot --resume with different options: {shown}; {hint}")


class ConfigParser(argparse.ArgumentParser):
    """ArgumentParser whose defaults can come from YAML (``--config PATH``).

    Example::

        p = ConfigParser(description="train", default_config="conf/base.yaml")
        p.add_argument("--lr", type=float, default=1e-3)
        args = p.parse_args()       # base.yaml < --config file < CLI flags
    """

    def __init__(self, *args, default_config=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.default_config = default_config
        self.add_argument("--config", metavar="PATH", default=None,
                          help="YAML file of option: value pairs used as defaults; "
                               "command-line flags override it")

    def parse_args(self, args=None, namespace=None):
        argv = list(sys.argv[1:] if args is None else args)
        files = [self.default_config] if self.default_config else []
        cli_config = self._peek_config(argv)
        if cli_config:
            files.append(cli_config)
        overrides = {}
        for path in files:
            overrides.update(self._read_overrides(path))
        # Every action sharing a dest (e.g. --flag/--no-flag) gets the new default,
        # since argparse takes the namespace default from the first of them.
        touched = [a for a in self._actions if a.dest in overrides]
        saved = [(a, a.default, a.required) for a in touched]
        try:
            for action in touched:
                action.default = overrides[action.dest]
                action.required = False  # the file supplied it
            ns = super().parse_args(argv, namespace)
        finally:
            for action, default, required in saved:
                action.default, action.required = default, required
        if ns.config != cli_config:  # e.g. an abbreviation the peek did not see
            self.error("give --config in full as --config PATH")
        return ns

    def _peek_config(self, argv):
        """The --config value, found without parsing anything else."""
        peek = argparse.ArgumentParser(add_help=False, allow_abbrev=self.allow_abbrev)
        peek.add_argument("--config", default=None)
        try:
            known, _ = peek.parse_known_args(argv)
        except SystemExit:  # e.g. "--config" with no value: the real parse reports it
            return None
        return known.config

    def _configurable(self):
        """dest -> action for every option a YAML file may set."""
        out = {}
        for action in self._actions:
            if isinstance(action, _UNSETTABLE) or action.dest in ("config", argparse.SUPPRESS):
                continue
            out[action.dest] = action
        return out

    def _read_overrides(self, path):
        try:
            data = load_config(path)
        except UserError as exc:
            self.error(str(exc))
        options = self._configurable()
        result = {}
        for key, value in data.items():
            dest = str(key).replace("-", "_")
            action = options.get(dest)
            if action is None:
                hint = difflib.get_close_matches(dest, list(options), n=1)
                extra = f" (did you mean {hint[0]!r}?)" if hint else ""
                self.error(f"config file {path}: unknown key {key!r}{extra}")
            if not action.option_strings:
                self.error(f"config file {path}: {key!r} is a positional argument; "
                           f"give it on the command line")
            result[dest] = self._convert(path, key, action, value)
        return result

    def _convert(self, path, key, action, value):
        """Coerce a YAML value the way argparse would coerce the same text."""
        def fail(why):
            self.error(f"config file {path}: key {key!r}: {why}")

        if isinstance(action, _FLAG_ACTIONS):
            if not isinstance(value, bool):
                fail(f"expected true or false, got {value!r}")
            return value
        if value is None:
            return None
        if isinstance(action, _RAW_ACTIONS):
            return value
        if action.nargs not in (None, argparse.OPTIONAL):
            if not isinstance(value, list):
                value = [value] if action.nargs in ("*", "+") else value
            if not isinstance(value, list):
                fail(f"expected a list of {action.nargs} values")
            if isinstance(action.nargs, int) and len(value) != action.nargs:
                fail(f"expected {action.nargs} values, got {len(value)}")
            if action.nargs == "+" and not value:
                fail("expected at least one value")
            return [self._convert_one(fail, action, v) for v in value]
        if isinstance(action, argparse._AppendAction):
            value = value if isinstance(value, list) else [value]
            return [self._convert_one(fail, action, v) for v in value]
        return self._convert_one(fail, action, value)

    @staticmethod
    def _convert_one(fail, action, value):
        # No type means str, as on the command line ("name: 7" gives "7").
        kind = action.type or str
        if isinstance(value, (dict, list)):
            fail(f"expected a single value, got {type(value).__name__}")
        if isinstance(value, bool) and kind in (int, float):
            fail(f"expected {kind.__name__}, got {value!r}")
        if kind is int and isinstance(value, float):
            if not value.is_integer():
                fail(f"expected an integer, got {value!r}")
            value = int(value)
        try:
            # int/float keep YAML numbers exactly; anything else sees CLI-like text.
            value = kind(value if isinstance(value, str) or kind in (int, float) else str(value))
        except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
            fail(f"invalid value {value!r} ({exc})")
        if action.choices is not None and value not in action.choices:
            fail(f"{value!r} is not one of {', '.join(map(str, action.choices))}")
        return value


class OneLineParser(ConfigParser):
    """ConfigParser whose errors (bad flag, unknown config key, ...) are one
    ``error: ...`` line and exit status 2 (through :func:`common.errors.run_cli`) instead
    of argparse's usage dump."""

    def error(self, message):
        raise UserError(f"{message} (see {self.prog} --help)")
